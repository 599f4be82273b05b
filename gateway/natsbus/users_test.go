package natsbus

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestSetUsersIsolatesPartners(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{EmbeddedAddr: "127.0.0.1:0", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.SetUsers([]User{
		{Name: "partner-a", Password: "pa", Subscribe: []string{"partners.a.>"}},
		{Name: "partner-b", Password: "pb", Subscribe: []string{"partners.b.>"}},
	}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	a, err := nats.Connect(b.URL(), nats.UserInfo("partner-a", "pa"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	own, err := a.SubscribeSync("partners.a.>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.SubscribeSync("partners.b.>"); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permission") {
			t.Fatalf("want a permissions violation, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscribing to another partner's subject was not refused")
	}
	// The gateway's own (credential-less) connection keeps full rights.
	if err := b.Conn().Publish("partners.a.triggers", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := own.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("own subject: %v", err)
	}
	if err := a.Publish("partners.a.triggers", []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = a.Flush()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permission") {
			t.Fatalf("want a permissions violation, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("publish without permission was not refused")
	}
	if _, err := nats.Connect(b.URL(), nats.UserInfo("partner-a", "wrong")); err == nil {
		t.Fatal("wrong password accepted")
	}
	if err := b.Ready(); err != nil {
		t.Fatal(err)
	}
}

// TestAnonymousOnlyOnLoopback: an embedded server reachable beyond loopback
// refuses clients without credentials, while the gateway's own connection
// (internal user) works.
func TestAnonymousOnlyOnLoopback(t *testing.T) {
	bus, err := Open(context.Background(), Config{EmbeddedAddr: "0.0.0.0:0", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	if err := bus.Ready(); err != nil {
		t.Fatalf("gateway connection: %v", err)
	}
	port := bus.Embedded().Addr().(*net.TCPAddr).Port
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("anonymous client accepted on a non-loopback listener")
	}

	local, err := Open(context.Background(), Config{EmbeddedAddr: "127.0.0.1:0", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	nc, err = nats.Connect(local.URL(), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("anonymous client refused on loopback: %v", err)
	}
	nc.Close()
}
