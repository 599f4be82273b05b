// Command partner-example is a sample charging partner (a café) that
// receives offer triggers over NATS with its own credentials. It reads its
// durable JetStream pull consumer "partner-{id}" on the PARTNERS stream, so
// triggers produced while it was offline arrive when it comes back; it
// acknowledges each trigger after processing it and deduplicates on the
// trigger id (delivery is at least once). Its credentials allow nothing
// else: replies must use the inbox prefix "_INBOX_{id}". A trigger carries
// a pseudonymous driver token, the station, the expected dwell and the
// offer code, never who the driver is.
//
//	go run ./cmd/partner-example -partner cafe-aroma -user cafe-aroma -password aroma-demo-password
//
// With -redeem-token it also redeems every offer through the services API
// (as if the driver showed the code at the counter) before acknowledging.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	if err := run(ctx, log, *url, *partner, *user, *pass, *api, *redeem); err != nil {
		log.Error("partner-example", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, url, partner, user, pass, api, redeem string) error {
	const stream = "PARTNERS"
	durable := "partner-" + partner
	// The partner's user lives in its own NATS account, which imports the
	// gateway's consumer API for its durable under the "telegate.API"
	// prefix (docs/services.md); inboxes are private to that account.
	nc, err := nats.Connect(url, nats.UserInfo(user, pass), nats.Name("partner-example-"+partner),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Error("nats", "err", err) }))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.NewWithAPIPrefix(nc, "telegate.API")
	if err != nil {
		return err
	}
	// The gateway creates the durable; the partner may only look it up
	// (CONSUMER.INFO), fetch (CONSUMER.MSG.NEXT) and ack ($JS.ACK).
	var cons jetstream.Consumer
	for {
		if cons, err = js.Consumer(ctx, stream, durable); err == nil {
			break
		}
		log.Warn("consumer not available yet", "durable", durable, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("messages: %w", err)
	}
	go func() { <-ctx.Done(); it.Stop() }()
	fmt.Fprintf(os.Stderr, "partner %s reading durable %s on %s (Ctrl-C stops)\n", partner, durable, stream)
	// Triggers are at least once: a trigger redelivered (no ack within
	// 30 s, a reconnect) is recognised by its id, the idempotency key. A
	// real partner keeps the processed ids in its own database.
	seen := map[string]bool{}
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			log.Warn("next trigger", "err", err)
			continue
		}
		var t trigger
		if err := json.Unmarshal(m.Data(), &t); err != nil || t.ID == "" {
			log.Warn("bad trigger", "err", err)
			_ = m.Term() // never deliverable
			continue
		}
		if !seen[t.ID] {
			log.Info("offer trigger", "id", t.ID, "venue", t.Venue, "station", t.Station, "driver", t.DriverToken,
				"dwell_min", t.ExpectedDwellMin, "code", t.OfferCode, "expires", t.ExpiresAt.Format(time.RFC3339))
			if redeem != "" {
				if err := redeemOffer(log, api, partner, redeem, t); err != nil {
					log.Warn("redeem failed, trigger will be redelivered", "id", t.ID, "err", err)
					_ = m.NakWithDelay(5 * time.Second)
					continue
				}
			}
			seen[t.ID] = true
		} else {
			log.Info("duplicate trigger ignored", "id", t.ID)
		}
		if err := m.DoubleAck(ctx); err != nil { // processed: not redelivered
			log.Warn("ack", "id", t.ID, "err", err)
		}
	}
}

func redeemOffer(log *slog.Logger, api, partner, token string, t trigger) error {
	body, _ := json.Marshal(map[string]string{"offer_id": t.ID, "offer_code": t.OfferCode})
	req, _ := http.NewRequest(http.MethodPost, api+"/api/v1/partners/"+partner+"/redemptions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	log.Info("redeemed", "offer", t.ID, "status", resp.StatusCode)
	if resp.StatusCode >= 500 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
