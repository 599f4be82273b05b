package partners_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/services/partners"
	"github.com/telegate/telegate/internal/svctest"
	"github.com/telegate/telegate/internal/testenv"
)

// TestRegistryReplicasShareChanges: two replicas (registries on two nodes
// of a 3-node JetStream cluster). What the API stores through replica A (a
// new partner, a rotated API token, a sold-out switch) reaches replica B,
// whose OnChange hooks (API tokens, partner NATS accounts) run; a revoked
// token is gone on B too. Availability switches win over a later partner
// write on both; an invalid bucket entry is ignored; a deleted key falls
// back to the partners file.
func TestRegistryReplicasShareChanges(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	file := filepath.Join(t.TempDir(), "partners.yaml")
	if err := os.WriteFile(file, []byte("partners:\n  - id: filecafe\n    name: From the file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	busA, busB := svctest.ClusterBus(t, c, 0), svctest.ClusterBus(t, c, 1)
	a, err := partners.Open(ctx, busA.JetStream(), 3, file, svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	b, err := partners.Open(ctx, busB.JetStream(), 3, file, svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	var changes atomic.Int64
	b.OnChange(func() { changes.Add(1) })
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	tok1, tok2 := strings.Repeat("a", 64), strings.Repeat("b", 64)
	cafe := partners.Partner{ID: "cafe", Name: "Cafe", APITokenSHA256: tok1,
		Venues: []partners.Venue{{ID: "v1", Name: "Cafe 1", RadiusM: 300, TimeZone: "Europe/Berlin", DailyCap: 1, Available: true,
			Hours: []partners.Hours{{Days: []string{"mon"}, Open: "08:00", Close: "18:00"}}, Offer: partners.Offer{Text: "Coffee", Code: "C1"}}}}
	if err := a.Put(ctx, cafe); err != nil {
		t.Fatal(err)
	}
	svctest.Eventually(t, "partner registered on A seen by B", func() error {
		if p, ok := b.Get("cafe"); !ok || p.APITokenSHA256 != tok1 {
			return fmt.Errorf("B: %+v %v", p, ok)
		}
		if changes.Load() == 0 {
			return fmt.Errorf("B's OnChange not called")
		}
		return nil
	})
	cafe.APITokenSHA256 = tok2 // rotation: the old token must stop working everywhere
	if err := a.Put(ctx, cafe); err != nil {
		t.Fatal(err)
	}
	svctest.Eventually(t, "rotated token on B", func() error {
		if p, _ := b.Get("cafe"); p.APITokenSHA256 != tok2 {
			return fmt.Errorf("B still has token %s", p.APITokenSHA256)
		}
		return nil
	})
	if err := a.SetAvailability(ctx, "cafe", "v1", false); err != nil {
		t.Fatal(err)
	}
	svctest.Eventually(t, "sold out on B", func() error {
		if p, _ := b.Get("cafe"); p.Venues[0].Available {
			return fmt.Errorf("B: venue still available")
		}
		return nil
	})
	// A partner rewritten with available: true keeps the sold-out switch,
	// on both replicas (the switch is its own key and wins).
	if err := a.Put(ctx, cafe); err != nil {
		t.Fatal(err)
	}
	if p, _ := a.Get("cafe"); p.Venues[0].Available {
		t.Fatal("A: partner write undid the sold-out switch")
	}
	kv, err := busA.JetStream().KeyValue(ctx, partners.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	// An entry whose id does not match its key is ignored.
	if _, err := kv.Put(ctx, "p.evil", []byte(`{"id":"cafe","name":"hijack"}`)); err != nil {
		t.Fatal(err)
	}
	// The file's partner overridden through the API, then the key deleted:
	// back to the file's version.
	if err := a.Put(ctx, partners.Partner{ID: "filecafe", Name: "From the API"}); err != nil {
		t.Fatal(err)
	}
	svctest.Eventually(t, "override on B", func() error {
		if p, _ := b.Get("filecafe"); p.Name != "From the API" {
			return fmt.Errorf("B: %q", p.Name)
		}
		return nil
	})
	if err := kv.Delete(ctx, "p.filecafe"); err != nil {
		t.Fatal(err)
	}
	svctest.Eventually(t, "file version back on B", func() error {
		if p, _ := b.Get("filecafe"); p.Name != "From the file" {
			return fmt.Errorf("B: %q", p.Name)
		}
		return nil
	})
	if _, ok := b.Get("evil"); ok {
		t.Fatal("invalid entry applied")
	}
	if p, _ := b.Get("cafe"); p.Name != "Cafe" || p.Venues[0].Available {
		t.Fatalf("B's cafe: %+v", p)
	}
}
