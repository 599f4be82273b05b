package registry

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Machine-secret hashes.
//
// Device secrets are machine-generated (firmware-sim derives 256-bit
// secrets; a factory provisioning tool must generate at least
// MinMachineSecretLength random characters). Guessing such a secret is
// infeasible whatever the hash costs, so a slow password KDF protects
// nothing more than a fast keyed hash does, while it makes every cold
// admission cost ~60 ms of CPU (bcrypt cost 10): 100,000 vehicles moving to
// a fresh replica after a failover would wait an hour. A machine-secret hash
// is therefore
//
//	$tgm1$<salt>$<mac>
//
// where salt is 16 random bytes and mac is HMAC-SHA256(key=salt, secret),
// both in unpadded standard base64 (22 and 43 characters). Verifying costs
// about a microsecond. The salt makes equal secrets hash differently and
// precomputed tables useless; a leaked registry reveals nothing usable
// because the secrets have at least 128 bits of entropy.
//
// bcrypt hashes ($2a$/$2b$/$2y$) remain accepted, for human-chosen secrets
// and existing registries; both kinds may be mixed in one file and during a
// rotation (secret_hash of one kind, previous_secret_hash of the other).

// MachineHashPrefix starts every machine-secret hash.
const MachineHashPrefix = "$tgm1$"

// MinMachineSecretLength is the shortest secret a machine-secret hash is
// made for or verified against: 32 characters (e.g. 16 random bytes in hex,
// 128 bits). Shorter secrets must use bcrypt (HashSecret).
const MinMachineSecretLength = 32

const (
	machineSaltLen = 16
	machineHashLen = len(MachineHashPrefix) + 22 + 1 + 43
)

var b64 = base64.RawStdEncoding

// HashMachineSecret returns the machine-secret hash of secret, which must be
// MinMachineSecretLength to MaxSecretLength bytes of a machine-generated,
// high-entropy secret.
func HashMachineSecret(secret []byte) (string, error) {
	if len(secret) < MinMachineSecretLength || len(secret) > MaxSecretLength {
		return "", fmt.Errorf("%w: a machine secret must be %d-%d bytes (use bcrypt for shorter, human-chosen secrets)",
			ErrInvalid, MinMachineSecretLength, MaxSecretLength)
	}
	var salt [machineSaltLen]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return "", fmt.Errorf("registry: salt: %w", err)
	}
	mac := machineMAC(salt[:], secret)
	return MachineHashPrefix + b64.EncodeToString(salt[:]) + "$" + b64.EncodeToString(mac[:]), nil
}

func machineMAC(salt, secret []byte) [sha256.Size]byte {
	m := hmac.New(sha256.New, salt)
	m.Write(secret)
	var out [sha256.Size]byte
	m.Sum(out[:0])
	return out
}

// isMachineHash reports whether h has the machine-secret prefix.
func isMachineHash(h string) bool { return strings.HasPrefix(h, MachineHashPrefix) }

// errMachineHash describes a malformed machine-secret hash.
var errMachineHash = errors.New("secret_hash is not a machine-secret hash ($tgm1$<22 base64 salt>$<43 base64 mac>)")

// parseMachineHash splits a machine-secret hash into salt and mac.
func parseMachineHash(h string) (salt, mac []byte, err error) {
	if len(h) != machineHashLen || !isMachineHash(h) {
		return nil, nil, errMachineHash
	}
	s, m, ok := strings.Cut(h[len(MachineHashPrefix):], "$")
	if !ok {
		return nil, nil, errMachineHash
	}
	if salt, err = b64.DecodeString(s); err != nil || len(salt) != machineSaltLen {
		return nil, nil, errMachineHash
	}
	if mac, err = b64.DecodeString(m); err != nil || len(mac) != sha256.Size {
		return nil, nil, errMachineHash
	}
	return salt, mac, nil
}

// compareMachineHash reports whether secret matches machine-secret hash h,
// in time independent of where they differ. Secrets shorter than
// MinMachineSecretLength never match.
func compareMachineHash(h string, secret []byte) bool {
	salt, mac, err := parseMachineHash(h)
	if err != nil || len(secret) < MinMachineSecretLength {
		return false
	}
	got := machineMAC(salt, secret)
	return hmac.Equal(got[:], mac)
}
