package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/telegate/telegate/firmware-sim/sim"
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

// TestBrokerFlag: -broker takes a comma-separated list and repeats; the
// default applies when it is not given.
func TestBrokerFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "tcp://127.0.0.1:1883"},
		{[]string{"-broker", "tcp://a:1,tcp://b:1"}, "tcp://a:1,tcp://b:1"},
		{[]string{"-broker", "tcp://a:1", "-broker", "tcp://c:1"}, "tcp://a:1,tcp://c:1"},
	} {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		var ff fleetFlags
		ff.register(fs, false)
		if err := parse(fs, append([]string{"-fleet-key", "k"}, tc.args...)); err != nil {
			t.Fatal(err)
		}
		cfg, err := ff.config(io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		f, err := sim.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(f.Config().Brokers, ","); got != tc.want {
			t.Errorf("%v: brokers %q, want %q", tc.args, got, tc.want)
		}
	}
}
