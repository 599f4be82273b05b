package acl

import "testing"

const (
	vin   = "TGSVS000000000001"
	other = "TGSVS000000000002"
	st    = "ST-0001"
)

func TestValidID(t *testing.T) {
	tests := []struct {
		kind, id string
		want     bool
	}{
		{KindVehicle, vin, true},
		{KindVehicle, "1HGCM82633A004352", true},
		{KindVehicle, "TGSVS00000000000", false},   // 16 chars
		{KindVehicle, "TGSVS0000000000011", false}, // 18 chars
		{KindVehicle, "TGSVI000000000001", false},  // I
		{KindVehicle, "TGSVO000000000001", false},  // O
		{KindVehicle, "TGSVQ000000000001", false},  // Q
		{KindVehicle, "tgsvs000000000001", false},  // lower case
		{KindVehicle, "TGSVS00000000000+", false},
		{KindVehicle, "TGSVS00000000000#", false},
		{KindVehicle, "TGSVS00000000000/", false},
		{KindVehicle, "TGSVS00000000000\x00", false},
		{KindVehicle, "", false},
		{KindCharger, st, true},
		{KindCharger, "a", true},
		{KindCharger, "station.7_b", true},
		{KindCharger, "", false},
		{KindCharger, "ST/1", false},
		{KindCharger, "ST+1", false},
		{KindCharger, "ST#1", false},
		{KindCharger, "$SYS", false},
		{KindCharger, "ST 1", false},
		{KindCharger, "ST\x001", false},
		{KindCharger, "Ä", false},
		{KindCharger, string(make([]byte, 65)), false},
		{"truck", vin, false},
		{"", vin, false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.kind, tt.id); got != tt.want {
			t.Errorf("ValidID(%q, %q) = %v, want %v", tt.kind, tt.id, got, tt.want)
		}
	}
	long := make([]byte, 64)
	for i := range long {
		long[i] = 'a'
	}
	if !ValidID(KindCharger, string(long)) {
		t.Error("64-char station id rejected")
	}
	if ValidID(KindCharger, string(long)+"a") {
		t.Error("65-char station id accepted")
	}
}

