package suite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/features"
	"github.com/telegate/telegate/gateway/services/offers"
	"github.com/telegate/telegate/gateway/services/partners"
	"github.com/telegate/telegate/gateway/services/profile"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/gateway/sink/eventsink"
	"github.com/telegate/telegate/internal/svctest"
	"github.com/telegate/telegate/internal/testenv"
)

// Munich station and a café next to it, open all week.
const (
	stLat, stLon = 48.1390, 11.5660
)

var allWeek = []partners.Hours{{Days: []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}, Open: "00:00", Close: "24:00"}}

type privacyEnv struct {
	ctx context.Context
	bus *natsbus.Bus
	js  jetstream.JetStream
	s   *Suite
	pub svc.Publisher
	at  time.Time
}

func startPrivacyEnv(t *testing.T) *privacyEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	bus := svctest.Bus(t)
	dir := t.TempDir()
	stations := filepath.Join(dir, "stations.yaml")
	if err := os.WriteFile(stations, []byte(fmt.Sprintf("stations:\n  - {id: CS-0001, name: Munich, lat: %v, lon: %v}\n", stLat, stLon)), 0o600); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) // injected: nothing depends on the wall clock's date
	s, err := Start(ctx, Config{Settings: Settings{StationsFile: stations, AdminToken: "admin-token-for-tests-0123456789",
		TokenKey: "0123456789abcdef0123456789abcdef", TokenKeyID: "k1", SchedulerInterval: time.Hour},
		Clock: func() time.Time { return at }},
		Deps{Client: svctest.Roles(t, bus), Bus: bus}, svctest.Logger()) // each service on its own user

	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Partners.Put(ctx, partners.Partner{ID: "cafe", Name: "Cafe", Venues: []partners.Venue{{
		ID: "cafe-muc", Name: "Cafe Munich", Lat: stLat + 0.0004, Lon: stLon + 0.0008, RadiusM: 400, TimeZone: "Europe/Berlin",
		Hours: allWeek, Offer: partners.Offer{Text: "Coffee", Code: "CAFE-1"}, MinDwell: partners.Duration(10 * time.Minute),
		DailyCap: 5, Available: true}}}); err != nil {
		t.Fatal(err)
	}
	ops := svctest.Ops(t, bus).JetStream() // the test's own reads and writes
	return &privacyEnv{ctx: ctx, bus: bus, js: ops, s: s, pub: svc.Publisher{JS: ops}, at: at}
}

func (e *privacyEnv) session(t *testing.T, event, sid, vin, tag string, at time.Time) {
	t.Helper()
	ev := eventsink.ChargingEvent{Station: "CS-0001", SessionID: sid, Connector: 1, Event: event, VIN: vin, IDTag: tag,
		PowerW: 11000, SoCPct: 20, TargetSoCPct: 80, EnergyWh: 12000, ReceivedAt: at}
	if err := e.pub.Publish(e.ctx, "charging.session."+event+".CS-0001", "session-"+sid+"-"+event, "charging.session."+event,
		"CS-0001", at, ev); err != nil {
		t.Fatal(err)
	}
}

func (e *privacyEnv) vehicleAt(t *testing.T, vin string, seq uint64, lat, lon float64, at time.Time) {
	t.Helper()
	if err := e.pub.Publish(e.ctx, "vehicle.event."+vin, fmt.Sprintf("vev-%s-%d", vin, seq), "vehicle.ignition_off", vin, at,
		eventsink.VehicleEvent{VIN: vin, Kind: "ignition_off", Seq: seq, Position: &eventsink.LatLon{Lat: lat, Lon: lon}, ReceivedAt: at}); err != nil {
		t.Fatal(err)
	}
}

// waitSessions waits until the offer engine has finished evaluating n
// sessions (triggers published, or decided against).
func (e *privacyEnv) waitSessions(t *testing.T, n int64) {
	t.Helper()
	svctest.Eventually(t, "sessions evaluated", func() error {
		if got := e.s.Offers.Stats.Evaluated.Load(); got < n {
			return fmt.Errorf("%d of %d", got, n)
		}
		return nil
	})
}

