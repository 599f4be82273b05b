package natsbus

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The INGEST stream holds the ingest records of the "jetstream" durability
// mode (ingest.durability, docs/reliability.md): the hook appends every
// accepted publish there, byte for byte the spool record
// (gateway/spool/record), and acknowledges a QoS 1 publish once JetStream
// acknowledged the append (stored by a quorum of the stream's replicas).
// The InfluxDB and event sinks read it through shared durable consumers
// (ConsumerIngestInflux, ConsumerIngestEvents): every replica runs them on
// the same durable, so any surviving replica does the work.
//
// Retention is by interest: a record leaves the stream once both consumers
// acknowledged it, so the stream holds the backlog only. It is bounded by
// IngestStream.MaxBytes with DiscardNew: a full stream refuses appends, which
// the hook turns into the same answer as a full spool (PUBACK 0x97 / a 3.1.1
// disconnect), never into a silent loss.
const (
	StreamIngest = "INGEST"
	// PrefixIngest is followed by the shard number: ingest.{0..IngestShards-1}.
	PrefixIngest = "ingest."
	// IngestShards is the number of ingest subjects; a device always maps
	// to the same one (IngestShard).
	IngestShards = 64
	// Durable names of the sinks' consumers on INGEST.
	ConsumerIngestInflux = "influx"
	ConsumerIngestEvents = "events"
	// IngestPriorityGroup is the priority group of the events consumer: it
	// is pinned to one replica at a time (per-device event order, DTC state),
	// and moves to another when that one stops pulling for PinnedTTL.
	IngestPriorityGroup = "events"
)

// IngestStream configures the INGEST stream and its consumers.
type IngestStream struct {
	Replicas    int
	MaxBytes    int64         // stream size bound (DiscardNew)
	DedupWindow time.Duration // Nats-Msg-Id duplicate window
	MaxAge      time.Duration // 0: no age limit
	// AckWait is how long a consumer's delivered, unacknowledged record
	// waits before redelivery (default 30 s); MaxAckPending bounds the
	// records delivered and not yet acknowledged per consumer (default
	// 20000); PinnedTTL is how long the events consumer stays pinned to a
	// replica that stopped pulling (default AckWait, at least 5 s: a live
	// replica pulls at least every 2 s).
	AckWait       time.Duration
	MaxAckPending int
	PinnedTTL     time.Duration
}

func (c IngestStream) withDefaults() IngestStream {
	if c.Replicas < 1 {
		c.Replicas = 1
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 1 << 30
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = 10 * time.Minute
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 20000
	}
	if c.PinnedTTL <= 0 {
		c.PinnedTTL = max(c.AckWait, 5*time.Second)
	}
	return c
}

// IngestShard is the shard of a device id: FNV-1a of the id modulo
// IngestShards.
func IngestShard(device []byte) int {
	h := fnv.New32a()
	_, _ = h.Write(device)
	return int(h.Sum32() % IngestShards)
}

// ingestSubjects are the prebuilt subjects ingest.0 ... ingest.63.
var ingestSubjects = func() []string {
	s := make([]string, IngestShards)
	for i := range s {
		s[i] = PrefixIngest + strconv.Itoa(i)
	}
	return s
}()

// SubjectIngest is ingest.{shard of device} (stream INGEST).
func SubjectIngest(device []byte) string { return ingestSubjects[IngestShard(device)] }

// DeclareIngest creates or updates the INGEST stream and the sinks' two
// durable consumers. The consumers are declared here, before anything is
// appended, because an interest-retention stream drops records nobody is
// interested in.
func DeclareIngest(ctx context.Context, js jetstream.JetStream, c IngestStream) error {
	c = c.withDefaults()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamIngest,
		Description: "Accepted device publishes (spool records) awaiting the InfluxDB and event sinks",
		Subjects:    []string{PrefixIngest + "*"},
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Retention:   jetstream.InterestPolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    c.MaxBytes,
		MaxAge:      c.MaxAge,
		Duplicates:  c.DedupWindow,
		MaxMsgSize:  2 << 20,
	})
	if err != nil {
		return fmt.Errorf("natsbus: stream %s: %w", StreamIngest, err)
	}
	for _, cc := range []jetstream.ConsumerConfig{
		{Durable: ConsumerIngestInflux, Description: "InfluxDB sink (shared by every replica)"},
		{Durable: ConsumerIngestEvents, Description: "Event sink (pinned to one replica at a time)",
			PriorityGroups: []string{IngestPriorityGroup}, PriorityPolicy: jetstream.PriorityPolicyPinned, PinnedTTL: c.PinnedTTL},
	} {
		cc.AckPolicy = jetstream.AckExplicitPolicy
		cc.AckWait = c.AckWait
		cc.MaxAckPending = c.MaxAckPending
		cc.MaxDeliver = -1 // never give up on a record: the sink retries
		cc.Replicas = c.Replicas
		cc.DeliverPolicy = jetstream.DeliverAllPolicy
		if _, err := js.CreateOrUpdateConsumer(ctx, StreamIngest, cc); err != nil {
			return fmt.Errorf("natsbus: consumer %s/%s: %w", StreamIngest, cc.Durable, err)
		}
	}
	return nil
}
