package spool

import (
	"time"

	"github.com/telegate/telegate/internal/bytesize"
)

// DefaultAckTimeout is Settings.AckTimeout's default.
const DefaultAckTimeout = 5 * time.Second

// Group commit defaults of the gateway (Settings; Open's own defaults stay
// 0, no wait): while records arrive at 250/s or more, a group smaller than
// 64 records waits up to 8 ms to grow. At moderate rates (500 vehicles at
// 10 Hz) one fdatasync then covers about 50 records instead of 17, for at
// most 8 ms more PUBACK latency; below 250 records/s a wait would gather
// almost nothing, so there is none; at saturation groups are already
// larger and nobody waits. See docs/benchmarks.md, "Fourth optimisation
// pass (issue 11)".
const (
	DefaultSyncDelay   = 8 * time.Millisecond
	DefaultSyncRecords = 64
	DefaultSyncMinRate = 250
)

// Settings are the spool's operator settings: the gateway's `spool`
// configuration section (gateway/config aliases this struct, so the YAML
// keys and their defaults live here alone). Ranges are checked by
// gateway/config, which names the key; Open checks what it must.
type Settings struct {
	// MaxBytes bounds the bytes on disk not yet committed by every
	// consumer; full: Append fails with ErrFull (QoS 1 refused, 0x97).
	MaxBytes bytesize.Size `yaml:"max_bytes"`
	// SegmentBytes is the segment roll-over size, and the length the
	// active segment file is preallocated to (README.md, Preallocation):
	// the disk holds up to two of them beyond the data.
	SegmentBytes bytesize.Size `yaml:"segment_bytes"`
	// SyncDelay is an extra wait to grow a group commit (Options.SyncDelay).
	SyncDelay time.Duration `yaml:"sync_delay"`
	// SyncRecords ends that wait as soon as the group holds this many
	// records, and skips it when the group already does
	// (Options.SyncRecords): 0 makes SyncDelay a fixed wait.
	SyncRecords int `yaml:"sync_records"`
	// SyncMinRate (records per second) skips that wait while records
	// arrive more slowly (Options.SyncMinRate): 0 waits at any rate.
	SyncMinRate float64 `yaml:"sync_min_rate"`
	// AckTimeout bounds how long a QoS 1 publish waits for its group commit
	// before it is refused (never acknowledged) with "unspecified error":
	// the producers' AppendTimeout argument (gateway/ingest.FromSpool; in
	// jetstream durability mode the wait for the stream's ack).
	AckTimeout time.Duration `yaml:"ack_timeout"`
}

// DefaultSettings are the spool's defaults: the spool section of the
// gateway's config.Default().
func DefaultSettings() Settings {
	return Settings{
		MaxBytes:     DefaultMaxBytes,
		SegmentBytes: DefaultSegmentBytes,
		SyncDelay:    DefaultSyncDelay,
		SyncRecords:  DefaultSyncRecords,
		SyncMinRate:  DefaultSyncMinRate,
		AckTimeout:   DefaultAckTimeout,
	}
}

// Options are the Open options these settings give (zero sizes take
// Open's defaults); the caller adds Dir, Consumers, MaxRecord and Logger.
func (s Settings) Options() Options {
	return Options{SegmentBytes: int64(s.SegmentBytes), MaxBytes: int64(s.MaxBytes), SyncDelay: s.SyncDelay,
		SyncRecords: s.SyncRecords, SyncMinRate: s.SyncMinRate}
}