func TestCanPublish(t *testing.T) {
	tests := []struct {
		kind, id, topic string
		want            bool
	}{
		// allowed leaves
		{KindVehicle, vin, "vehicles/" + vin + "/telemetry", true},
		{KindVehicle, vin, "vehicles/" + vin + "/diag", true},
		{KindVehicle, vin, "vehicles/" + vin + "/events", true},
		{KindVehicle, vin, "vehicles/" + vin + "/cmd-ack", true},
		{KindCharger, st, "chargers/" + st + "/session", true},
		{KindCharger, st, "chargers/" + st + "/status", true},

		// other device
		{KindVehicle, vin, "vehicles/" + other + "/telemetry", false},
		{KindCharger, st, "chargers/ST-0002/session", false},
		// wrong kind's tree / leaves
		{KindVehicle, vin, "chargers/" + vin + "/session", false},
		{KindCharger, st, "vehicles/" + st + "/telemetry", false},
		{KindCharger, st, "chargers/" + st + "/telemetry", false},
		{KindVehicle, vin, "vehicles/" + vin + "/session", false},
		// commands are cloud-to-device only
		{KindVehicle, vin, "vehicles/" + vin + "/cmd", false},
		{KindVehicle, vin, "vehicles/" + vin + "/cmd/x", false},
		{KindCharger, st, "chargers/" + st + "/cmd/x", false},

		// prefix tricks
		{KindCharger, "ABC", "chargers/ABCD/status", false},
		{KindCharger, "ABCD", "chargers/ABC/status", false},
		{KindCharger, "ABC", "chargers/ABC/statuses", false},
		{KindCharger, "ABC", "chargers/ABC/statu", false},
		{KindCharger, "ABC", "chargers/ABC/status/", false},
		{KindCharger, "ABC", "chargers/ABC/status/x", false},
		{KindCharger, "ABC", "chargers/ABC//status", false},
		{KindCharger, "ABC", "chargers//ABC/status", false},
		{KindCharger, "ABC", "/chargers/ABC/status", false},
		{KindCharger, "ABC", "chargersX/ABC/status", false},
		{KindCharger, "ABC", "Chargers/ABC/status", false},
		{KindCharger, "ABC", "chargers/abc/status", false},
		{KindCharger, "ABC", "chargers/ABC/status\x00", false},
		{KindCharger, "ABC", "chargers/ABC\x00/status", false},
		{KindVehicle, vin, "vehicles/" + vin + "/telemetry2", false},
		{KindVehicle, vin, "vehicles/" + vin + "/telemetry/extra", false},
		{KindVehicle, vin, "vehicles/" + vin + "1/telemetry", false},
		{KindVehicle, vin, "vehicles/" + vin[:16] + "/telemetry", false},
		{KindVehicle, vin, "vehicles/" + vin, false},
		{KindVehicle, vin, "vehicles/" + vin + "/", false},
		{KindVehicle, vin, "vehicles/", false},
		{KindVehicle, vin, "vehicles", false},
		{KindVehicle, vin, "", false},

		// wildcards are never valid in a publish topic
		{KindVehicle, vin, "vehicles/" + vin + "/#", false},
		{KindVehicle, vin, "vehicles/" + vin + "/+", false},
		{KindVehicle, vin, "vehicles/+/telemetry", false},
		{KindVehicle, vin, "#", false},
		{KindVehicle, vin, "+/" + vin + "/telemetry", false},

		// system and shared prefixes
		{KindVehicle, vin, "$SYS/broker/version", false},
		{KindVehicle, vin, "$share/g/vehicles/" + vin + "/telemetry", false},

		// invalid identities never match anything
		{KindVehicle, "+", "vehicles/+/telemetry", false},
		{KindVehicle, "#", "vehicles/#/telemetry", false},
		{KindCharger, "", "chargers//status", false},
		{KindCharger, "A/B", "chargers/A/B/status", false},
		{KindCharger, "A\x00", "chargers/A\x00/status", false},
		{"admin", vin, "vehicles/" + vin + "/telemetry", false},
		{"", vin, "vehicles/" + vin + "/telemetry", false},
	}
	for _, tt := range tests {
		if got := CanPublish(tt.kind, tt.id, tt.topic); got != tt.want {
			t.Errorf("CanPublish(%q, %q, %q) = %v, want %v", tt.kind, tt.id, tt.topic, got, tt.want)
		}
	}
}

