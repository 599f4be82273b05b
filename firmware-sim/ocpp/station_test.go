package ocpp_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/wire"
	simocpp "github.com/telegate/telegate/firmware-sim/ocpp"
	"github.com/telegate/telegate/gateway/ocpp"
	"github.com/telegate/telegate/internal/ocpptest"
)

const vin = "TGSVS000000000001"

// run starts st until the test ends.
func run(t *testing.T, st *simocpp.Station) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = st.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func sessions(recs []ocpptest.Rec, station string, kind uint8) []*wire.ChargingSession {
	var out []*wire.ChargingSession
	for _, r := range recs {
		if r.Session != nil && string(r.Session.Station) == station && r.Session.Kind == kind {
			out = append(out, r.Session)
		}
	}
	return out
}

func statuses(recs []ocpptest.Rec, station string, status uint8) int {
	n := 0
	for _, r := range recs {
		if r.Status != nil && string(r.Status.Station) == station && r.Status.Status == status {
			n++
		}
	}
	return n
}

// TestSimulatedStationsSessions: a 1.6J and a 2.0.1 simulated station run
// whole sessions against the real central system: boot, status, started
// with SoC and power, meter updates, stopped with the delivered energy; a
// VIN presented as id tag is carried as the session's VIN.
func TestSimulatedStationsSessions(t *testing.T) {
	ids := map[string]string{"OCPP-0001": simocpp.V16, "OCPP-0002": simocpp.V201}
	h := ocpptest.Start(t, ocpptest.Options{Stations: []string{"OCPP-0001", "OCPP-0002"}})
	stations := map[string]*simocpp.Station{}
	for id, v := range ids {
		st, err := simocpp.New(simocpp.Config{URL: h.URL, ID: id, Version: v, Secret: ocpptest.Secret(id),
			IDTags: []string{vin}, Seed: 7, MaxPower: 50e3, ChargeEvery: 50 * time.Millisecond,
			MeterInterval: 20 * time.Millisecond, ChargeSpeedup: 100000, Retry: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		stations[id] = st
		run(t, st)
	}
	ok := h.WaitFor(60*time.Second, func(recs []ocpptest.Rec) bool {
		for id := range ids {
			if len(sessions(recs, id, wire.SessionStopped)) < 2 || len(sessions(recs, id, wire.SessionUpdated)) < 1 {
				return false
			}
		}
		return true
	})
	recs := h.Records()
	if !ok {
		t.Fatalf("sessions did not complete: %d records", len(recs))
	}
	for id := range ids {
		started := sessions(recs, id, wire.SessionStarted)
		stopped := sessions(recs, id, wire.SessionStopped)
		if len(started) < len(stopped) {
			t.Fatalf("%s: %d started, %d stopped", id, len(started), len(stopped))
		}
		for _, s := range started {
			if s.SoCPct <= 0 || s.PowerW <= 0 || len(s.SessionID) == 0 || len(s.IDTag) == 0 || s.Connector != 1 {
				t.Fatalf("%s started: %+v", id, s)
			}
			if (string(s.IDTag) == vin) != (string(s.VIN) == vin) {
				t.Fatalf("%s: id tag %s, vin %s", id, s.IDTag, s.VIN)
			}
		}
		for _, s := range stopped {
			if s.EnergyWh <= 0 {
				t.Fatalf("%s stopped without energy: %+v", id, s)
			}
		}
		if statuses(recs, id, wire.ConnectorAvailable) < 2 || statuses(recs, id, wire.ConnectorOccupied) < 2 {
			t.Fatalf("%s: status notifications missing", id)
		}
		if s := stations[id].Stats(); s.Boots != 1 || s.Failed != 0 {
			t.Fatalf("%s stats %+v", id, s)
		}
	}
}

// TestSimulatedStationsAnswerCommands: RemoteStart/Stop, ChangeAvailability
// and Reset sent by the central system to both versions are carried out.
func TestSimulatedStationsAnswerCommands(t *testing.T) {
	for _, v := range []string{simocpp.V16, simocpp.V201} {
		t.Run(v, func(t *testing.T) {
			id := "OCPP-0009"
			h := ocpptest.Start(t, ocpptest.Options{Stations: []string{id}})
			st, err := simocpp.New(simocpp.Config{URL: h.URL, ID: id, Version: v, Secret: ocpptest.Secret(id),
				Seed: 3, ChargeEvery: -1, MeterInterval: 20 * time.Millisecond, ChargeSpeedup: 1, Retry: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			run(t, st)
			if !h.WaitFor(30*time.Second, func(r []ocpptest.Rec) bool { return statuses(r, id, wire.ConnectorAvailable) >= 1 }) {
				t.Fatal("station did not boot")
			}
			send := func(c ocpp.Command, want string) {
				t.Helper()
				res, err := h.Central.Send(context.Background(), id, c)
				if err != nil || res.Status != want {
					t.Fatalf("%s: %+v %v, want %s", c.Action, res, err, want)
				}
			}
			send(ocpp.Command{Action: "remote_start", IDTag: "TAG-REMOTE", Connector: 1}, "Accepted")
			if !h.WaitFor(30*time.Second, func(r []ocpptest.Rec) bool {
				return len(sessions(r, id, wire.SessionStarted)) == 1 && st.Charging() != ""
			}) {
				t.Fatal("remote start: no session")
			}
			s := sessions(h.Records(), id, wire.SessionStarted)[0]
			if string(s.IDTag) != "TAG-REMOTE" || st.Charging() != string(s.SessionID) {
				t.Fatalf("started %+v, station charging %q", s, st.Charging())
			}
			send(ocpp.Command{Action: "remote_start", IDTag: "TAG-2"}, "Rejected") // connector busy
			send(ocpp.Command{Action: "remote_stop", TransactionID: "999"}, "Rejected")
			send(ocpp.Command{Action: "remote_stop", TransactionID: string(s.SessionID)}, "Accepted")
			if !h.WaitFor(30*time.Second, func(r []ocpptest.Rec) bool { return len(sessions(r, id, wire.SessionStopped)) == 1 }) {
				t.Fatal("remote stop: no stopped session")
			}
			send(ocpp.Command{Action: "change_availability", Operative: false}, "Accepted")
			if !h.WaitFor(30*time.Second, func(r []ocpptest.Rec) bool { return statuses(r, id, wire.ConnectorUnavailable) == 1 }) {
				t.Fatal("change availability: no Unavailable status")
			}
			send(ocpp.Command{Action: "remote_start", IDTag: "TAG-3"}, "Rejected") // inoperative
			send(ocpp.Command{Action: "change_availability", Operative: true}, "Accepted")
			send(ocpp.Command{Action: "reset"}, "Accepted")
			deadline := time.Now().Add(30 * time.Second)
			for st.Stats().Boots < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("no reboot after reset: %+v", st.Stats())
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