func (e *privacyEnv) profile(t *testing.T, id string, ok func(profile.Profile) error) profile.Profile {
	t.Helper()
	var got profile.Profile
	svctest.Eventually(t, "profile of "+id, func() error {
		p, err := e.s.Profiles.Get(e.ctx, id)
		if err != nil {
			return err
		}
		got = p
		return ok(p)
	})
	return got
}

// triggers returns the partner triggers in the PARTNERS stream.
func (e *privacyEnv) triggers(t *testing.T) []partners.Trigger {
	t.Helper()
	var out []partners.Trigger
	for _, m := range readStream(t, e.ctx, e.js, "PARTNERS") {
		var tr partners.Trigger
		if err := json.Unmarshal(m.Data(), &tr); err != nil {
			t.Fatal(err)
		}
		out = append(out, tr)
	}
	return out
}

// readStream returns every message of a stream.
func readStream(t *testing.T, ctx context.Context, js jetstream.JetStream, name string) []jetstream.Msg {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < info.State.Msgs {
		batch, err := cons.Fetch(int(info.State.Msgs)-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			n++
		}
		if n == 0 {
			break
		}
	}
	return out
}

// TestErasureLeavesNoLinkableTrace registers a customer with consents, id
// tags and two vehicles, produces profile events, a DTC, vehicle events, a
// corroborated charging session with a partner offer (trigger, head-unit
// command, cap, ledger) and a redemption, erases the customer, and then
// reads every stream of the account — the KV buckets' streams included,
// so purge and delete markers too — and every bucket's key history: the
// customer id, name, pseudonym ref, VINs, id tag, partner tokens and offer
// ids appear in no subject, header, key or payload. Another customer's data
// is untouched.
func TestErasureLeavesNoLinkableTrace(t *testing.T) {
	e := startPrivacyEnv(t)
	ctx, reg := e.ctx, e.s.Customers
	const id, name, vin1, vin2, tag = "cust-erase-1", "Erika Mustermann", "TGSVSERASE0000001", "TGSVSERASE0000002", "RFID-ERASE-0001"
	for _, r := range []customers.Registration{
		{ID: id, Name: name, Region: "DE", Consents: []string{customers.ConsentPartnerOffers, "marketing", features.ConsentLocation}, IDTags: []string{tag},
			Vehicles: []customers.Vehicle{{VIN: vin1, BatteryKWh: 60}, {VIN: vin2}}},
		{ID: "cust-keep-1", Name: "Keep Me", Region: "DE", Consents: []string{customers.ConsentPartnerOffers},
			IDTags: []string{"RFID-KEEP-0001"}, Vehicles: []customers.Vehicle{{VIN: "TGSVSKEEP00000001"}}},
	} {
		if err := reg.Register(ctx, r, "test"); err != nil {
			t.Fatal(err)
		}
	}
	ref := reg.Ref(id)
	if _, err := reg.SetConsent(ctx, id, "marketing", false, "app"); err != nil {
		t.Fatal(err)
	}
	// Vehicle data: an event with a position, a DTC.
	e.vehicleAt(t, vin1, 1, stLat, stLon, e.at.Add(-time.Minute))
	// ... which (location consent) stores the vehicle's hemisphere.
	svctest.Eventually(t, "hemisphere stored", func() error {
		if h, err := e.s.Scheduler.StoredHemisphere(ctx, vin1); err != nil || h == "" {
			return fmt.Errorf("hemisphere %q: %w", h, err)
		}
		return nil
	})
	if err := e.pub.Publish(ctx, "telemetry.dtc.raised."+vin1, "dtc-raised-"+vin1+"-P0301-1", "dtc.raised", vin1, e.at,
		eventsink.DTCEvent{VIN: vin1, Code: "P0301", Status: "confirmed"}); err != nil {
		t.Fatal(err)
	}
	// Sessions: one with the customer's id tag, one corroborated by the
	// vehicle's position; the other customer charges too.
	e.session(t, "started", "s-tag", vin2, tag, e.at)
	e.session(t, "started", "s-pos", vin1, "", e.at)
	e.session(t, "started", "s-keep", "TGSVSKEEP00000001", "RFID-KEEP-0001", e.at)
	e.waitSessions(t, 3)
	e.session(t, "stopped", "s-tag", vin2, tag, e.at.Add(40*time.Minute))
	e.profile(t, id, func(p profile.Profile) error {
		if p.Offers.Sent != 2 || p.Charging.Sessions != 1 || len(p.Diagnostics) != 1 {
			return fmt.Errorf("offers %d charging %d diagnostics %d", p.Offers.Sent, p.Charging.Sessions, len(p.Diagnostics))
		}
		return nil
	})
	var needles []string
	var keepTrigger partners.Trigger
	for _, tr := range e.triggers(t) {
		if tr.ID == offersID("s-keep") {
			keepTrigger = tr
			continue
		}
		needles = append(needles, tr.DriverToken, tr.ID)
	}
	if len(needles) != 4 || keepTrigger.ID == "" {
		t.Fatalf("triggers: %v", needles)
	}
	if _, first, err := e.s.Offers.Redeem(ctx, "cafe", offersID("s-tag"), "CAFE-1"); err != nil || !first {
		t.Fatalf("redeem: %v", err)
	}
	needles = append(needles, id, name, ref, vin1, vin2, tag)

	if err := reg.Erase(ctx, id); err != nil {
		t.Fatal(err)
	}

	// Every stream, KV streams included: subjects, headers, payloads.
	names := e.js.StreamNames(ctx)
	var streams []string
	for n := range names.Name() {
		streams = append(streams, n)
	}
	if len(streams) < 8 {
		t.Fatalf("streams: %v", streams)
	}
	for _, st := range streams {
		s, err := e.js.Stream(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatal(err)
		}
		for subj := range info.State.Subjects {
			for _, n := range needles {
				if strings.Contains(subj, n) {
					t.Errorf("stream %s: subject %s carries %q", st, subj, n)
				}
			}
		}
		for _, m := range readStream(t, ctx, e.js, st) {
			hdr, _ := json.Marshal(m.Headers())
			for _, n := range needles {
				if bytes.Contains(m.Data(), []byte(n)) || bytes.Contains(hdr, []byte(n)) || strings.Contains(m.Subject(), n) {
					t.Errorf("stream %s: message on %s carries %q: %s", st, m.Subject(), n, m.Data())
				}
			}
		}
	}
	// Every bucket's keys with their history (delete and purge markers).
	kvs := e.js.KeyValueStoreNames(ctx)
	for b := range kvs.Name() {
		kv, err := e.js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		w, err := kv.WatchAll(ctx, jetstream.IncludeHistory(), jetstream.MetaOnly())
		if err != nil {
			t.Fatal(err)
		}
		for u := range w.Updates() {
			if u == nil {
				break
			}
			for _, n := range needles {
				if strings.Contains(u.Key(), n) {
					t.Errorf("bucket %s: key %s (%v) carries %q", b, u.Key(), u.Operation(), n)
				}
			}
		}
		_ = w.Stop()
	}
	// The erased customer is gone for good; the other one is untouched.
	if !reg.Erased(id) {
		t.Fatal("not marked erased")
	}
	if err := reg.Register(ctx, customers.Registration{ID: id}, "test"); !errors.Is(err, svc.ErrErased) {
		t.Fatalf("re-registration: %v", err)
	}
	if _, _, err := e.s.Offers.Redeem(ctx, "cafe", offersID("s-pos"), "CAFE-1"); err == nil {
		t.Fatal("an erased customer's offer is still redeemable")
	}
	if _, ok := reg.Lookup(vin1); ok {
		t.Fatal("vehicle still owned")
	}
	e.profile(t, "cust-keep-1", func(p profile.Profile) error {
		if p.Offers.Sent != 1 {
			return fmt.Errorf("kept customer's offers: %d", p.Offers.Sent)
		}
		return nil
	})
	if _, _, err := e.s.Offers.Redeem(ctx, "cafe", keepTrigger.ID, "CAFE-1"); err != nil {
		t.Fatalf("kept customer's offer: %v", err)
	}
	// No trigger for the erased customer's vehicles afterwards.
	before := e.s.Offers.Stats.Triggers.Load()
	e.session(t, "started", "s-after", vin2, tag, e.at.Add(time.Hour))
	e.waitSessions(t, 4)
	if n := e.s.Offers.Stats.Triggers.Load(); n != before {
		t.Fatalf("trigger after erasure")
	}
}

