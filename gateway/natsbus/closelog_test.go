package natsbus

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/internal/logbuf"
)

// TestCloseLogsNoDisconnectWarning: the gateway's own Close at shutdown
// closes each role's connection, which is not a fault: one INFO line per
// role, no "nats disconnected" warning (seen on every `make run` stop).
func TestCloseLogsNoDisconnectWarning(t *testing.T) {
	var out logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{Settings: Settings{Embedded: EmbeddedSettings{Addr: "127.0.0.1:0", StoreDir: t.TempDir()}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.Contains(got, "nats disconnected") {
		t.Fatalf("Close logged a disconnect warning:\n%s", got)
	}
	if !strings.Contains(got, `msg="nats connection closed" role=gateway`) {
		t.Fatalf("Close did not log the closed connection:\n%s", got)
	}
}
