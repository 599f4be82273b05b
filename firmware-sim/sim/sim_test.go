package sim

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/drivecycle"
)

func TestSecret(t *testing.T) {
	// RFC 2104 HMAC-SHA256 vector (as published on Wikipedia).
	got := Secret("key", "The quick brown fox jumps over the lazy dog")
	if want := "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"; got != want {
		t.Errorf("Secret = %s, want %s", got, want)
	}
	if Secret("k", "a") == Secret("k", "b") || Secret("k1", "a") == Secret("k2", "a") {
		t.Error("secrets collide")
	}
}

func TestIDs(t *testing.T) {
	if v := VIN("TGSVS", 1); v != "TGSVS000000000001" || len(v) != VINLength {
		t.Errorf("VIN = %q", v)
	}
	if v := VIN("TGSVS", 123456); v != "TGSVS000000123456" {
		t.Errorf("VIN = %q", v)
	}
	if s := StationID("CS", 1); s != "CS-0001" {
		t.Errorf("StationID = %q", s)
	}
	if s := StationID("CS", 12345); s != "CS-12345" {
		t.Errorf("StationID = %q", s)
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Vehicles: 1, FleetKey: "k"}
	if _, err := New(ok); err != nil {
		t.Fatal(err)
	}
	cfg, _ := ok.withDefaults()
	if cfg.QoS != 1 || cfg.TelemetryInterval != time.Second || cfg.SignalsPerFrame != NumSignals ||
		cfg.InflightPerDevice != 16 || cfg.ConnectRate != 200 || cfg.VINPrefix != "TGSVS" {
		t.Errorf("defaults: %+v", cfg)
	}
	if _, err := New(Config{Vehicles: 1}); !errors.Is(err, ErrNoFleetKey) {
		t.Errorf("no key: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no devices":   func(c *Config) { c.Vehicles = 0 },
		"signals":      func(c *Config) { c.SignalsPerFrame = NumSignals + 1 },
		"qos":          func(c *Config) { c.QoS = 2 },
		"prefix":       func(c *Config) { c.VINPrefix = "TG/S" },
		"prefix dash":  func(c *Config) { c.VINPrefix = "TG-S" },
		"station":      func(c *Config) { c.StationPrefix = "C#" },
		"too many":     func(c *Config) { c.VINPrefix = "ABCDEFGHIJKLMNOP"; c.Vehicles = 10 },
		"dtc prob":     func(c *Config) { c.DTCProbability = 2 },
		"refuse prob":  func(c *Config) { c.RefuseProbability = -1 },
		"neg frames":   func(c *Config) { c.Frames = -1 },
		"neg interval": func(c *Config) { c.TelemetryInterval = -time.Second },
	} {
		c := ok
		mod(&c)
		if _, err := New(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
	c := ok
	c.QoSZero = true
	if cfg, err := c.withDefaults(); err != nil || cfg.qos() != 0 {
		t.Errorf("QoSZero: %v %d", err, cfg.qos())
	}
}

func TestProvisionAndRegistry(t *testing.T) {
	cfg := Config{Vehicles: 3, Chargers: 2, FleetKey: "fleet-secret"}
	entries, err := Provision(cfg, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs := []string{"TGSVS000000000001", "TGSVS000000000002", "TGSVS000000000003", "CS-0001", "CS-0002"}
	for i, e := range entries {
		if e.ID != wantIDs[i] {
			t.Errorf("entry %d id %q, want %q", i, e.ID, wantIDs[i])
		}
		kind := KindVehicle
		if i >= 3 {
			kind = KindCharger
		}
		if e.Kind != kind || e.Disabled {
			t.Errorf("entry %+v", e)
		}
		if err := bcrypt.CompareHashAndPassword([]byte(e.SecretHash), []byte(Secret("fleet-secret", e.ID))); err != nil {
			t.Errorf("%s: hash does not match secret: %v", e.ID, err)
		}
	}
	if _, err := Provision(cfg, 99); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("bad cost: %v", err)
	}

	path := filepath.Join(t.TempDir(), "devices.yaml")
	if err := WriteRegistry(path, entries); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	b, _ := os.ReadFile(path)
	var doc map[string][]map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc) != 1 || len(doc["devices"]) != 5 {
		t.Fatalf("registry document: %s", b)
	}
	for _, d := range doc["devices"] {
		keys := make([]string, 0, len(d))
		for k := range d {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, []string{"disabled", "id", "kind", "secret_hash"}) {
			t.Errorf("keys %v", keys)
		}
		if d["disabled"] != false {
			t.Errorf("disabled = %v", d["disabled"])
		}
	}
}

func TestEncodeDTC(t *testing.T) {
	for code, want := range map[string]uint16{
		"P0301": 0x0301, "P0420": 0x0420, "P0128": 0x0128, "C0035": 0x4035,
		"U0100": 0xC100, "B0001": 0x8001, "P0A80": 0x0A80, "U3FFF": 0xFFFF,
	} {
		got, err := encodeDTC(code)
		if err != nil || got != want {
			t.Errorf("encodeDTC(%s) = %#04x, %v; want %#04x", code, got, err, want)
		}
	}
	for _, bad := range []string{"", "P030", "X0301", "P4000", "P03G1", "P03011"} {
		if _, err := encodeDTC(bad); err == nil {
			t.Errorf("encodeDTC(%q) succeeded", bad)
		}
	}
	for _, d := range dtcCatalog {
		if _, err := encodeDTC(d.code); err != nil {
			t.Errorf("catalog: %v", err)
		}
	}
}

func TestDTCLifecycle(t *testing.T) {
	for _, pt := range []drivecycle.Powertrain{drivecycle.BEV, drivecycle.PHEV} {
		v := newTestModel(t, pt)
		s := v.State()
		m := dtcMemory{rng: testRNG(1), pt: pt}
		confirmedSeen, clearedSeen, milSeen := false, false, false
		prev := map[uint16]uint8{}
		for i := 0; i < 200; i++ {
			p := 0.3
			if i > 150 {
				p = 0 // let everything clear
			}
			entries, mil, _, freeze := m.report(p, &s)
			cur := map[uint16]uint8{}
			anyConfirmed := false
			for _, e := range entries {
				cur[e.Code] = e.Status
				switch e.Status {
				case wire.DTCPending:
				case wire.DTCConfirmed, wire.DTCPermanent:
					anyConfirmed, confirmedSeen = true, true
				default:
					t.Fatalf("status %d", e.Status)
				}
				if pt == drivecycle.BEV {
					for _, d := range dtcCatalog {
						if c, _ := encodeDTC(d.code); c == e.Code && d.ice {
							t.Fatalf("BEV raised engine code %s", d.code)
						}
					}
				}
				if ps, ok := prev[e.Code]; ok && ps > e.Status {
					t.Fatalf("code %#04x went from status %d back to %d", e.Code, ps, e.Status)
				}
			}
			for c := range prev {
				if _, ok := cur[c]; !ok {
					clearedSeen = true
				}
			}
			if mil != anyConfirmed {
				t.Fatalf("MIL %v with confirmed=%v", mil, anyConfirmed)
			}
			milSeen = milSeen || mil
			if mil && len(freeze) == 0 {
				t.Fatal("MIL on without freeze frame")
			}
			if len(entries) == 0 && freeze != nil {
				t.Fatal("freeze frame without codes")
			}
			prev = cur
		}
		if !confirmedSeen || !clearedSeen || !milSeen || len(prev) != 0 {
			t.Errorf("%v: confirmed=%v cleared=%v mil=%v left=%v", pt, confirmedSeen, clearedSeen, milSeen, prev)
		}
	}
}

func TestTelemetryFrameEncoding(t *testing.T) {
	if len(signalTable) != NumSignals {
		t.Fatalf("signal table has %d entries, NumSignals = %d", len(signalTable), NumSignals)
	}
	ids := map[uint16]bool{}
	for _, s := range signalTable {
		if ids[s.id] {
			t.Fatalf("duplicate signal id %d", s.id)
		}
		ids[s.id] = true
	}
	if !ids[catalog.Speed] || !ids[catalog.HeatedSteeringWheel] {
		t.Fatal("catalog ids missing")
	}

	m := newTestModel(t, drivecycle.BEV)
	m.Step(90 * time.Second)
	s := m.State()
	f := wire.TelemetryFrame{
		Version: wire.Version, VIN: wire.Ident("TGSVS000000000001"), Seq: 7, TimeMs: 1700000000000,
		Signals: appendSignals(nil, &s, 0, NumSignals),
	}
	b, err := f.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got wire.TelemetryFrame
	if err := wire.DecodeTelemetry(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.VIN.String() != "TGSVS000000000001" || got.Seq != 7 || got.TimeMs != f.TimeMs || len(got.Signals) != NumSignals {
		t.Fatalf("decoded %+v", got)
	}
	for i, sig := range got.Signals {
		if sig != f.Signals[i] {
			t.Errorf("signal %d: %+v != %+v", i, sig, f.Signals[i])
		}
	}
	t.Logf("36-signal frame: %d bytes", len(b))

	// Fewer signals per frame rotate through the whole set.
	seen := map[uint16]int{}
	for k := range 9 {
		for _, sig := range appendSignals(nil, &s, k*32%NumSignals, 32) {
			seen[sig.ID]++
		}
	}
	if len(seen) != NumSignals {
		t.Errorf("rotation covered %d signals", len(seen))
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	if l := h.summary(); l.Count != 0 || l.P99 != 0 {
		t.Fatalf("empty: %+v", l)
	}
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	l := h.summary()
	check := func(name string, got, want time.Duration) {
		if got < want || float64(got) > float64(want)*1.07 {
			t.Errorf("%s = %v, want ~%v", name, got, want)
		}
	}
	check("p50", l.P50, 500*time.Millisecond)
	check("p95", l.P95, 950*time.Millisecond)
	check("p99", l.P99, 990*time.Millisecond)
	if l.Max != time.Second || l.Count != 1000 {
		t.Errorf("max %v count %d", l.Max, l.Count)
	}
	for v := int64(0); v < 1<<20; v = v*3/2 + 1 {
		i := bucketOf(v)
		if bucketUpper(i) < v || (i > 0 && bucketUpper(i-1) >= v) {
			t.Fatalf("value %d in bucket %d [.., %d]", v, i, bucketUpper(i))
		}
	}
	if bucketOf(1<<62) >= histBuckets {
		t.Fatal("overflow bucket out of range")
	}
}

// TestSignalsWithinCatalog drives models of both powertrains for a
// simulated day and checks every reported value against the catalog.
func TestSignalsWithinCatalog(t *testing.T) {
	for seed := int64(1); seed <= 6; seed++ {
		m := drivecycle.NewVehicle(drivecycle.NEDC(), seed, time.Date(2025, 1, 10, 6, 0, 0, 0, time.UTC))
		if seed == 1 {
			_ = m.SetHeatedSeat(3)
			m.SetHeatedSteeringWheel(true)
		}
		var sigs []wire.Signal
		for i := 0; i < 24*3600/10; i++ {
			m.Step(10 * time.Second)
			s := m.State()
			sigs = appendSignals(sigs[:0], &s, 0, NumSignals)
			if len(sigs) != NumSignals {
				t.Fatalf("%d signals", len(sigs))
			}
			checkCatalog(t, sigs)
		}
	}
}
