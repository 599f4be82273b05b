package influxsink

import (
	"time"

	"github.com/telegate/telegate/internal/bytesize"
)

// Settings are the sink's operator settings: the batch keys of the
// gateway's `influx` configuration section (gateway/config inlines this
// struct, so the keys and their defaults live here alone; Config embeds
// it). Ranges are checked by gateway/config, which names the key.
type Settings struct {
	// BatchLines is the most records read per write (a diag record may
	// add several lines).
	BatchLines int `yaml:"batch_lines"`
	// BatchBytes is the most spool bytes read per write.
	BatchBytes bytesize.Size `yaml:"batch_bytes"`
	// WriteConcurrency is the most writes in flight at once (1: one write
	// at a time). InfluxDB 1.8 parses a write request on one core, so two
	// or more let it use more. The spool cursor still advances in order:
	// only past batches that, with every earlier one, were written.
	WriteConcurrency int `yaml:"write_concurrency"`
	// Linger is how long the sink lets records accumulate after a read
	// of less than a full batch (BatchLines) before the next one, so that
	// at moderate rates one write carries several points of each vehicle:
	// InfluxDB's CPU per point falls by about 40 % at 500 vehicles × 10 Hz
	// between 10 ms and 250 ms, and the gateway's by about 20 %
	// (docs/benchmarks.md, "Sixth pass"). A stored record becomes
	// queryable up to Linger later; under load reads are full and nobody
	// waits (docs/operations.md).
	Linger time.Duration `yaml:"linger"`
}

// DefaultSettings are the sink's defaults (influx.batch_lines,
// influx.batch_bytes, influx.write_concurrency and influx.linger of the
// gateway's config.Default()); New applies them to zero fields.
func DefaultSettings() Settings {
	return Settings{BatchLines: 5000, BatchBytes: 4 << 20, WriteConcurrency: 2, Linger: DefaultLinger}
}

// DefaultLinger is influx.linger's default, and MaxLinger its bound (a
// fleet publishing once every few seconds needs a linger of that order for
// several points per vehicle in one write).
const (
	DefaultLinger = 250 * time.Millisecond
	MaxLinger     = 10 * time.Second
)
