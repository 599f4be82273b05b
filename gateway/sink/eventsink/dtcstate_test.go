package eventsink_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/sink/eventsink"
	"github.com/telegate/telegate/internal/testenv"
)

// dtcStores are two replicas' DTC state stores: the same R3 bucket reached
// through connections to two different nodes of a 3-node cluster.
func dtcStores(t *testing.T) (context.Context, [2]eventsink.KVStore) {
	t.Helper()
	c := testenv.StartNATSCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	var out [2]eventsink.KVStore
	for i := range out {
		kv, err := c.JetStream(t, i).CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "dtc_state",
			Storage: jetstream.FileStorage, Replicas: 3, History: 1})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = eventsink.KVStore{KV: kv}
	}
	return ctx, out
}

// A replica that saves the state of an older report after another replica
// saved a newer one does not overwrite it (with a plain Put the newer state
// was lost, and the next report was diffed against the older one).
func TestDTCStateNoLostUpdateAcrossReplicas(t *testing.T) {
	ctx, st := dtcStores(t)
	const vin = "TGDTC000000000001"
	older := eventsink.DTCState{Codes: map[uint16]uint8{0x0101: 8}, TimeMs: 1000, Seq: 1}
	newer := eventsink.DTCState{Codes: map[uint16]uint8{0x0101: 8, 0x0202: 8}, TimeMs: 2000, Seq: 2}
	if err := st[1].Save(ctx, vin, newer); err != nil {
		t.Fatal(err)
	}
	if err := st[0].Save(ctx, vin, older); !errors.Is(err, eventsink.ErrDTCStateStale) {
		t.Fatalf("older save over a newer state: %v, want ErrDTCStateStale", err)
	}
	got, err := st[0].Load(ctx, vin)
	if err != nil {
		t.Fatal(err)
	}
	if got.TimeMs != 2000 || got.Seq != 2 || len(got.Codes) != 2 {
		t.Fatalf("stored %+v, want the newer report's state", got)
	}
	// A replay of the same report is not an error.
	if err := st[0].Save(ctx, vin, newer); err != nil {
		t.Fatalf("replayed save: %v", err)
	}
}

// Both replicas save states of interleaved reports of the same vehicles at
// the same time: every key ends with the newest report's state, whatever
// order the writes landed in.
func TestDTCStateConcurrentSavesKeepNewest(t *testing.T) {
	ctx, st := dtcStores(t)
	const vehicles, reports = 4, 30
	var wg sync.WaitGroup
	errs := make(chan error, 2*vehicles*reports)
	for r := range 2 {
		for v := range vehicles {
			wg.Add(1)
			go func() {
				defer wg.Done()
				vin := fmt.Sprintf("TGDTC%012d", v)
				// Replica r handles reports r, r+2, r+4, ...
				for n := r; n < reports; n += 2 {
					s := eventsink.DTCState{Codes: map[uint16]uint8{uint16(n): 8}, TimeMs: int64(1000 + n), Seq: uint64(n)}
					if err := st[r].Save(ctx, vin, s); err != nil && !errors.Is(err, eventsink.ErrDTCStateStale) {
						errs <- err
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for v := range vehicles {
		vin := fmt.Sprintf("TGDTC%012d", v)
		got, err := st[v%2].Load(ctx, vin)
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != reports-1 || got.Codes[reports-1] != 8 || len(got.Codes) != 1 {
			t.Errorf("%s: stored %+v, want report %d", vin, got, reports-1)
		}
	}
}
