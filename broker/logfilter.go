package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"
)

// Log hygiene for everything the broker and mochi log. A device controls
// what it sends, so without a filter it controls the log too: mochi logs
// every packet it rejects with the whole packet, payload included, as
// decimal bytes (300 rejected 8 KiB publishes wrote about 10 MB), and
// payloads carry vehicle positions. The filter
//
//   - replaces every packet attribute by a summary (type, topic, QoS,
//     packet id, payload size) and never passes payload bytes on: byte
//     slices become their length, values of types it does not know become
//     their type name;
//   - truncates strings (topics, client ids, error texts chosen by a
//     client) to maxLogString bytes;
//   - rate-limits lines per client (the "client" attribute, else the
//     packet's origin, else the remote IP address): a burst of
//     logBurstPerClient lines, then one per logEveryPerClient; a global
//     bucket bounds lines across clients (an attacker rotating client ids).
//     Dropped lines are counted in Stats.LogSuppressed
//     (log_lines_suppressed); the next line let through for that client
//     carries "suppressed" = how many of its lines were dropped since.
//
// Lines about no client (start-up, reload, listener addresses) are never
// rate-limited.
const (
	maxLogString       = 256
	logBurstPerClient  = 10
	logEveryPerClient  = 10 * time.Second
	logBurstAll        = 1000
	logRateAll         = 100 // lines per second across clients
	maxLogLimitClients = 10000
)

// logLimits is the state shared by a logFilter and its derived handlers.
type logLimits struct {
	now        func() time.Time
	suppressed func() // counts a dropped line

	mu      sync.Mutex // guards clients and all
	clients map[string]*clientLogLimit
	all     *rate.Limiter
}

// clientLogLimit is one client's bucket and its dropped lines since its
// last line.
type clientLogLimit struct {
	lim     *rate.Limiter
	dropped int
}

// logFilter is a slog.Handler that sanitises and rate-limits records
// before passing them to next.
type logFilter struct {
	next   slog.Handler
	limits *logLimits
	// client is the client key from attributes bound with WithAttrs;
	// "" when none.
	client string
	group  bool // WithGroup was called: attributes are no longer top level
}

// newLogFilter wraps next. now is the clock for the rate limits (nil:
// time.Now); suppressed, if not nil, is called for every dropped line.
func newLogFilter(next slog.Handler, now func() time.Time, suppressed func()) *logFilter {
	if now == nil {
		now = time.Now
	}
	if suppressed == nil {
		suppressed = func() {}
	}
	return &logFilter{next: next, limits: &logLimits{
		now:        now,
		suppressed: suppressed,
		clients:    make(map[string]*clientLogLimit),
		all:        rate.NewLimiter(logRateAll, logBurstAll),
	}}
}

// Enabled implements slog.Handler.
func (f *logFilter) Enabled(ctx context.Context, l slog.Level) bool { return f.next.Enabled(ctx, l) }

// WithAttrs implements slog.Handler.
func (f *logFilter) WithAttrs(as []slog.Attr) slog.Handler {
	g := *f
	clean := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		a, key := sanitizeAttr(a)
		if key != "" && !f.group {
			g.client = key
		}
		clean = append(clean, a)
	}
	g.next = f.next.WithAttrs(clean)
	return &g
}

// WithGroup implements slog.Handler.
func (f *logFilter) WithGroup(name string) slog.Handler {
	g := *f
	g.next = f.next.WithGroup(name)
	g.group = true
	return &g
}

// Handle implements slog.Handler.
func (f *logFilter) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, clip(r.Message), r.PC)
	client, remote, origin := f.client, "", ""
	r.Attrs(func(a slog.Attr) bool {
		a, key := sanitizeAttr(a)
		switch {
		case f.group:
		case a.Key == "client" && key != "":
			client = key
		case a.Key == "remote":
			remote = a.Value.String()
		case key != "":
			origin = key
		}
		out.AddAttrs(a)
		return true
	})
	if client == "" && origin != "" {
		client = origin
		out.AddAttrs(slog.String("client", clip(origin)))
	}
	if client == "" && remote != "" {
		if host, _, err := net.SplitHostPort(remote); err == nil {
			client = "remote " + host
		}
	}
	if client != "" {
		n, ok := f.limits.allow(client)
		if !ok {
			return nil
		}
		if n > 0 {
			out.AddAttrs(slog.Int("suppressed", n))
		}
	}
	return f.next.Handle(ctx, out)
}

