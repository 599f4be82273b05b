package profile_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/profile"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/svctest"
)

// TestProfileProjection registers a customer, changes consents, replays
// duplicated events, and checks the stored profile, that replaying the
// stream rebuilds the same profile, and that erasure removes it all.
func TestProfileProjection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus)        // the services on their own users
	js := svctest.Ops(t, bus).JetStream() // the test's own reads and writes
	log := svctest.Logger()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	reg, err := customers.Open(ctx, svctest.Role(t, roles, natsbus.RoleCustomers).JetStream(), 1, func() time.Time { return now }, log)
	if err != nil {
		t.Fatal(err)
	}
	proj, err := profile.NewProjector(ctx, svctest.Role(t, roles, natsbus.RoleProfile).JetStream(), 1, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	reg.OnErase(proj.Erase)
	g := svc.NewGroup(log)
	defer g.Close()
	g.Go("projector", proj.Run)
	g.Go("registry", reg.Run)

	if err := reg.Register(ctx, customers.Registration{ID: "c1", Name: "Ada", Region: "DE",
		Vehicles: []customers.Vehicle{{VIN: "VIN00000000000001", Model: "T1", BatteryKWh: 77}},
		Consents: []string{customers.ConsentPartnerOffers}}, "test"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(ctx, customers.Registration{ID: "c2", Vehicles: []customers.Vehicle{{VIN: "VIN00000000000001"}}}, "test"); !errors.Is(err, svc.ErrConflict) {
		t.Fatalf("same VIN twice: %v", err)
	}
	now = now.Add(time.Hour)
	if _, err := reg.SetConsent(ctx, "c1", customers.ConsentPartnerOffers, false, "app"); err != nil {
		t.Fatal(err)
	}
	if reg.Consented("c1", customers.ConsentPartnerOffers) {
		t.Fatal("withdrawn consent still effective")
	}
	pub := svc.Publisher{JS: js}
	ref := reg.Ref("c1") // profiles and their subjects are keyed by the customer's pseudonym
	subj := customers.ProfileSubject(ref)
	if ref == "" || ref == "c1" || !strings.HasPrefix(ref, "p") { // random, so it may contain "c1" by chance
		t.Fatalf("ref %q", ref)
	}
	// The same charging event three times (e.g. redelivery): counted once.
	for range 3 {
		if err := pub.Publish(ctx, subj, "chg-1", profile.TypeChargingSess, "c1", now,
			profile.ChargingSession{VIN: "VIN00000000000001", Station: "CS-0001", SessionID: "s1", EnergyKWh: 12.5}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish(ctx, subj, "dtc-1", profile.TypeDTC, "c1", now,
		profile.DTCChanged{VIN: "VIN00000000000001", Code: "P0301", Status: "confirmed"}); err != nil {
		t.Fatal(err)
	}
	var got profile.Profile
	svctest.Eventually(t, "profile projected", func() error {
		p, err := proj.Get(ctx, "c1")
		if err != nil {
			return err
		}
		if p.Events != 6 {
			return fmt.Errorf("events %d, want 6 (registered, vehicle, 2 consents, charging, dtc)", p.Events)
		}
		got = p
		return nil
	})
	c := got.Consents[customers.ConsentPartnerOffers]
	if c.Granted || len(c.History) != 2 || c.GrantedAt == nil || c.WithdrawnAt == nil || c.Source != "app" {
		t.Fatalf("consent record: %+v", c)
	}
	if got.Charging.Sessions != 1 || got.Charging.EnergyKWh != 12.5 {
		t.Fatalf("charging: %+v", got.Charging)
	}
	if d := got.Diagnostics["VIN00000000000001"]; len(d.OpenDTCs) != 1 || d.OpenDTCs[0] != "P0301" {
		t.Fatalf("diagnostics: %+v", got.Diagnostics)
	}
	if got.Vehicles["VIN00000000000001"].BatteryKWh != 77 {
		t.Fatalf("vehicles: %+v", got.Vehicles)
	}

	// Replaying the whole stream rebuilds exactly the stored profile.
	all, err := proj.Replay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(all[ref])
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Fatalf("replay differs:\n%s\n%s", a, b)
	}

	// Applying the stored events again changes nothing (idempotent on id).
	p2 := got
	ev := natsbus.Event{V: 1, ID: "chg-1", Type: profile.TypeChargingSess, Time: now, Data: json.RawMessage(`{"energy_kwh":1}`)}
	if changed, _ := profile.Apply(&p2, ev); changed {
		t.Fatal("duplicate event applied")
	}

	// Erasure: profile gone, events gone, registry forgets, no re-registration.
	if err := reg.Erase(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := proj.Get(ctx, "c1"); !errors.Is(err, svc.ErrNotFound) {
		t.Fatalf("profile after erasure: %v", err)
	}
	if _, ok := reg.Lookup("VIN00000000000001"); ok {
		t.Fatal("vehicle still owned after erasure")
	}
	all, err = proj.Replay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := all[ref]; ok {
		t.Fatal("erased customer's events still in the stream")
	}
	if err := reg.Register(ctx, customers.Registration{ID: "c1"}, "test"); !errors.Is(err, svc.ErrErased) {
		t.Fatalf("re-registration after erasure: %v", err)
	}
	// A late event for the erased customer does not resurrect the profile.
	if err := pub.Publish(ctx, subj, "late-1", profile.TypeChargingSess, "c1", now,
		profile.ChargingSession{VIN: "VIN00000000000001"}); err != nil {
		t.Fatal(err)
	}
	if err := proj.Handle(ctx, subj, mustEnvelope(t, "late-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := proj.Get(ctx, "c1"); !errors.Is(err, svc.ErrNotFound) {
		t.Fatalf("profile resurrected: %v", err)
	}
}

func mustEnvelope(t *testing.T, id string) []byte {
	b, err := json.Marshal(natsbus.Event{V: 1, ID: id, Type: profile.TypeChargingSess, Time: time.Now(), Data: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
