// Package loglimit keeps what unauthenticated callers can make the
// gateway log small and free of secrets: a per-source and global rate
// limit for log lines about refused requests, a bounded sanitiser for
// strings a caller chose, and a URL redactor.
//
// A refused login or connection costs the caller one request and, without
// a limit, costs the gateway one log line; Limiter lets a burst of Burst
// lines per source through, then one per Every, and never more than
// GlobalBurst plus GlobalRate per second across sources (an attacker
// rotating addresses). Dropped lines are counted (OnSuppressed) and the
// next line let through for that source reports how many were dropped.
package loglimit

import (
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// Defaults of a Limiter (Config fields left zero).
const (
	DefaultBurst       = 5
	DefaultEvery       = 10 * time.Second
	DefaultGlobalBurst = 100
	DefaultGlobalRate  = 10 // lines per second across sources
	DefaultMaxSources  = 10000
)

// Config of a Limiter; zero fields take the defaults above.
type Config struct {
	Burst       int           // lines per source before the limit applies
	Every       time.Duration // then one line per source per Every
	GlobalBurst int
	GlobalRate  float64 // lines per second across sources
	MaxSources  int     // sources tracked; beyond, new sources share one bucket
	Now         func() time.Time
	// OnSuppressed, when set, is called for every dropped line (metrics).
	OnSuppressed func()
}

// Limiter rate-limits log lines per source and globally. Safe for
// concurrent use.
type Limiter struct {
	cfg Config
	// mu guards sources and all.
	mu      sync.Mutex
	sources map[string]*source
	all     *rate.Limiter
}

type source struct {
	lim     *rate.Limiter
	dropped int
}

// overflowKey is the shared bucket of sources beyond MaxSources.
const overflowKey = "\x00overflow"

// New returns a Limiter.
func New(cfg Config) *Limiter {
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.GlobalBurst <= 0 {
		cfg.GlobalBurst = DefaultGlobalBurst
	}
	if cfg.GlobalRate <= 0 {
		cfg.GlobalRate = DefaultGlobalRate
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = DefaultMaxSources
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{cfg: cfg, sources: map[string]*source{},
		all: rate.NewLimiter(rate.Limit(cfg.GlobalRate), cfg.GlobalBurst)}
}

// Allow reports whether a line about src may be logged now and, if so,
// how many of src's lines were dropped since its last line (log it as
// "suppressed" when > 0). A dropped line is counted with OnSuppressed.
func (l *Limiter) Allow(src string) (ok bool, suppressed int) {
	now := l.cfg.Now()
	l.mu.Lock()
	s := l.sources[src]
	if s == nil {
		if len(l.sources) >= l.cfg.MaxSources {
			l.forget(now)
		}
		if len(l.sources) >= l.cfg.MaxSources {
			src = overflowKey
			s = l.sources[src]
		}
		if s == nil {
			s = &source{lim: rate.NewLimiter(rate.Every(l.cfg.Every), l.cfg.Burst)}
			l.sources[src] = s
		}
	}
	ok = s.lim.AllowN(now, 1) && l.all.AllowN(now, 1)
	if ok {
		suppressed, s.dropped = s.dropped, 0
	} else {
		s.dropped++
	}
	l.mu.Unlock()
	if !ok && l.cfg.OnSuppressed != nil {
		l.cfg.OnSuppressed()
	}
	return ok, suppressed
}

// forget drops the sources whose bucket is full again and that have no
// dropped lines to report (guarded by mu).
func (l *Limiter) forget(now time.Time) {
	for k, s := range l.sources {
		if s.dropped == 0 && s.lim.TokensAt(now) >= float64(l.cfg.Burst) {
			delete(l.sources, k)
		}
	}
}

// String returns s fit for a log line: at most max bytes (cut at a rune
// boundary, "…" appended when cut) with control and invalid characters
// replaced by '?'.
func String(s string, max int) string {
	cut := false
	if len(s) > max {
		n := max
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s, cut = s[:n], true
	}
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
	if cut {
		s += "…"
	}
	return s
}

// URL returns raw without its query, fragment and user info (scheme, host
// and path only, the path bounded to 256 bytes): what may be logged of an
// endpoint URL that can carry a token.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return String(r.String(), 256)
}