// allow takes a token for client and returns how many of its lines were
// dropped since its last line. It counts a dropped line when it refuses.
func (l *logLimits) allow(client string) (int, bool) {
	now := l.now()
	l.mu.Lock()
	c, ok := l.clients[client]
	if !ok {
		if len(l.clients) >= maxLogLimitClients {
			clear(l.clients) // bounded memory; the global bucket still applies
		}
		c = &clientLogLimit{lim: rate.NewLimiter(rate.Every(logEveryPerClient), logBurstPerClient)}
		l.clients[client] = c
	}
	if !c.lim.AllowN(now, 1) || !l.all.AllowN(now, 1) {
		c.dropped++
		l.mu.Unlock()
		l.suppressed()
		return 0, false
	}
	n := c.dropped
	c.dropped = 0
	l.mu.Unlock()
	return n, true
}

// sanitizeAttr returns a with payload bytes removed and strings truncated,
// and the client key it names, if any: the value of a "client" attribute
// or the origin of a packet.
func sanitizeAttr(a slog.Attr) (slog.Attr, string) {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		s := clip(v.String())
		if a.Key == "client" {
			return slog.String(a.Key, s), strings.Clone(v.String()) // may become a map key
		}
		return slog.String(a.Key, s), ""
	case slog.KindGroup:
		as := v.Group()
		clean := make([]any, 0, len(as))
		for _, g := range as {
			g, _ = sanitizeAttr(g)
			clean = append(clean, g)
		}
		return slog.Group(a.Key, clean...), ""
	case slog.KindAny:
	default:
		return slog.Attr{Key: a.Key, Value: v}, ""
	}
	switch x := v.Any().(type) {
	case packets.Packet:
		return packetSummary(a.Key, &x), x.Origin
	case *packets.Packet:
		if x == nil {
			return slog.String(a.Key, "<nil>"), ""
		}
		return packetSummary(a.Key, x), x.Origin
	case error:
		return slog.String(a.Key, clip(x.Error())), ""
	case []byte:
		return slog.String(a.Key, strconv.Itoa(len(x))+" bytes omitted"), ""
	case nil:
		return slog.String(a.Key, "<nil>"), ""
	default:
		return slog.String(a.Key, fmt.Sprintf("<%T omitted>", x)), ""
	}
}

// packetSummary describes pk without its payload.
func packetSummary(key string, pk *packets.Packet) slog.Attr {
	as := []any{
		slog.String("type", packetTypeName(pk.FixedHeader.Type)),
		slog.Int("qos", int(pk.FixedHeader.Qos)),
		slog.Int("id", int(pk.PacketID)),
	}
	if pk.FixedHeader.Type == packets.Publish {
		as = append(as, slog.String("topic", clip(pk.TopicName)), slog.Int("size", len(pk.Payload)))
	}
	if pk.ReasonCode != 0 {
		as = append(as, slog.Int("reason", int(pk.ReasonCode)))
	}
	return slog.Group(key, as...)
}

func packetTypeName(t byte) string {
	if n, ok := packets.PacketNames[t]; ok {
		return n
	}
	return "type " + strconv.Itoa(int(t))
}

// clip shortens s to at most maxLogString bytes on a rune boundary and
// says how long it was. The result is always a copy: a topic may point into
// a packet body the broker reuses for the next packet
// (ReuseIgnoredPublishBody), and a handler may keep the record.
func clip(s string) string {
	if len(s) <= maxLogString {
		return strings.Clone(s)
	}
	cut := maxLogString
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
