package registry

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	vin1     = "TGSVS000000000001"
	vin2     = "TGSVS000000000002"
	vinOff   = "TGSVS000000000009"
	station1 = "ST-0001"
)

func loadGood(t *testing.T) *Registry {
	t.Helper()
	r, err := Load(filepath.Join("testdata", "good.yaml"))
	if err != nil {
		t.Fatalf("Load good.yaml: %v", err)
	}
	return r
}

func TestLoadGood(t *testing.T) {
	r := loadGood(t)
	if r.Len() != 4 {
		t.Fatalf("Len = %d, want 4", r.Len())
	}
	d, ok := r.Lookup(vin1)
	if !ok || d.Kind != KindVehicle || d.Disabled {
		t.Fatalf("Lookup(%s) = %+v, %v", vin1, d, ok)
	}
	d, ok = r.Lookup(station1)
	if !ok || d.Kind != KindCharger {
		t.Fatalf("Lookup(%s) = %+v, %v", station1, d, ok)
	}
	if d, _ := r.Lookup(vinOff); !d.Disabled {
		t.Fatal("disabled flag lost")
	}
	if _, ok := r.Lookup("TGSVS000000000003"); ok {
		t.Fatal("unknown id found")
	}
	ids := []string{}
	for _, d := range r.Devices() {
		ids = append(ids, d.ID)
	}
	if !slices.IsSorted(ids) || len(ids) != 4 {
		t.Fatalf("Devices() ids = %v", ids)
	}
}

