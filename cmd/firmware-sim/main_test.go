package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProvisionCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "devices.yaml")
	t.Setenv("FLEETSIM_FLEET_KEY", "from-env")
	var stdout, stderr bytes.Buffer
	code := run([]string{"provision", "-vehicles", "2", "-chargers", "1", "-ocpp16", "1", "-ocpp201", "1", "-cost", "4", "-out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"devices:", "id: TGSVS000000000001", "id: CS-0001", "id: OCPP-0001", "id: OCPP-0002", "kind: charger", "secret_hash: $2a$04$", "disabled: false"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("registry lacks %q:\n%s", want, b)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Setenv("FLEETSIM_FLEET_KEY", "")
	var stdout, stderr bytes.Buffer
	for _, args := range [][]string{
		nil,
		{"bogus"},
		{"load", "-fleet-key", "k"},             // neither -duration nor -frames
		{"run", "-fleet-key", "k", "-qos", "2"}, // bad QoS
		{"run", "extra"},
		{"run", "-fleet-key", "k", "-ocpp16", "-1"},
	} {
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code := run([]string{"run", "-vehicles", "1"}, &stdout, &stderr); code != 1 {
		t.Errorf("missing fleet key: exit %d, want 1", code)
	}
}
