package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// opts returns test options: two consumers, no fsync, quiet logger.
func opts(dir string) Options {
	return Options{Dir: dir, Consumers: []string{"influx", "nats"}, NoSync: true, Logger: quiet}
}

func mustOpen(t testing.TB, o Options) *Spool {
	t.Helper()
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustConsumer(t testing.TB, s *Spool, name string) *Consumer {
	t.Helper()
	c, err := s.Consumer(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// payload returns the test record number i, of a length that varies with i.
func payload(i int) []byte {
	b := fmt.Appendf(nil, "rec-%06d|", i)
	for j := 0; j < i%37; j++ {
		b = append(b, byte('a'+j%26))
	}
	return b
}

func appendN(t testing.TB, s *Spool, from, n int) []Pos {
	t.Helper()
	var ps []Pos
	for i := from; i < from+n; i++ {
		p, err := s.Append(payload(i))
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		ps = append(ps, p)
	}
	return ps
}

// readN reads exactly n records (data copied) in batches of up to max
// records, checking that positions chain, and returns them with the Next of
// the last one.
func readN(t testing.TB, c *Consumer, n, max, maxBytes int) ([][]byte, Pos) {
	t.Helper()
	var out [][]byte
	var buf []Record
	var next Pos
	for len(out) < n {
		var err error
		buf, err = c.Read(context.Background(), buf, min(max, n-len(out)), maxBytes)
		if err != nil {
			t.Fatalf("Read after %d records: %v", len(out), err)
		}
		if len(buf) == 0 {
			t.Fatalf("Read returned no records")
		}
		for _, r := range buf {
			if !r.Pos.Less(r.Next) {
				t.Fatalf("record at %v has Next %v", r.Pos, r.Next)
			}
			if len(out) > 0 && r.Pos != next && !(r.Pos.Seg > next.Seg && r.Pos.Off == segHeaderSize) {
				t.Fatalf("record at %v does not follow %v", r.Pos, next)
			}
			out = append(out, bytes.Clone(r.Data))
			next = r.Next
		}
	}
	return out, next
}

func checkPayloads(t testing.TB, got [][]byte, from int) {
	t.Helper()
	for i, g := range got {
		if want := payload(from + i); !bytes.Equal(g, want) {
			t.Fatalf("record %d = %q, want %q", from+i, g, want)
		}
	}
}

// nothingToRead asserts that Read has no durable record to return now.
func nothingToRead(t testing.TB, c *Consumer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if recs, err := c.Read(ctx, nil, 10, 1<<20); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read = %d records, %v; want context.Canceled", len(recs), err)
	}
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// logBuffer is a concurrency-safe slog destination for asserting on logs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// rateFromTest reads the syncer's rate estimate: call it only while the
// syncer is idle (after a WaitTicket returned and before the next append).
func (s *Spool) rateFromTest() float64 {
	s.mu.Lock() // orders this read after the syncer's last update for the race detector
	defer s.mu.Unlock()
	return s.rate
}
