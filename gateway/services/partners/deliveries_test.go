package partners

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/internal/svctest"
)

// TestDeliveriesBounded: the deliveries bucket expires its keys
// (DeliveriesTTL), and GET .../deliveries reads only the bucket's tail:
// the newest statuses among the last `scanned` updates, at most `listed`
// of them, newest first. A partner's statuses older than the window are
// not read at all (before, every key of the partner was listed and read,
// then cut).
func TestDeliveriesBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	roles := svctest.Roles(t, svctest.Bus(t)) // the services on their own users
	log := svctest.Logger()
	reg, err := Open(ctx, svctest.Role(t, roles, natsbus.RolePartners).JetStream(), 1, "", log)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWebhooks(ctx, svctest.Role(t, roles, natsbus.RoleWebhooks).JetStream(), 1, reg, WebhookConfig{}, log)
	if err != nil {
		t.Fatal(err)
	}
	st, err := w.kv.B.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != DeliveriesTTL || DeliveriesTTL <= 0 {
		t.Fatalf("deliveries bucket TTL %v, want %v", st.TTL(), DeliveriesTTL)
	}
	w.listed, w.scanned = 20, 60
	base := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	put := func(p string, i int) {
		t.Helper()
		if err := w.kv.Put(ctx, fmt.Sprintf("%s.t-%04d", p, i), Delivery{Partner: p, TriggerID: fmt.Sprintf("t-%04d", i),
			Status: statusDelivered, Attempts: 1, Updated: base.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		put("old", i) // out of the window once the others are written
	}
	for i := range 100 {
		put("busy", 100+i)
	}
	if err := w.kv.B.Delete(ctx, "busy.t-0199"); err != nil { // a delete marker is no delivery
		t.Fatal(err)
	}
	got, err := w.Deliveries(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 || got[0].TriggerID != "t-0198" || got[19].TriggerID != "t-0179" {
		t.Fatalf("busy: %d deliveries, first %+v", len(got), got[:min(1, len(got))])
	}
	if got, err := w.Deliveries(ctx, "old"); err != nil || len(got) != 0 {
		t.Fatalf("old partner's statuses beyond the window read: %d %v", len(got), err)
	}
	if got, err := w.Deliveries(ctx, "none"); err != nil || len(got) != 0 {
		t.Fatalf("no deliveries: %v %v", got, err)
	}
	put("old", 5)
	if got, err := w.Deliveries(ctx, "old"); err != nil || len(got) != 1 || got[0].TriggerID != "t-0005" {
		t.Fatalf("old partner's new status: %+v %v", got, err)
	}
}
