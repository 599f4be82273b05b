package ocpp

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"time"

	"github.com/telegate/telegate/firmware-sim/sim"
)

// DefaultPrefix is the id prefix of the simulated OCPP stations
// (OCPP-0001, ...), distinct from the MQTT chargers' CS-.
const DefaultPrefix = "OCPP"

// FleetConfig describes a set of OCPP stations: the first V16 ids speak
// 1.6J, the next V201 speak 2.0.1 (Prefix-0001, Prefix-0002, ...).
type FleetConfig struct {
	URL           string
	Prefix        string
	FleetKey      string // secret = sim.Secret(FleetKey, id)
	V16, V201     int
	IDTags        []string
	Seed          int64
	ChargeEvery   time.Duration
	MeterInterval time.Duration
	ChargeSpeedup float64
	TLS           *tls.Config
	Log           *slog.Logger
}

// StationIDs returns the ids and versions of the fleet's stations.
func StationIDs(prefix string, v16, v201 int) (ids, versions []string) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	for i := range v16 + v201 {
		ids = append(ids, sim.StationID(prefix, i+1))
		if i < v16 {
			versions = append(versions, V16)
		} else {
			versions = append(versions, V201)
		}
	}
	return ids, versions
}

// NewFleet builds the stations.
func NewFleet(fc FleetConfig) ([]*Station, error) {
	ids, versions := StationIDs(fc.Prefix, fc.V16, fc.V201)
	out := make([]*Station, 0, len(ids))
	for i, id := range ids {
		st, err := New(Config{URL: fc.URL, ID: id, Version: versions[i], Secret: sim.Secret(fc.FleetKey, id), TLS: fc.TLS,
			IDTags: fc.IDTags, Seed: fc.Seed*7919 + int64(i), ChargeEvery: fc.ChargeEvery, MeterInterval: fc.MeterInterval,
			ChargeSpeedup: fc.ChargeSpeedup, Log: fc.Log})
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// RunAll runs the stations until ctx ends.
func RunAll(ctx context.Context, stations []*Station) {
	var wg sync.WaitGroup
	for _, st := range stations {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = st.Run(ctx)
		}()
	}
	wg.Wait()
}
