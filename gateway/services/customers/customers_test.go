package customers

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/svctest"
)

// TestLegacyRecordsMigrated: records an older version stored under the
// customer id (c.{id} without a ref, erased.{id}) are moved to pseudonymous
// keys on open; no key of the bucket names a customer afterwards, the
// customer works (ref, lookups) and the erased one stays erased.
func TestLegacyRecordsMigrated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus)        // the services on their own users
	js := svctest.Ops(t, bus).JetStream() // the test's own reads and writes
	kv, err := svc.OpenKV(ctx, js, Bucket, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	old := Customer{ID: "legacy-1", Vehicles: []Vehicle{{VIN: "TGSVSLEGACY000001"}}, TokenSalt: "00"}
	b, _ := json.Marshal(old)
	if _, err := kv.B.Put(ctx, "c.legacy-1", b); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.B.Put(ctx, "erased.legacy-2", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, svctest.Role(t, roles, natsbus.RoleCustomers).JetStream(), 1, nil, svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := r.Lookup("TGSVSLEGACY000001"); !ok || o.Ref == "" || o.CustomerID != "legacy-1" {
		t.Fatalf("migrated owner %+v %v", o, ok)
	}
	if !r.Erased("legacy-2") || r.Register(ctx, Registration{ID: "legacy-2"}, "test") == nil {
		t.Fatal("legacy tombstone lost")
	}
	w, err := kv.B.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	for u := range w.Updates() {
		if u == nil {
			break
		}
		if strings.Contains(u.Key(), "legacy") {
			t.Fatalf("key %s (%v) names a customer", u.Key(), u.Operation())
		}
	}
	// The reopened registry finds the migrated record again.
	r2, err := Open(ctx, svctest.Role(t, roles, natsbus.RoleCustomers).JetStream(), 1, nil, svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if r2.Ref("legacy-1") != r.Ref("legacy-1") {
		t.Fatal("ref changed on reopen")
	}
}
