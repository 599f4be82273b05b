package registry

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const machineSecret = "8f1c2e0a9b7d4c3e5f6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a" // 64 hex chars, like firmware-sim's

func TestMachineHashVerify(t *testing.T) {
	h, err := HashMachineSecret([]byte(machineSecret))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, MachineHashPrefix) || len(h) != machineHashLen {
		t.Fatalf("hash %q: want prefix %q and %d characters", h, MachineHashPrefix, machineHashLen)
	}
	h2, _ := HashMachineSecret([]byte(machineSecret))
	if h == h2 {
		t.Fatal("two hashes of one secret are equal: salt missing")
	}
	r, err := New([]Device{{ID: vin1, Kind: KindVehicle, SecretHash: h}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(vin1, []byte(machineSecret)); err != nil {
		t.Fatalf("right secret refused: %v", err)
	}
	for _, bad := range []string{machineSecret[:63] + "b", machineSecret[:32], "x", strings.ToUpper(machineSecret)} {
		if _, err := r.Verify(vin1, []byte(bad)); !errors.Is(err, ErrBadSecret) {
			t.Errorf("secret %q: err = %v, want ErrBadSecret", bad, err)
		}
	}
}

func TestMachineHashRefusesShortSecrets(t *testing.T) {
	if _, err := HashMachineSecret([]byte(strings.Repeat("a", MinMachineSecretLength-1))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short secret: err = %v, want ErrInvalid", err)
	}
	if _, err := HashMachineSecret([]byte(strings.Repeat("a", MaxSecretLength+1))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("long secret: err = %v, want ErrInvalid", err)
	}
	// A hand-made machine hash of a short (guessable) secret never verifies.
	salt := []byte("0123456789abcdef")
	mac := machineMAC(salt, []byte("short"))
	h := MachineHashPrefix + b64.EncodeToString(salt) + "$" + b64.EncodeToString(mac[:])
	r, err := New([]Device{{ID: vin1, Kind: KindVehicle, SecretHash: h}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(vin1, []byte("short")); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("short secret against a machine hash: err = %v, want ErrBadSecret", err)
	}
}

func TestMachineHashMalformed(t *testing.T) {
	good, _ := HashMachineSecret([]byte(machineSecret))
	for name, h := range map[string]string{
		"truncated":   good[:len(good)-1],
		"bad base64":  good[:len(MachineHashPrefix)] + "!" + good[len(MachineHashPrefix)+1:],
		"no dollar":   strings.Replace(good[len(MachineHashPrefix):], "$", "x", 1) + "x",
		"wrong epoch": "$tgm2$" + good[len(MachineHashPrefix):],
	} {
		_, err := New([]Device{{ID: vin1, Kind: KindVehicle, SecretHash: h}})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "secret_hash") {
			t.Errorf("%s (%q): err = %v, want ErrInvalid naming secret_hash", name, h, err)
		}
	}
}

// A rotation may move a device from a bcrypt secret to a machine secret:
// both are accepted until previous_valid_until.
func TestMachineHashRotationFromBcrypt(t *testing.T) {
	old, err := HashSecret([]byte("old-human-secret"), 4)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := HashMachineSecret([]byte(machineSecret))
	until := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err := New([]Device{{ID: vin1, Kind: KindVehicle, SecretHash: cur, PreviousSecretHash: old, PreviousValidUntil: Timestamp{until}}})
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return until.Add(-time.Hour) }
	for _, s := range []string{machineSecret, "old-human-secret"} {
		if _, err := r.Verify(vin1, []byte(s)); err != nil {
			t.Errorf("before expiry, %q refused: %v", s, err)
		}
	}
	r.now = func() time.Time { return until.Add(time.Hour) }
	if _, err := r.Verify(vin1, []byte("old-human-secret")); !errors.Is(err, ErrBadSecret) {
		t.Errorf("after expiry, old secret: err = %v, want ErrBadSecret", err)
	}
	if _, err := r.Verify(vin1, []byte(machineSecret)); err != nil {
		t.Errorf("after expiry, new secret refused: %v", err)
	}
}

// BenchmarkVerifyCold measures the first verification of a device's secret
// (nothing cached), which is what every device costs when it moves to a
// fresh replica: a machine-secret hash against bcrypt at cost 10.
func BenchmarkVerifyCold(b *testing.B) {
	for _, kind := range []string{"machine", "bcrypt10"} {
		b.Run(kind, func(b *testing.B) {
			var h string
			var err error
			if kind == "machine" {
				h, err = HashMachineSecret([]byte(machineSecret))
			} else {
				h, err = HashSecret([]byte(machineSecret), 10)
			}
			if err != nil {
				b.Fatal(err)
			}
			n := min(b.N, 100_000)
			devs := make([]Device, n)
			for i := range devs {
				devs[i] = Device{ID: fmt.Sprintf("TGSVS%012d", i+1), Kind: KindVehicle, SecretHash: h}
			}
			r, err := New(devs)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				if i%n == 0 && i > 0 {
					b.StopTimer()
					r.mu.Lock()
					clear(r.cache)
					r.mu.Unlock()
					b.StartTimer()
				}
				if _, err := r.Verify(devs[i%n].ID, []byte(machineSecret)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
		})
	}
}