func TestCanSubscribe(t *testing.T) {
	vc := "vehicles/" + vin + "/cmd"
	tests := []struct {
		kind, id, filter string
		want             bool
	}{
		{KindVehicle, vin, vc + "/#", true},
		{KindVehicle, vin, vc + "/+", true},
		{KindVehicle, vin, vc + "/offer", true},
		{KindVehicle, vin, vc + "/feature/heated-seats", true},
		{KindVehicle, vin, vc + "/+/ack", true},
		{KindVehicle, vin, vc + "/+/#", true},
		{KindVehicle, vin, vc + "/a/b/c/d/e/f/g/h", true},
		{KindCharger, st, "chargers/" + st + "/cmd/#", true},
		{KindCharger, st, "chargers/" + st + "/cmd/start", true},

		// outside cmd/
		{KindVehicle, vin, "vehicles/" + vin + "/#", false},
		{KindVehicle, vin, "vehicles/" + vin + "/+", false},
		{KindVehicle, vin, "vehicles/" + vin + "/telemetry", false},
		{KindVehicle, vin, "vehicles/" + vin + "/cmd-ack", false},
		{KindVehicle, vin, vc, false},
		{KindVehicle, vin, vc + "/", false},
		{KindVehicle, vin, vc + "#", false},
		{KindVehicle, vin, vc + "+", false},
		{KindVehicle, vin, vc + "x/#", false},
		{KindVehicle, vin, "vehicles/" + vin + "/+/#", false},
		{KindVehicle, vin, "#", false},
		{KindVehicle, vin, "+", false},
		{KindVehicle, vin, "+/+/+", false},
		{KindVehicle, vin, "vehicles/#", false},
		{KindVehicle, vin, "vehicles/+/cmd/#", false},
		{KindVehicle, vin, "vehicles/+/cmd/offer", false},
		{KindVehicle, vin, "vehicles/" + other + "/cmd/#", false},
		{KindCharger, st, "vehicles/" + vin + "/cmd/#", false},
		{KindVehicle, vin, "chargers/" + vin + "/cmd/#", false},

		// prefix tricks
		{KindCharger, "ABC", "chargers/ABCD/cmd/#", false},
		{KindCharger, "ABCD", "chargers/ABC/cmd/#", false},
		{KindCharger, "ABC", "chargers/ABC/cmdx/#", false},
		{KindCharger, "ABC", "chargers/ABC/cm/#", false},
		{KindCharger, "ABC", "chargers//ABC/cmd/#", false},
		{KindCharger, "ABC", "/chargers/ABC/cmd/#", false},
		{KindCharger, "ABC", "chargers/ABC//cmd/#", false},

		// malformed filters inside the subtree
		{KindVehicle, vin, vc + "//x", false},
		{KindVehicle, vin, vc + "/x/", false},
		{KindVehicle, vin, vc + "/#/x", false},
		{KindVehicle, vin, vc + "/x#", false},
		{KindVehicle, vin, vc + "/x+", false},
		{KindVehicle, vin, vc + "/+x", false},
		{KindVehicle, vin, vc + "/a\x00b", false},
		{KindVehicle, vin, vc + "/a/b/c/d/e/f/g/h/i", false},

		// shared subscriptions and $SYS
		{KindVehicle, vin, "$share/g/" + vc + "/#", false},
		{KindVehicle, vin, "$SHARE/g/" + vc + "/#", false},
		{KindVehicle, vin, "$SYS/#", false},
		{KindVehicle, vin, "$SYS/broker/clients/connected", false},

		// invalid identities
		{KindVehicle, "+", "vehicles/+/cmd/#", false},
		{KindVehicle, "#", "vehicles/#/cmd/#", false},
		{KindCharger, "A/B", "chargers/A/B/cmd/#", false},
		{KindCharger, "", "chargers//cmd/#", false},
		{"", vin, vc + "/#", false},
	}
	for _, tt := range tests {
		if got := CanSubscribe(tt.kind, tt.id, tt.filter); got != tt.want {
			t.Errorf("CanSubscribe(%q, %q, %q) = %v, want %v", tt.kind, tt.id, tt.filter, got, tt.want)
		}
	}
}

func TestRoots(t *testing.T) {
	if got := Root(KindVehicle, vin); got != "vehicles/"+vin {
		t.Errorf("Root = %q", got)
	}
	if got := CommandRoot(KindCharger, st); got != "chargers/"+st+"/cmd" {
		t.Errorf("CommandRoot = %q", got)
	}
	if Root(KindVehicle, "bad") != "" || CommandRoot("x", vin) != "" {
		t.Error("invalid identity produced a root")
	}
}

func FuzzCanPublish(f *testing.F) {
	f.Add(KindVehicle, vin, "vehicles/"+vin+"/telemetry")
	f.Add(KindCharger, "ABC", "chargers/ABCD/status")
	f.Fuzz(func(t *testing.T, kind, id, topic string) {
		if !CanPublish(kind, id, topic) {
			return
		}
		// Anything allowed must be exactly one of the listed topics.
		root := Root(kind, id)
		ok := false
		for _, l := range append(append([]string{}, vehiclePublish...), chargerPublish...) {
			if topic == root+"/"+l {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("CanPublish(%q, %q, %q) allowed an unlisted topic", kind, id, topic)
		}
	})
}

// TestCanPublishAllocatesNothing: the ACL runs for every publish.
func TestCanPublishAllocatesNothing(t *testing.T) {
	const id = "TGSVS000000000001"
	topic := "vehicles/" + id + "/telemetry"
	if !CanPublish(KindVehicle, id, topic) {
		t.Fatal("own telemetry denied")
	}
	if n := testing.AllocsPerRun(100, func() {
		if !CanPublish(KindVehicle, id, topic) || CanPublish(KindVehicle, id, "vehicles/TGSVS000000000002/telemetry") {
			t.Fatal("wrong decision")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per CanPublish", n)
	}
}
