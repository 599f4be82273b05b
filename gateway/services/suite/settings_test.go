package suite

import (
	"net/netip"
	"reflect"
	"testing"
)

// TestApplyDefaults: a zero Settings gets DefaultSettings' values except the
// booleans (an explicit false cannot be told from absent), so a process
// that starts a Suite without gateway/config runs with the same defaults.
func TestApplyDefaults(t *testing.T) {
	var s Settings
	s.applyDefaults()
	want := DefaultSettings()
	want.Enabled, want.PartnerNATSUsers = false, false
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("zero Settings after applyDefaults = %+v, want %+v", s, want)
	}
	set := Settings{TokenKeyID: "k9", WebhookMaxAttempts: 3}
	set.applyDefaults()
	if set.TokenKeyID != "k9" || set.WebhookMaxAttempts != 3 {
		t.Fatalf("applyDefaults overwrote set values: %+v", set)
	}
}

func TestWebhookAllowSkipsBadEntries(t *testing.T) {
	s := Settings{WebhookAllowCIDRs: []string{"10.20.1.2/16", "nonsense"}}
	if got := s.WebhookAllow(); len(got) != 1 || got[0] != netip.MustParsePrefix("10.20.0.0/16") {
		t.Fatalf("WebhookAllow() = %v", got)
	}
}
