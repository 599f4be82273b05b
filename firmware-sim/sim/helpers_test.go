package sim

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/drivecycle"
)

func testRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestModel returns a vehicle model with the given powertrain.
func newTestModel(t *testing.T, pt drivecycle.Powertrain) *drivecycle.Vehicle {
	t.Helper()
	for seed := int64(1); seed < 1000; seed++ {
		v := drivecycle.NewVehicle(drivecycle.NEDC(), seed, time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC))
		if v.Powertrain() == pt {
			return v
		}
	}
	t.Fatalf("no %v model", pt)
	return nil
}

// checkCatalog fails the test if a signal is unknown to the catalog or
// outside its valid range or type.
func checkCatalog(t *testing.T, sigs []wire.Signal) {
	t.Helper()
	for _, s := range sigs {
		c, ok := catalog.Lookup(s.ID)
		if !ok {
			t.Fatalf("signal id %d not in the catalog", s.ID)
		}
		if !c.Valid(s.Value) {
			t.Fatalf("signal %s = %v invalid (range %v..%v, type %v)", c.Path, s.Value, c.Min, c.Max, c.Type)
		}
	}
}
