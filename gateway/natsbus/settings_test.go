package natsbus

import "testing"

// TestEmbeddedPartnerLimits: the partner_max_* settings map onto the
// account limits, and the defaults' zeros mean DefaultPartnerLimits.
func TestEmbeddedPartnerLimits(t *testing.T) {
	e := EmbeddedSettings{PartnerMaxConnections: 2, PartnerMaxSubscriptions: 8, PartnerMaxPayload: 1024}
	if got := e.PartnerLimits(); got != (PartnerLimits{MaxConnections: 2, MaxSubscriptions: 8, MaxPayload: 1024}) {
		t.Fatalf("PartnerLimits() = %+v", got)
	}
	if got := DefaultSettings().Embedded.PartnerLimits().WithDefaults(); got != DefaultPartnerLimits {
		t.Fatalf("default partner limits = %+v, want %+v", got, DefaultPartnerLimits)
	}
}
