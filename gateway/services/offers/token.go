package offers

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrNoTokenKey is returned when no token key is configured.
var ErrNoTokenKey = errors.New("offers: no token key")

// TokenKey is one HMAC key for driver tokens. Keys rotate: the first key
// signs new tokens; its id is part of the token so partners see a new
// token for the same driver after a rotation (and old ones stop matching).
type TokenKey struct {
	ID     string
	Secret []byte
}

// Tokens computes per-partner pseudonymous driver tokens.
type Tokens struct {
	keys []TokenKey
}

// NewTokens returns Tokens; keys[0] is current.
func NewTokens(keys []TokenKey) (*Tokens, error) {
	if len(keys) == 0 || len(keys[0].Secret) < 16 {
		return nil, ErrNoTokenKey
	}
	return &Tokens{keys: keys}, nil
}

// Driver returns the token of a driver (customer id and its per-customer
// salt, which erasure deletes) for partner: "{key id}.{base64url(HMAC-SHA256
// (key, partner ‖ salt ‖ customer))[:22]}". Different partners get
// unlinkable tokens; the customer id cannot be derived from a token.
func (t *Tokens) Driver(partner, customerID, salt string) string {
	k := t.keys[0]
	m := hmac.New(sha256.New, k.Secret)
	fmt.Fprintf(m, "%d:%s|%d:%s|%d:%s", len(partner), partner, len(salt), salt, len(customerID), customerID)
	return k.ID + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))[:22]
}

// CommandID returns the id of the head-unit command that carries offer
// offerID: "offer-" + hex(HMAC-SHA256(current key, "offer-cmd|" ‖
// offerID))[:32] (128 bits). The offer id derives from what the charger
// knows (station, session, partner, venue); the command id does not
// without the key, so a charger cannot predict (and pre-empt or forge
// acknowledgements of) a vehicle's offer commands. It is stable for an
// offer, so a redelivered session re-sends the same id; the engine also
// stores it in the offer record, so a key rotation does not change it.
func (t *Tokens) CommandID(offerID string) string {
	m := hmac.New(sha256.New, t.keys[0].Secret)
	m.Write([]byte("offer-cmd|" + offerID))
	return "offer-" + hex.EncodeToString(m.Sum(nil))[:32]
}