func TestLoadEmptyList(t *testing.T) {
	r, err := Load(filepath.Join("testdata", "empty_list.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 0 {
		t.Fatalf("Len = %d", r.Len())
	}
}

func TestLoadBad(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "bad_*.yaml"))
	if err != nil || len(files) < 15 {
		t.Fatalf("bad testdata: %v %d", err, len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestLoadBadMessages(t *testing.T) {
	tests := map[string]string{
		"bad_unknown_key.yaml":               "field secret not found",
		"bad_top_level_key.yaml":             "field admins not found",
		"bad_duplicate_id.yaml":              "duplicate id",
		"bad_duplicate_key.yaml":             "already defined",
		"bad_kind.yaml":                      `kind "truck"`,
		"bad_hash.yaml":                      "neither a bcrypt hash",
		"bad_hash_cost.yaml":                 "cost",
		"bad_vin.yaml":                       "not a VIN",
		"bad_two_documents.yaml":             "more than one",
		"bad_empty.yaml":                     "empty",
		"bad_no_devices.yaml":                "missing devices",
		"bad_station_id.yaml":                "station id",
		"bad_duplicate_id_across_kinds.yaml": "duplicate id",
	}
	for name, want := range tests {
		_, err := Load(filepath.Join("testdata", name))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want it to contain %q", name, err, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

func TestVerify(t *testing.T) {
	r := loadGood(t)
	tests := []struct {
		id, secret string
		want       error
	}{
		{vin1, "vehicle-secret-1", nil},
		{vin2, "vehicle-secret-2", nil},
		{station1, "charger-secret-1", nil},
		{vin1, "vehicle-secret-2", ErrBadSecret},
		{vin1, "", ErrBadSecret},
		{vin1, strings.Repeat("x", 73), ErrBadSecret},
		{vin1, "vehicle-secret-1" + strings.Repeat("x", 60), ErrBadSecret}, // > 72 bytes: never truncated
		{"TGSVS000000000003", "vehicle-secret-1", ErrUnknownDevice},
		{vinOff, "disabled-secret", ErrDisabled},
	}
	for round := range 2 { // second round exercises the cache
		for _, tt := range tests {
			d, err := r.Verify(tt.id, []byte(tt.secret))
			if tt.want == nil {
				if err != nil || d.ID != tt.id {
					t.Errorf("round %d: Verify(%s) = %+v, %v", round, tt.id, d, err)
				}
				continue
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("round %d: Verify(%s, %q) err = %v, want %v", round, tt.id, tt.secret, err, tt.want)
			}
		}
	}
	r.mu.Lock()
	n := len(r.cache)
	r.mu.Unlock()
	if n != 3 {
		t.Fatalf("cache has %d entries, want 3 (successes only)", n)
	}
}

func TestVerifyCacheSkipsBcrypt(t *testing.T) {
	r := loadGood(t)
	if _, err := r.Verify(vin1, []byte("vehicle-secret-1")); err != nil {
		t.Fatal(err)
	}
	// Occupy every bcrypt slot: a cached verification (good or bad) must not
	// need one, or this would deadlock.
	for range cap(r.bcryptSlots) {
		r.bcryptSlots <- struct{}{}
	}
	defer func() {
		for range cap(r.bcryptSlots) {
			<-r.bcryptSlots
		}
	}()
	if _, err := r.Verify(vin1, []byte("vehicle-secret-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(vin1, []byte("wrong")); !errors.Is(err, ErrBadSecret) {
		t.Fatal(err)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	r := loadGood(t)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			secret := "vehicle-secret-1"
			if i%2 == 1 {
				secret = "bad"
			}
			_, err := r.Verify(vin1, []byte(secret))
			if (err == nil) != (i%2 == 0) {
				t.Errorf("goroutine %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}

func TestHashSecret(t *testing.T) {
	h, err := HashSecret([]byte("s3cret"), 4)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New([]Device{{ID: vin1, Kind: KindVehicle, SecretHash: h}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(vin1, []byte("s3cret")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 73)} {
		if _, err := HashSecret(bad, 4); !errors.Is(err, ErrInvalid) {
			t.Errorf("HashSecret(len %d) err = %v", len(bad), err)
		}
	}
	if _, err := HashSecret([]byte("x"), 3); !errors.Is(err, ErrInvalid) {
		t.Errorf("cost 3 err = %v", err)
	}
}

func TestWriteRoundTrip(t *testing.T) {
	src := loadGood(t).Devices()
	path := filepath.Join(t.TempDir(), "devices.yaml")
	if err := Write(path, src); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Devices(); !slices.Equal(got, src) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, src)
	}
	if _, err := r.Verify(vin1, []byte("vehicle-secret-1")); err != nil {
		t.Fatal(err)
	}
	// Invalid input is refused and leaves the file untouched.
	bad := append(slices.Clone(src), src[0])
	if err := Write(path, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("duplicate write err = %v", err)
	}
	if r2, err := Load(path); err != nil || r2.Len() != len(src) {
		t.Fatalf("file changed by failed write: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	// An empty registry is writable and loadable.
	if err := Write(path, nil); err != nil {
		t.Fatal(err)
	}
	if r3, err := Load(path); err != nil || r3.Len() != 0 {
		t.Fatalf("empty registry: %v", err)
	}
}

func TestReload(t *testing.T) {
	r0 := loadGood(t)
	devs := r0.Devices() // sorted: ST-0001, vin1, vin2, vinOff
	path := filepath.Join(t.TempDir(), "devices.yaml")
	if err := Write(path, devs); err != nil {
		t.Fatal(err)
	}
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(vin1, []byte("vehicle-secret-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(vin2, []byte("vehicle-secret-2")); err != nil {
		t.Fatal(err)
	}

	newHash, err := HashSecret([]byte("rotated"), 4)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]Device{}
	for _, d := range devs {
		byID[d.ID] = d
	}
	st := byID[station1]
	st.Disabled = true
	v1 := byID[vin1]
	v1.SecretHash = newHash
	off := byID[vinOff]
	off.Disabled = false
	added := Device{ID: "TGSVS000000000004", Kind: KindVehicle, SecretHash: newHash}
	// vin2 removed.
	if err := Write(path, []Device{st, v1, off, added}); err != nil {
		t.Fatal(err)
	}
	ch, err := r.Reload()
	if err != nil {
		t.Fatal(err)
	}
	want := Changes{
		Added:    []string{added.ID},
		Removed:  []string{vin2},
		Disabled: []string{station1},
		Enabled:  []string{vinOff},
		Rotated:  []string{vin1},
	}
	if !slices.Equal(ch.Added, want.Added) || !slices.Equal(ch.Removed, want.Removed) ||
		!slices.Equal(ch.Disabled, want.Disabled) || !slices.Equal(ch.Enabled, want.Enabled) ||
		!slices.Equal(ch.Rotated, want.Rotated) || len(ch.KindChanged) != 0 {
		t.Fatalf("changes = %+v, want %+v", ch, want)
	}
	if got := ch.Revoked(); !slices.Equal(got, []string{station1, vin1, vin2}) {
		t.Fatalf("Revoked = %v", got)
	}
	// The cached secret of vin1 no longer verifies; the new one does.
	if _, err := r.Verify(vin1, []byte("vehicle-secret-1")); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("old secret after rotation: %v", err)
	}
	if _, err := r.Verify(vin1, []byte("rotated")); err != nil {
		t.Fatalf("new secret: %v", err)
	}
	if _, err := r.Verify(vin2, []byte("vehicle-secret-2")); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("removed device: %v", err)
	}

	// Kind change.
	ch2 := added
	ch2.Kind = KindCharger
	if err := Write(path, []Device{st, v1, off, ch2}); err != nil {
		t.Fatal(err)
	}
	c, err := r.Reload()
	if err != nil || !slices.Equal(c.KindChanged, []string{added.ID}) {
		t.Fatalf("kind change: %+v %v", c, err)
	}

	// A broken file keeps the current table.
	if err := os.WriteFile(path, []byte("devices: [{id: x}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reload(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("broken reload err = %v", err)
	}
	if r.Len() != 4 {
		t.Fatalf("table replaced by a broken file: %d", r.Len())
	}
	if c, err := r.Reload(); err == nil || !c.Empty() {
		t.Fatal("expected error and empty changes")
	}
}

func TestReloadWithoutPath(t *testing.T) {
	r, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reload(); !errors.Is(err, ErrNoPath) {
		t.Fatalf("err = %v", err)
	}
}

func TestNewRejectsInvalid(t *testing.T) {
	if _, err := New([]Device{{ID: "x", Kind: KindVehicle}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}
