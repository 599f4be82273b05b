package customers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// tombstonePrefix is the bucket key prefix of hashed erasure tombstones:
// tombstonePrefix + hex(HMAC-SHA256(tombstone key, customer id)). The
// tombstone says "this id was erased" to whoever already knows the id,
// without storing the id itself.
const tombstonePrefix = "tomb."

// tombKeys holds the registries' tombstone keys (owned by this file, so
// the Registry struct stays untouched).
var tombKeys sync.Map // *Registry -> []byte

// SetTombstoneKey sets the server key of hashed erasure tombstones (the
// services derive it from their token key). Without one, erasures leave no
// hashed tombstone and GET answers 404 for erased customers.
func (r *Registry) SetTombstoneKey(serverKey []byte) {
	m := hmac.New(sha256.New, serverKey)
	m.Write([]byte("telegate customers erasure tombstone v1"))
	tombKeys.Store(r, m.Sum(nil))
}

// tombstone returns id's hashed tombstone key ("" without a key).
func (r *Registry) tombstone(id string) string {
	k, ok := tombKeys.Load(r)
	if !ok {
		return ""
	}
	m := hmac.New(sha256.New, k.([]byte))
	m.Write([]byte(id))
	return tombstonePrefix + hex.EncodeToString(m.Sum(nil))
}

// putTombstone records id's erasure under its hashed key.
func (r *Registry) putTombstone(ctx context.Context, id string) error {
	key := r.tombstone(id)
	if key == "" {
		return nil
	}
	return r.kv.Put(ctx, key, map[string]any{"erased_at": r.clock.Now().UTC().Truncate(24 * time.Hour)})
}

// ErasedTombstone reports whether a hashed erasure tombstone exists for id
// (read from the bucket, so erasures by other replicas count).
func (r *Registry) ErasedTombstone(ctx context.Context, id string) bool {
	key := r.tombstone(id)
	if key == "" {
		return false
	}
	var v map[string]any
	_, err := r.kv.Get(ctx, key, &v)
	return err == nil
}
