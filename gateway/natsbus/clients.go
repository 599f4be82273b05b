package natsbus

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startEmbedded starts the in-process server with its accounts and the
// internal users (credentials generated at first start).
func (b *Bus) startEmbedded() error {
	cfg := b.cfg
	base, err := embeddedOptions(cfg.Embedded.Addr, cfg.Embedded.StoreDir, int64(cfg.Embedded.MaxStore))
	if err != nil {
		return err
	}
	path := cfg.CredentialsFile
	if path == "" {
		path = filepath.Join(cfg.Embedded.StoreDir, "credentials.json")
	}
	creds, err := loadOrCreateCredentials(path)
	if err != nil {
		return err
	}
	b.auth.base, b.auth.creds, b.auth.limits, b.auth.partners = base, creds, cfg.Embedded.PartnerLimits(), cfg.Partners
	opts, err := b.auth.options()
	if err != nil {
		return err
	}
	srv, err := startServer(opts)
	if err != nil {
		return err
	}
	b.srv = srv
	b.url = srv.ClientURL()
	b.credsPath = path
	// The operator finds the URL next to the passwords.
	b.auth.creds.URL = b.url
	if err := writeFile0600(path, b.auth.creds); err != nil {
		b.log.Warn("nats credentials file not updated with the URL", "err", err)
	}
	if err := writeOpsFiles(filepath.Dir(path), b.url, b.auth.creds.Passwords[RoleOps]); err != nil {
		b.log.Warn("nats operator files not written", "err", err)
	}
	return nil
}

// OpsEnvFile and OpsContextFile are written next to the credentials file
// (0600) for the operator's nats CLI: the environment variables the CLI
// reads (NATS_URL, NATS_USER, NATS_PASSWORD), and a context file to copy to
// ~/.config/nats/context/telegate.json (nats --context telegate ...).
const (
	OpsEnvFile     = "ops.env"
	OpsContextFile = "ops-context.json"
)

func writeOpsFiles(dir, url, password string) error {
	env := fmt.Sprintf("NATS_URL=%s\nNATS_USER=%s\nNATS_PASSWORD=%s\n", url, RoleOps, password)
	if err := os.WriteFile(filepath.Join(dir, OpsEnvFile), []byte(env), 0o600); err != nil {
		return fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	return writeFile0600(filepath.Join(dir, OpsContextFile), map[string]string{
		"description": "telegate embedded NATS, operator (GATEWAY account)",
		"url":         url, "user": RoleOps, "password": password,
	})
}

// CredentialsFile is where the embedded server's internal passwords are
// kept ("" when connected to an external server).
func (b *Bus) CredentialsFile() string { return b.credsPath }

// connect opens a connection for role: with the embedded server, as that
// role's user; with an external server, with the configured credentials
// (the external server's operator scopes them).
func (b *Bus) connect(role string) (*nats.Conn, error) {
	cfg, log := b.cfg, b.log
	opts := []nats.Option{
		nats.Name(orDefault(cfg.Name, "telegate-gateway") + "-" + role),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1), // no silent buffering: a publish while disconnected fails, the caller retries
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if err == nil && c.IsClosed() {
				// Our own Close or Drain at shutdown: not a fault.
				log.Info("nats connection closed", "role", role)
				return
			}
			log.Warn("nats disconnected", "role", role, "err", err)
		}),
		// An asynchronous error (a permissions violation of this role's
		// allow list, a slow consumer) would otherwise go to stderr.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			if ok, suppressed := b.asyncLog.Allow(role); ok {
				log.Error("nats asynchronous error", "role", role, "subscription", subj, "err", err, "suppressed", suppressed)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "role", role, "url", c.ConnectedUrlRedacted())
		}),
	}
	if b.srv != nil {
		opts = append(opts, nats.UserInfo(role, b.auth.creds.Passwords[role]), nats.CustomInboxPrefix(InboxPrefix(role)))
	} else {
		if cfg.CredsFile != "" {
			opts = append(opts, nats.UserCredentials(cfg.CredsFile))
		}
		if cfg.User != "" {
			opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
		}
	}
	nc, err := nats.Connect(b.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsbus: connect %s as %s: %w", b.url, role, err)
	}
	return nc, nil
}

// Client is one component's own connection (its own user and rights).
type Client struct {
	nc *nats.Conn
	js jetstream.JetStream
}

// Client opens a connection for role (RoleEvents, RoleDashboard, ...): on
// the embedded server it authenticates as that role's user and gets
// exactly that role's permissions. Close it when done. opts follow the
// defaults (4096 pending async publishes, 30 s async publish timeout).
func (b *Bus) Client(role string, opts ...jetstream.JetStreamOpt) (*Client, error) {
	nc, err := b.connect(role)
	if err != nil {
		return nil, err
	}
	opts = append([]jetstream.JetStreamOpt{jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(30 * time.Second)}, opts...)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbus: jetstream: %w", err)
	}
	return &Client{nc: nc, js: js}, nil
}

// Conn is the client's connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// JetStream is the client's JetStream context.
func (c *Client) JetStream() jetstream.JetStream { return c.js }

// PublishAsync publishes data on subject with the given Nats-Msg-Id. The
// returned future resolves when the stream has stored (or deduplicated) it.
func (c *Client) PublishAsync(subject, msgID string, data []byte, hdr nats.Header) (jetstream.PubAckFuture, error) {
	return c.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data, Header: hdr}, jetstream.WithMsgID(msgID))
}

// Close drains the connection (flushing pending publishes). Idempotent.
func (c *Client) Close() {
	if c == nil || c.nc == nil || c.nc.IsClosed() {
		return
	}
	done := make(chan struct{})
	c.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
	if c.nc.IsConnected() && c.nc.Drain() == nil {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}
	c.nc.Close()
}