func offersID(session string) string { return offers.OfferID("CS-0001", session, "cafe", "cafe-muc") }

// TestChargerCannotAttributeSessions: a charger that names a VIN whose
// vehicle is elsewhere (its own last position is in Paris) and gives no id
// tag bound to the owner gets its session stored as unverified; it
// triggers no partner offer and nothing lands in the owner's profile. The
// legitimate paths still work: the owner's id tag, or the vehicle's own
// position at the station within the window.
func TestChargerCannotAttributeSessions(t *testing.T) {
	e := startPrivacyEnv(t)
	ctx, reg := e.ctx, e.s.Customers
	const id, vin, tag = "cust-attr-1", "TGSVSATTR00000001", "PNC-ATTR-0001"
	if err := reg.Register(ctx, customers.Registration{ID: id, Region: "DE", Consents: []string{customers.ConsentPartnerOffers},
		IDTags: []string{tag}, Vehicles: []customers.Vehicle{{VIN: vin}}}, "test"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(ctx, customers.Registration{ID: "cust-attr-2", IDTags: []string{"PNC-OTHER-0001"},
		Vehicles: []customers.Vehicle{{VIN: "TGSVSATTR00000002"}}}, "test"); err != nil {
		t.Fatal(err)
	}
	e.vehicleAt(t, vin, 1, 48.8443, 2.3744, e.at.Add(-2*time.Minute)) // Paris Gare de Lyon
	// Forged claims: no tag; another customer's tag; the vehicle in Paris.
	e.session(t, "started", "forged-1", vin, "", e.at)
	e.session(t, "started", "forged-2", vin, "PNC-OTHER-0001", e.at)
	e.session(t, "started", "forged-3", vin, "RFID-DEADBEEF", e.at)
	e.waitSessions(t, 3)
	e.session(t, "stopped", "forged-1", vin, "", e.at.Add(time.Hour))
	if n := e.s.Offers.Stats.Triggers.Load(); n != 0 {
		t.Fatalf("%d triggers for forged sessions", n)
	}
	if n := e.s.Offers.Stats.Unverified.Load(); n != 3 {
		t.Fatalf("unverified sessions: %d, want 3", n)
	}
	kv, err := e.js.KeyValue(ctx, offers.AttributionBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, sid := range []string{"forged-1", "forged-2", "forged-3"} {
		en, err := kv.Get(ctx, "CS-0001."+sid)
		if err != nil || !strings.Contains(string(en.Value()), `"unverified"`) {
			t.Fatalf("session %s stored as %v %v", sid, en, err)
		}
	}
	// A vehicle position near the station but out of the window is no proof.
	e.vehicleAt(t, vin, 2, stLat, stLon, e.at.Add(-3*time.Hour))
	e.session(t, "started", "forged-4", vin, "", e.at)
	e.waitSessions(t, 4)
	if n := e.s.Offers.Stats.Triggers.Load(); n != 0 {
		t.Fatalf("%d triggers for a stale position", n)
	}

	// Legitimate: the owner's tag; then the vehicle parked at the station.
	e.session(t, "started", "legit-tag", vin, tag, e.at)
	e.waitSessions(t, 5)
	e.vehicleAt(t, vin, 3, stLat+0.001, stLon, e.at.Add(2*time.Minute)) // ~110 m away
	e.session(t, "started", "legit-pos", vin, "", e.at.Add(5*time.Minute))
	e.waitSessions(t, 6)
	if n := e.s.Offers.Stats.Triggers.Load(); n != 2 {
		t.Fatalf("legitimate sessions: %d triggers, want 2", n)
	}
	got := map[string]bool{}
	for _, tr := range e.triggers(t) {
		got[tr.ID] = true
	}
	if !got[offersID("legit-tag")] || !got[offersID("legit-pos")] || len(got) != 2 {
		t.Fatalf("triggers %v", got)
	}
	for sid, want := range map[string]string{"legit-tag": offers.AttrIDTag, "legit-pos": offers.AttrVehicle} {
		en, err := kv.Get(ctx, "CS-0001."+sid)
		if err != nil || !strings.Contains(string(en.Value()), `"`+want+`"`) {
			t.Fatalf("session %s: %v %v", sid, en, err)
		}
	}
	// The profile: the forged session's stop left nothing; the legitimate
	// one (stopped after it, same consumer, in order) is there.
	e.session(t, "stopped", "legit-tag", vin, tag, e.at.Add(time.Hour))
	p := e.profile(t, id, func(p profile.Profile) error {
		if p.Charging.Sessions < 1 || p.Offers.Sent != 2 {
			return fmt.Errorf("charging %d offers %d", p.Charging.Sessions, p.Offers.Sent)
		}
		return nil
	})
	if p.Charging.Sessions != 1 {
		t.Fatalf("charging sessions in the profile: %d, want 1 (the forged one counted)", p.Charging.Sessions)
	}
}

// TestErasureDeletesTelemetryOnRequest runs against a real influxd: an
// erasure with ?delete_telemetry=true drops every series of the customer's
// vehicles (DROP SERIES over the v1 query API); one without the flag
// leaves the vehicle's telemetry (keyed by VIN) in place; a bad flag value
// is refused with 400.
func TestErasureDeletesTelemetryOnRequest(t *testing.T) {
	in := testenv.StartInflux(t)
	e := startPrivacyEnv(t)
	e.s.Customers.SetTelemetryEraser(&customers.InfluxTelemetry{URL: in.URL, Database: in.Database, Token: in.Token})
	mux := http.NewServeMux()
	e.s.Mount(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := e.ctx
	vins := map[string]string{"cust-tel-1": "TGSVSTELE00000001", "cust-tel-2": "TGSVSTELE00000002"}
	var lines []string
	for id, vin := range vins {
		if err := e.s.Customers.Register(ctx, customers.Registration{ID: id, Vehicles: []customers.Vehicle{{VIN: vin}}}, "test"); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, "telemetry,vin="+vin+" speed=50 1700000000000000000",
			"dtc,code=P0301,vin="+vin+" active=true 1700000000000000000",
			"connectivity,device="+vin+" connected=true 1700000000000000000")
	}
	wreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, in.URL+"/write?db="+in.Database, strings.NewReader(strings.Join(lines, "\n")))
	wreq.Header.Set("Authorization", "Token "+in.Token)
	resp, err := http.DefaultClient.Do(wreq)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write: %v %v", err, resp)
	}
	resp.Body.Close()
	series := func() string {
		qreq, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.URL+"/query?db="+in.Database+"&q="+url.QueryEscape("SHOW SERIES"), nil)
		qreq.Header.Set("Authorization", "Token "+in.ReadToken)
		r, err := http.DefaultClient.Do(qreq)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return string(b)
	}
	del := func(id, q string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, srv.URL+"/api/v1/customers/"+id+q, nil)
		req.Header.Set("Authorization", "Bearer admin-token-for-tests-0123456789")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if s := series(); strings.Count(s, "TGSVSTELE0000000") != 6 {
		t.Fatalf("series before: %s", s)
	}
	if code := del("cust-tel-1", "?delete_telemetry=yes"); code != http.StatusBadRequest {
		t.Fatalf("bad flag: %d", code)
	}
	if code := del("cust-tel-1", ""); code != http.StatusNoContent {
		t.Fatalf("erase without telemetry: %d", code)
	}
	if s := series(); strings.Count(s, vins["cust-tel-1"]) != 3 {
		t.Fatalf("telemetry deleted without the flag: %s", s)
	}
	if code := del("cust-tel-2", "?delete_telemetry=true"); code != http.StatusNoContent {
		t.Fatalf("erase with telemetry: %d", code)
	}
	s := series()
	if strings.Contains(s, vins["cust-tel-2"]) || strings.Count(s, vins["cust-tel-1"]) != 3 {
		t.Fatalf("series after: %s", s)
	}
}
