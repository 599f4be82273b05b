package registry

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRotationLoad(t *testing.T) {
	r, err := Load(filepath.Join("testdata", "good_rotation.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
	d1, _ := r.Lookup(vin1)
	if d1.PreviousSecretHash == "" || !d1.PreviousValidUntil.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("rotation fields lost: %+v", d1)
	}
	const vin3 = "TGSVS000000000003"
	tests := []struct {
		id, secret string
		hash       string // which hash must match: "cur", "prev" or "" (refused)
	}{
		{vin1, "vehicle-secret-2", "cur"},
		{vin1, "vehicle-secret-1", "prev"},
		{vin1, "other", ""},
		{vin2, "vehicle-secret-1", "cur"},
		{vin2, "vehicle-secret-2", "prev"}, // no expiry
		{vin3, "vehicle-secret-2", "cur"},
		{vin3, "vehicle-secret-1", ""}, // previous expired in 2020
	}
	for round := range 2 { // the second round is served by the cache
		for _, tt := range tests {
			d, h, err := r.VerifyHash(tt.id, []byte(tt.secret))
			switch tt.hash {
			case "":
				if !errors.Is(err, ErrBadSecret) {
					t.Errorf("round %d: %s %q: err %v, want ErrBadSecret", round, tt.id, tt.secret, err)
				}
			case "cur", "prev":
				want := d.SecretHash
				if tt.hash == "prev" {
					want = d.PreviousSecretHash
				}
				if err != nil || h != want {
					t.Errorf("round %d: %s %q: %v, matched %q want %s", round, tt.id, tt.secret, err, h, tt.hash)
				}
			}
		}
	}
	if n, ok := r.NextExpiry(r.now()); !ok || n.Year() != 2030 {
		t.Fatalf("NextExpiry = %v %v", n, ok)
	}
	// After the previous secret's expiry: refused even though cached.
	r.now = func() time.Time { return time.Date(2030, 1, 1, 0, 0, 1, 0, time.UTC) }
	if _, err := r.Verify(vin1, []byte("vehicle-secret-1")); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("expired previous secret accepted: %v", err)
	}
	if _, err := r.Verify(vin1, []byte("vehicle-secret-2")); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.NextExpiry(r.now()); ok {
		t.Fatal("NextExpiry after every expiry")
	}
	if d1.Accepts(d1.PreviousSecretHash, r.now()) || !d1.Accepts(d1.SecretHash, r.now()) || d1.Accepts("", r.now()) {
		t.Fatal("Accepts")
	}
}

func TestRotationBadMessages(t *testing.T) {
	tests := map[string]string{
		"bad_previous_hash.yaml":                "previous_secret_hash is neither a bcrypt hash",
		"bad_previous_equals_current.yaml":      "previous_secret_hash equals secret_hash",
		"bad_valid_until_without_previous.yaml": "previous_valid_until without previous_secret_hash",
		"bad_valid_until_not_rfc3339.yaml":      "not an RFC 3339 time",
		"bad_valid_until_not_scalar.yaml":       "want an RFC 3339 time",
		"bad_previous_key_typo.yaml":            "field previous_hash not found",
	}
	for name, want := range tests {
		_, err := Load(filepath.Join("testdata", name))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want ErrInvalid containing %q", name, err, want)
		}
	}
}

// TestRotationReload: the whole rotation through Write and Reload; the
// cache never keeps a secret whose hash left the file.
func TestRotationReload(t *testing.T) {
	oldHash, _ := HashSecret([]byte("old"), 4)
	newHash, _ := HashSecret([]byte("new"), 4)
	path := filepath.Join(t.TempDir(), "devices.yaml")
	d := Device{ID: vin1, Kind: KindVehicle, SecretHash: oldHash}
	if err := Write(path, []Device{d}); err != nil {
		t.Fatal(err)
	}
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(vin1, []byte("old")); err != nil {
		t.Fatal(err)
	}
	// Rotate: new current, old as previous for a day.
	until := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	d = Device{ID: vin1, Kind: KindVehicle, SecretHash: newHash, PreviousSecretHash: oldHash,
		PreviousValidUntil: Timestamp{until}}
	if err := Write(path, []Device{d}); err != nil {
		t.Fatal(err)
	}
	ch, err := r.Reload()
	if err != nil || len(ch.Rotated) != 1 {
		t.Fatalf("%+v %v", ch, err)
	}
	got, _ := r.Lookup(vin1)
	if !got.PreviousValidUntil.Equal(until) {
		t.Fatalf("valid until %v, want %v", got.PreviousValidUntil, until)
	}
	for _, s := range []string{"old", "new", "old", "new"} {
		if _, err := r.Verify(vin1, []byte(s)); err != nil {
			t.Fatalf("%s during rotation: %v", s, err)
		}
	}
	// End the rotation: previous removed.
	if err := Write(path, []Device{{ID: vin1, Kind: KindVehicle, SecretHash: newHash}}); err != nil {
		t.Fatal(err)
	}
	if ch, err := r.Reload(); err != nil || len(ch.Rotated) != 1 {
		t.Fatalf("%+v %v", ch, err)
	}
	if _, err := r.Verify(vin1, []byte("old")); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("old secret after the rotation ended: %v", err)
	}
	if _, err := r.Verify(vin1, []byte("new")); err != nil {
		t.Fatal(err)
	}
}
