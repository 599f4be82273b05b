package ocpp_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	ocpp16 "github.com/lorenzodonini/ocpp-go/ocpp1.6"
	types16 "github.com/lorenzodonini/ocpp-go/ocpp1.6/types"
	ocpp201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/provisioning"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/transactions"
	types201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1/types"
	"github.com/lorenzodonini/ocpp-go/ws"

	"github.com/telegate/telegate/internal/ocpptest"
)

// report adds p50/p99 of the per-request latencies to the benchmark.
func report(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op") // the percentiles are the figure
}

func basic(id string) *ws.Client {
	c := ws.NewClient()
	c.SetBasicAuth(id, ocpptest.Secret(id))
	return c
}

// BenchmarkOCPPSessionStart measures session start → durable ack: a real
// ocpp-go charge point sends StartTransaction (1.6J) or TransactionEvent
// Started (2.0.1) over loopback, the central system maps it, appends it to
// the spool with fsync and only then answers; the latency is the charge
// point's request → answer time. stations>1 run concurrently (one request
// in flight per station, as OCPP-J allows), sharing the spool's group
// commit.
func BenchmarkOCPPSessionStart(b *testing.B) {
	for _, v := range []string{"1.6", "2.0.1"} {
		for _, n := range []int{1, 16} {
			b.Run(fmt.Sprintf("v=%s/stations=%d", v, n), func(b *testing.B) { benchStart(b, v, n) })
		}
	}
}

func benchStart(b *testing.B, version string, stations int) {
	ids := make([]string, stations)
	for i := range ids {
		ids[i] = fmt.Sprintf("BENCH-%04d", i+1)
	}
	h := ocpptest.Start(b, ocpptest.Options{Stations: ids})
	// Distinct whole seconds per start (OCPP-J timestamps carry seconds):
	// each start is a new transaction, never a replay.
	base := time.Now().Add(-time.Duration(b.N+1) * time.Second).Truncate(time.Second)
	starts := make([]func(i int) error, stations)
	for k, id := range ids {
		if version == "1.6" {
			cp := ocpp16.NewChargePoint(id, nil, basic(id))
			if err := cp.Start(h.URL); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(cp.Stop)
			starts[k] = func(i int) error {
				_, err := cp.StartTransaction(1, "BENCHTAG", 1000, types16.NewDateTime(base.Add(time.Duration(i)*time.Second)))
				return err
			}
			continue
		}
		cs := ocpp201.NewChargingStation(id, nil, basic(id))
		if err := cs.Start(h.URL); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(cs.Stop)
		if _, err := cs.BootNotification(provisioning.BootReasonPowerUp, "bench", "telegate"); err != nil {
			b.Fatal(err)
		}
		starts[k] = func(i int) error {
			req := transactions.NewTransactionEventRequest(transactions.TransactionEventStarted,
				types201.NewDateTime(base.Add(time.Duration(i)*time.Second)), transactions.TriggerReasonAuthorized, i,
				transactions.Transaction{TransactionID: fmt.Sprintf("TX-%d", i)})
			req.Evse = &types201.EVSE{ID: 1}
			req.IDToken = &types201.IdToken{IdToken: "BENCHTAG", Type: types201.IdTokenTypeISO14443}
			_, err := cs.SendRequest(req)
			return err
		}
	}
	lat := make([][]time.Duration, stations)
	b.ResetTimer()
	var wg sync.WaitGroup
	for k := range stations {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < b.N; i += stations {
				t0 := time.Now()
				if err := starts[k](i); err != nil {
					b.Error(err)
					return
				}
				lat[k] = append(lat[k], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	// Every start was a new, durable record (no replay, no refusal).
	if n := len(h.Records()); n != b.N {
		b.Fatalf("%d records stored for %d starts", n, b.N)
	}
	report(b, slices.Concat(lat...))
}
