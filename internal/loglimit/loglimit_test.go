package loglimit

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestLimiterPerSourceAndGlobal(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var dropped atomic.Int64
	l := New(Config{Burst: 3, Every: 10 * time.Second, GlobalBurst: 10, GlobalRate: 1, Now: c.now,
		OnSuppressed: func() { dropped.Add(1) }})
	n := 0
	for range 100 {
		if ok, _ := l.Allow("a"); ok {
			n++
		}
	}
	if n != 3 || dropped.Load() != 97 {
		t.Fatalf("one source: %d lines, %d dropped; want 3, 97", n, dropped.Load())
	}
	c.t = c.t.Add(10 * time.Second)
	ok, sup := l.Allow("a")
	if !ok || sup != 97 {
		t.Fatalf("after Every: ok=%v suppressed=%d; want true, 97", ok, sup)
	}
	// Rotating sources: the global bucket bounds the lines.
	n = 0
	for i := range 10000 {
		if ok, _ := l.Allow(strings.Repeat("x", i%50) + string(rune('a'+i%26)) + time.Duration(i).String()); ok {
			n++
		}
	}
	if n > 10 {
		t.Fatalf("rotating sources: %d lines, want at most the global burst 10", n)
	}
}

func TestLimiterBoundedSources(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := New(Config{MaxSources: 100, GlobalBurst: 1 << 20, GlobalRate: 1 << 20, Now: c.now})
	for i := range 10000 {
		l.Allow(time.Duration(i).String())
	}
	if len(l.sources) > 101 {
		t.Fatalf("%d sources tracked, want at most 101", len(l.sources))
	}
}

func TestString(t *testing.T) {
	s := String(strings.Repeat("é", 100)+"\n", 11)
	if len(s) > 11+len("…") || !utf8.ValidString(s) || strings.Contains(s, "\n") {
		t.Fatalf("String = %q", s)
	}
	if got := String("a\x00b\nc\xff", 64); got != "a?b?c?" {
		t.Fatalf("String = %q", got)
	}
}

func TestURL(t *testing.T) {
	got := URL("https://user:pw@example.com:8443/hook/x?token=SECRET#frag")
	if got != "https://example.com:8443/hook/x" {
		t.Fatalf("URL = %q", got)
	}
}
