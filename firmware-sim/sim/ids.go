package sim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/telegate/telegate/broker/registry"
)

// Device kinds in the registry.
const (
	KindVehicle = "vehicle"
	KindCharger = "charger"
)

// Secret returns a device's MQTT password: the lowercase hex encoding of
// HMAC-SHA256 keyed with fleetKey over the device id. The gateway stores
// only a hash of it (see Provision).
func Secret(fleetKey, id string) string {
	m := hmac.New(sha256.New, []byte(fleetKey))
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))
}

// ContractID returns the Plug & Charge contract id a simulated vehicle
// presents to chargers (the session's id tag, next to its VIN):
// "PNC-" + the first 16 hex digits of HMAC-SHA256(fleetKey, "contract:" +
// vin). The gateway attributes a session to the VIN's owner only when its
// id tag is bound to that customer (customers.yaml id_tags), so a charger
// cannot attribute sessions to vehicles by naming their VINs.
func ContractID(fleetKey, vin string) string {
	return "PNC-" + Secret(fleetKey, "contract:"+vin)[:16]
}

// VIN returns the i-th simulated VIN: prefix followed by i zero-padded to a
// total of 17 characters (VIN("TGSVS", 1) = "TGSVS000000000001"). Indices
// start at 1. If i has more digits than fit, the result is longer than 17.
func VIN(prefix string, i int) string {
	return fmt.Sprintf("%s%0*d", prefix, max(VINLength-len(prefix), 0), i)
}

// StationID returns the i-th charging station id: prefix, a dash and i
// zero-padded to four digits (StationID("CS", 1) = "CS-0001").
func StationID(prefix string, i int) string {
	return fmt.Sprintf("%s-%04d", prefix, i)
}

// DeviceEntry is one device in the gateway's registry file.
type DeviceEntry struct {
	ID         string `yaml:"id"`
	Kind       string `yaml:"kind"` // KindVehicle or KindCharger
	SecretHash string `yaml:"secret_hash"`
	Disabled   bool   `yaml:"disabled"`
}

// registryFile is the YAML document written by WriteRegistry.
type registryFile struct {
	Devices []DeviceEntry `yaml:"devices"`
}

// deviceIDs returns the ids of cfg's vehicles then chargers.
func deviceIDs(cfg Config) (vins, stations []string) {
	vins = make([]string, cfg.Vehicles)
	for i := range vins {
		vins[i] = VIN(cfg.VINPrefix, i+1)
	}
	stations = make([]string, cfg.Chargers)
	for i := range stations {
		stations[i] = StationID(cfg.StationPrefix, i+1)
	}
	return vins, stations
}

// Provision returns the registry entries for cfg's vehicles and chargers,
// each with a hash of its Secret: with cost 0 (the default) a machine-secret
// hash (registry.HashMachineSecret: the secrets are 256-bit HMAC outputs, so
// a slow KDF adds nothing and makes cold admission slow, see docs/broker.md),
// otherwise a bcrypt hash at that cost. Hashing runs on all CPUs; bcrypt at
// cost 10 takes tens of milliseconds per device.
func Provision(cfg Config, cost int) ([]DeviceEntry, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cost != 0 && (cost < bcrypt.MinCost || cost > bcrypt.MaxCost) {
		return nil, fmt.Errorf("%w: bcrypt cost %d, want %d..%d", ErrInvalidConfig, cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	vins, stations := deviceIDs(cfg)
	entries := make([]DeviceEntry, 0, len(vins)+len(stations))
	for _, id := range vins {
		entries = append(entries, DeviceEntry{ID: id, Kind: KindVehicle})
	}
	for _, id := range stations {
		entries = append(entries, DeviceEntry{ID: id, Kind: KindCharger})
	}

	var (
		wg       sync.WaitGroup
		next     = make(chan int)
		errOnce  sync.Once
		firstErr error
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				h, err := hashSecret([]byte(Secret(cfg.FleetKey, entries[i].ID)), cost)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("sim: hash secret of %s: %w", entries[i].ID, err) })
					continue
				}
				entries[i].SecretHash = h
			}
		})
	}
	for i := range entries {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return entries, nil
}

// hashSecret hashes a device secret: a machine-secret hash for cost 0,
// bcrypt at cost otherwise.
func hashSecret(secret []byte, cost int) (string, error) {
	if cost == 0 {
		return registry.HashMachineSecret(secret)
	}
	h, err := bcrypt.GenerateFromPassword(secret, cost)
	return string(h), err
}

// WriteRegistry writes entries as the gateway's device registry:
//
//	devices:
//	  - id: TGSVS000000000001
//	    kind: vehicle
//	    secret_hash: $2a$10$...
//	    disabled: false
//
// The file is written to a temporary file in the same directory, synced
// and renamed over path, with mode 0600.
func WriteRegistry(path string, entries []DeviceEntry) error {
	if entries == nil {
		entries = []DeviceEntry{}
	}
	b, err := yaml.Marshal(registryFile{Devices: entries})
	if err != nil {
		return fmt.Errorf("sim: encode registry: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("sim: write registry: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("sim: write registry: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sim: write registry: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sim: write registry: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("sim: write registry: %w", err)
	}
	return nil
}
