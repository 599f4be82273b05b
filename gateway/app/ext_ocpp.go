package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/telegate/telegate/gateway/cluster/presence"
	"github.com/telegate/telegate/gateway/dashboard/auth"
	"github.com/telegate/telegate/gateway/ingest"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/ocpp"
	"github.com/telegate/telegate/gateway/ocpp/wsmux"
)

// errNoClientCA: ocpp.client_ca_file holds no PEM certificate.
var errNoClientCA = errors.New("ocpp: client CA file holds no PEM certificate")

// ocppExt holds what startOCPP started (owned by this file).
type ocppExt struct {
	central *ocpp.Central
	ln      net.Listener
	done    chan struct{}
}

// startOCPP starts the OCPP central system on its own listener. Called after
// the broker and dashboard have started.
func (a *App) startOCPP() error {
	c := a.cfg.OCPP
	log := a.log.With("component", "ocpp")
	var tc *tls.Config
	if c.SecurityProfile >= 2 {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("ocpp tls: %w", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if c.SecurityProfile == 3 {
			pem, err := os.ReadFile(c.ClientCAFile)
			if err != nil {
				return fmt.Errorf("ocpp client CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%w: %s", errNoClientCA, c.ClientCAFile)
			}
			tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
	}
	m := ocpp.NewMetrics(a.reg)
	mux := wsmux.New(wsmux.Config{SecurityProfile: c.SecurityProfile, TLS: tc, MaxFrameBytes: int64(c.MaxFrameBytes),
		RatePerConn: c.RatePerConn, Burst: c.RateBurst, ConnectTimeout: c.ConnectTimeout, IdleTimeout: c.IdleTimeout,
		MaxConnections: c.MaxConnections}, a.devices, ocpp.MuxMetrics(m), log)
	central := ocpp.New(mux, ingest.FromSpool(a.spool, a.cfg.Spool.AckTimeout),
		ingest.NewValidator(a.cfg.Ingest.MinTime(), a.cfg.Ingest.MaxClockSkew, nil), m, nil, log)
	central.HeartbeatInterval = c.HeartbeatInterval
	// Its own NATS user (natsbus.RoleOCPP): the transaction table, command
	// results and command routing between replicas.
	nc, err := a.natsClient(natsbus.RoleOCPP)
	if err != nil {
		central.Close()
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = central.UseNATS(ctx, nc.Conn(), nc.JetStream())
	cancel()
	if err != nil {
		central.Close()
		return err
	}
	// A station's socket is claimed in the sessions bucket like an MQTT
	// session (presence.OCPPKey, through the broker role's connection):
	// its reconnect to another replica closes the stale socket here. The
	// presence hook always runs (started with the broker, before OCPP).
	if p := a.presence; p != nil {
		mux.OnSession = func(id string, closed func() bool, end func()) func() {
			return p.Claim(presence.OCPPKey(id), closed, end)
		}
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		central.Close()
		return fmt.Errorf("ocpp listen: %w", err)
	}
	a.ext.ocpp = ocppExt{central: central, ln: ln, done: make(chan struct{})}
	go func() {
		defer close(a.ext.ocpp.done)
		if err := mux.Serve(ln); err != nil {
			log.Error("OCPP listener stopped", "err", err)
		}
	}()
	if d := a.Dashboard(); d != nil {
		h := central.CommandHandler()
		am := d.AuthManager()
		a.mux.Handle("POST /api/ocpp/stations/{station}/commands", am.Require(auth.RoleOperator, h))
		a.mux.Handle("GET /api/ocpp/commands", am.Require(auth.RoleViewer, h))
	}
	log.Info("OCPP central system listening", "addr", ln.Addr().String(), "security_profile", c.SecurityProfile)
	return nil
}

// OCPPAddr is the OCPP listener address ("" when disabled).
func (a *App) OCPPAddr() string {
	if a.ext.ocpp.ln == nil {
		return ""
	}
	return a.ext.ocpp.ln.Addr().String()
}

// OCPP is the running central system (nil when disabled).
func (a *App) OCPP() *ocpp.Central { return a.ext.ocpp.central }

// ocppRevalidate ends OCPP connections whose credentials a registry reload revoked.
func (a *App) ocppRevalidate() {
	if a.ext.ocpp.central != nil {
		a.ext.ocpp.central.Mux.Revalidate()
	}
}

// closeOCPP stops what startOCPP started. Idempotent. Runs right after the
// broker closes, before the dashboard, the services and the sink drain.
func (a *App) closeOCPP() {
	e := &a.ext.ocpp
	if e.central == nil {
		return
	}
	e.central.Mux.Close()
	<-e.done
	e.central.Close()
	e.central = nil
}
