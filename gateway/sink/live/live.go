// Package live fans freshly stored telemetry out to in-process subscribers
// (the dashboard's server-sent events). Publishing never blocks the
// pipeline: a subscriber whose buffer is full misses updates (counted).
package live

import (
	"sync"
	"sync/atomic"

	"github.com/telegate/telegate/decoders/wire"
)

// Update is one telemetry frame of one vehicle. Signals is owned by the
// receiver (a copy).
type Update struct {
	VIN     string
	TimeMs  int64
	Seq     uint64
	Signals []wire.Signal
}

// Hub distributes updates per VIN and to "all vehicles" subscribers.
type Hub struct {
	mu      sync.RWMutex
	subs    map[string]map[*sub]struct{} // "" = every vehicle
	dropped atomic.Uint64
}

type sub struct{ ch chan Update }

// New returns an empty hub.
func New() *Hub { return &Hub{subs: map[string]map[*sub]struct{}{}} }

// HasSubscribers reports whether anyone listens to vin (cheap pre-check so
// the pipeline copies nothing when nobody watches).
func (h *Hub) HasSubscribers(vin []byte) bool {
	if h == nil {
		return false
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs[string(vin)]) > 0 || len(h.subs[""]) > 0
}

// Publish delivers a copy of the frame to vin's subscribers.
func (h *Hub) Publish(vin []byte, tsMs int64, seq uint64, sigs []wire.Signal) {
	if !h.HasSubscribers(vin) {
		return
	}
	u := Update{VIN: string(vin), TimeMs: tsMs, Seq: seq, Signals: append([]wire.Signal(nil), sigs...)}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, key := range [2]string{u.VIN, ""} {
		for s := range h.subs[key] {
			select {
			case s.ch <- u:
			default:
				h.dropped.Add(1)
			}
		}
	}
}

// Subscribe returns a channel of updates for vin ("" = all vehicles) and a
// cancel function that must be called when done.
func (h *Hub) Subscribe(vin string, buffer int) (<-chan Update, func()) {
	if buffer < 1 {
		buffer = 16
	}
	s := &sub{ch: make(chan Update, buffer)}
	h.mu.Lock()
	if h.subs[vin] == nil {
		h.subs[vin] = map[*sub]struct{}{}
	}
	h.subs[vin][s] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs[vin], s)
			if len(h.subs[vin]) == 0 {
				delete(h.subs, vin)
			}
			h.mu.Unlock()
		})
	}
}

// Dropped is the number of updates not delivered to slow subscribers.
func (h *Hub) Dropped() uint64 { return h.dropped.Load() }
