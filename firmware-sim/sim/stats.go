package sim

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// topicKind indexes the per-topic counters.
type topicKind int

const (
	topicTelemetry topicKind = iota
	topicDiag
	topicEvents
	topicCmdAck
	topicSession
	topicStatus
	numTopics
)

// Topic names used as keys of Summary.Topics (the last level of the topic).
var topicNames = [numTopics]string{"telemetry", "diag", "events", "cmd-ack", "session", "status"}

// TopicStats counts publishes on one kind of topic.
type TopicStats struct {
	Sent   int64 // publishes handed to the client
	Acked  int64 // completed: PUBACK received (QoS 1) or written (QoS 0)
	Failed int64 // completed with an error
}

// Latency summarises publish-to-PUBACK latency.
type Latency struct {
	Count         int64
	P50, P95, P99 time.Duration
	Max           time.Duration
}

// Summary is a snapshot of a fleet's counters.
type Summary struct {
	Elapsed  time.Duration // since Run started (until it finished, once done)
	Vehicles int
	Chargers int

	Connected        int64 // devices currently connected
	Connects         int64 // successful connections, including reconnects
	Reconnects       int64 // successful connections after a lost one
	ConnectErrors    int64 // failed connection attempts
	ConnectionLosses int64 // connections lost unexpectedly

	Sent          int64 // publishes on all topics
	Acked         int64 // publishes completed without error
	PublishErrors int64 // publishes completed with an error
	Unacked       int64 // publishes given up at the end of the drain timeout
	// Errors is PublishErrors + Unacked + ConnectErrors + ConnectionLosses +
	// BadCommands.
	Errors int64

	Frames int64   // telemetry frames sent
	Rate   float64 // telemetry frames acked per second of Elapsed

	Topics map[string]TopicStats // keyed by "telemetry", "diag", "events", "cmd-ack", "session", "status"

	CommandsReceived  int64 // decodable commands received
	CommandsApplied   int64 // commands applied (first delivery of a cmd id)
	CommandsRejected  int64 // commands answered with wire.AckRejected (first delivery)
	CommandsDuplicate int64 // repeated cmd ids, acked again without applying
	BadCommands       int64 // undecodable command payloads

	DTCsRaised   int64
	Sessions     int64 // charging sessions started
	IgnitionOffs int64 // trips ended

	Latency Latency // publish -> PUBACK
}

// stats holds the live counters; every field is updated atomically.
type stats struct {
	sent, acked, failed [numTopics]atomic.Int64
	unacked             atomic.Int64

	connected, connects, reconnects atomic.Int64
	connectErrors, connLosses       atomic.Int64

	cmdReceived, cmdApplied, cmdRejected, cmdDuplicate, badCommands atomic.Int64
	dtcsRaised, sessions, ignitionOffs                              atomic.Int64

	latency histogram
}

func (s *stats) summary(elapsed time.Duration, vehicles, chargers int) Summary {
	sum := Summary{
		Elapsed:           elapsed,
		Vehicles:          vehicles,
		Chargers:          chargers,
		Connected:         s.connected.Load(),
		Connects:          s.connects.Load(),
		Reconnects:        s.reconnects.Load(),
		ConnectErrors:     s.connectErrors.Load(),
		ConnectionLosses:  s.connLosses.Load(),
		Unacked:           s.unacked.Load(),
		Topics:            make(map[string]TopicStats, numTopics),
		CommandsReceived:  s.cmdReceived.Load(),
		CommandsApplied:   s.cmdApplied.Load(),
		CommandsRejected:  s.cmdRejected.Load(),
		CommandsDuplicate: s.cmdDuplicate.Load(),
		BadCommands:       s.badCommands.Load(),
		DTCsRaised:        s.dtcsRaised.Load(),
		Sessions:          s.sessions.Load(),
		IgnitionOffs:      s.ignitionOffs.Load(),
		Latency:           s.latency.summary(),
	}
	for k := range numTopics {
		ts := TopicStats{Sent: s.sent[k].Load(), Acked: s.acked[k].Load(), Failed: s.failed[k].Load()}
		sum.Topics[topicNames[k]] = ts
		sum.Sent += ts.Sent
		sum.Acked += ts.Acked
		sum.PublishErrors += ts.Failed
	}
	sum.Frames = sum.Topics["telemetry"].Sent
	if elapsed > 0 {
		sum.Rate = float64(sum.Topics["telemetry"].Acked) / elapsed.Seconds()
	}
	sum.Errors = sum.PublishErrors + sum.Unacked + sum.ConnectErrors + sum.ConnectionLosses + sum.BadCommands
	return sum
}

// histogram is a lock-free log-linear latency histogram in microseconds:
// 16 linear sub-buckets per power of two, so a bucket spans at most 1/16
// (6.25 %) of its lower bound. It covers up to 2^40 µs.
type histogram struct {
	buckets [histBuckets]atomic.Int64
	count   atomic.Int64
	max     atomic.Int64 // µs
}

const (
	histSubBits  = 4
	histSub      = 1 << histSubBits
	histMaxExp   = 40
	histBuckets  = (histMaxExp - histSubBits + 2) * histSub
	histMaxValue = 1<<histMaxExp - 1
)

// bucketOf returns the bucket index of v µs.
func bucketOf(v int64) int {
	if v < histSub {
		return int(max(v, 0))
	}
	if v > histMaxValue {
		v = histMaxValue
	}
	e := bits.Len64(uint64(v)) - histSubBits - 1 // v>>e in [16, 32)
	return (e+1)*histSub + int(v>>e) - histSub
}

// bucketUpper returns the largest value (µs) that falls in bucket i.
func bucketUpper(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	e := i/histSub - 1
	m := int64(i%histSub + histSub)
	return (m+1)<<e - 1
}

func (h *histogram) record(d time.Duration) {
	us := d.Microseconds()
	h.buckets[bucketOf(us)].Add(1)
	h.count.Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			break
		}
	}
}

func (h *histogram) summary() Latency {
	var counts [histBuckets]int64
	var n int64
	for i := range counts {
		counts[i] = h.buckets[i].Load()
		n += counts[i]
	}
	l := Latency{Count: n, Max: time.Duration(h.max.Load()) * time.Microsecond}
	if n == 0 {
		return l
	}
	q := func(p float64) time.Duration {
		rank := int64(p*float64(n) + 0.5)
		rank = min(max(rank, 1), n)
		var c int64
		for i, k := range counts {
			c += k
			if c >= rank {
				return min(time.Duration(bucketUpper(i))*time.Microsecond, l.Max)
			}
		}
		return l.Max
	}
	l.P50, l.P95, l.P99 = q(0.50), q(0.95), q(0.99)
	return l
}
