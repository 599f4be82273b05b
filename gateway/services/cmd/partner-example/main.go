// Command partner-example is a sample charging partner (a café) that
// receives offer triggers over NATS with its own credentials. It can read
// only partners.{id}.>; a trigger carries a pseudonymous driver token, the
// station, the expected dwell and the offer code, never who the driver is.
//
//	go run ./gateway/services/cmd/partner-example -partner cafe-aroma -user cafe-aroma -password aroma-demo-password
//
// With -redeem-token it also redeems every offer through the services API
// (as if the driver showed the code at the counter).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// trigger mirrors partners.Trigger (a partner would copy the documented
// JSON, not import the gateway).
type trigger struct {
	ID               string    `json:"id"`
	Partner          string    `json:"partner"`
	Venue            string    `json:"venue"`
	Station          string    `json:"station"`
	DriverToken      string    `json:"driver_token"`
	ExpectedDwellMin int       `json:"expected_dwell_min"`
	OfferCode        string    `json:"offer_code"`
	ExpiresAt        time.Time `json:"expires_at"`
}

func main() {
	url := flag.String("nats", "nats://127.0.0.1:4222", "NATS server")
	partner := flag.String("partner", "cafe-aroma", "partner id")
	user := flag.String("user", "cafe-aroma", "NATS user")
	pass := flag.String("password", "aroma-demo-password", "NATS password")
	api := flag.String("api", "http://127.0.0.1:8080", "services API base URL (for -redeem-token)")
	redeem := flag.String("redeem-token", "", "partner API bearer token; if set, redeem every offer")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nc, err := nats.Connect(*url, nats.UserInfo(*user, *pass), nats.Name("partner-example-"+*partner),
		nats.MaxReconnects(-1), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error("nats", "err", err)
		}))
	if err != nil {
		log.Error("connect", "err", err)
		os.Exit(1)
	}
	defer nc.Close()
	seen := map[string]bool{} // triggers are at-least-once: dedupe on id
	subject := "partners." + *partner + ".>"
	_, err = nc.Subscribe(subject, func(m *nats.Msg) {
		var t trigger
		if err := json.Unmarshal(m.Data, &t); err != nil || t.ID == "" {
			log.Warn("bad trigger", "err", err)
			return
		}
		if seen[t.ID] {
			return
		}
		seen[t.ID] = true
		log.Info("offer trigger", "venue", t.Venue, "station", t.Station, "driver", t.DriverToken,
			"dwell_min", t.ExpectedDwellMin, "code", t.OfferCode, "expires", t.ExpiresAt.Format(time.RFC3339))
		if *redeem != "" {
			go redeemOffer(log, *api, *partner, *redeem, t)
		}
	})
	if err != nil {
		log.Error("subscribe", "err", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "partner %s listening on %s (Ctrl-C stops)\n", *partner, subject)
	<-ctx.Done()
}

func redeemOffer(log *slog.Logger, api, partner, token string, t trigger) {
	body, _ := json.Marshal(map[string]string{"offer_id": t.ID, "offer_code": t.OfferCode})
	req, _ := http.NewRequest(http.MethodPost, api+"/api/v1/partners/"+partner+"/redemptions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		log.Warn("redeem", "err", err)
		return
	}
	_ = resp.Body.Close()
	log.Info("redeemed", "offer", t.ID, "status", resp.StatusCode)
}
