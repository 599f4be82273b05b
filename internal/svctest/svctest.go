// Package svctest starts an embedded NATS JetStream bus (the gateway's own
// natsbus, so the streams are the real ones) for the services' tests.
package svctest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/internal/testenv"
)

// Bus opens an embedded bus on a random loopback port; closed by Cleanup.
func Bus(t testing.TB) *natsbus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := natsbus.Open(ctx, natsbus.Config{Settings: natsbus.Settings{Embedded: natsbus.EmbeddedSettings{Addr: "127.0.0.1:0", StoreDir: t.TempDir()}}}, Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Logger discards unless TELEGATE_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("TELEGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Eventually polls f until it returns nil or a generous deadline passes; it
// bounds waiting for asynchronous effects and asserts nothing about speed.
func Eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// ClusterBus opens the gateway's bus on node of a test NATS cluster (the
// application account's user, R3 streams), as one gateway replica would;
// closed by Cleanup. Two buses on two nodes are two replicas sharing one
// JetStream cluster.
func ClusterBus(t testing.TB, c *testenv.NATSCluster, node int) *natsbus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := natsbus.Open(ctx, natsbus.Config{Settings: natsbus.Settings{URL: c.URL(node), User: c.User, Password: c.Password,
		Replicas: min(3, c.Size())}, Name: fmt.Sprintf("replica-n%d", node)}, Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Roles returns a function giving each role its own connection to b (with
// that role's user and rights on the embedded server; the configured user
// on an external one), opened on first use and closed by Cleanup. Every
// asynchronous error a connection gets (a permissions violation is one)
// fails the test at Cleanup, so a missing allow-list entry is never
// silently ignored.
func Roles(t testing.TB, b *natsbus.Bus) func(role string) (*natsbus.Client, error) {
	t.Helper()
	var mu sync.Mutex
	clients := map[string]*natsbus.Client{}
	var errs []string
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range clients {
			c.Close()
		}
		for _, e := range errs {
			t.Errorf("nats: %s", e)
		}
	})
	return func(role string) (*natsbus.Client, error) {
		mu.Lock()
		defer mu.Unlock()
		if c, ok := clients[role]; ok {
			return c, nil
		}
		c, err := b.Client(role)
		if err != nil {
			return nil, err
		}
		c.Conn().SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			errs = append(errs, role+": "+err.Error())
			mu.Unlock()
		})
		clients[role] = c
		return c, nil
	}
}

// Role is role's connection from Roles (fatal on error).
func Role(t testing.TB, roles func(string) (*natsbus.Client, error), role string) *natsbus.Client {
	t.Helper()
	c, err := roles(role)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Ops is a full-rights connection to b (the operator's user on the embedded
// server): what a test itself publishes, reads or inspects, never what a
// component under test runs on. Closed by Cleanup.
func Ops(t testing.TB, b *natsbus.Bus) *natsbus.Client {
	t.Helper()
	c, err := b.Client(natsbus.RoleOps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
