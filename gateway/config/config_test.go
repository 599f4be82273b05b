package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/telegate/telegate/broker"
	"github.com/telegate/telegate/gateway/influx/localserver"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/suite"
	"github.com/telegate/telegate/gateway/sink/influxsink"
	"github.com/telegate/telegate/gateway/spool"
)

func TestGoodFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	files = append(files, "../../deploy/gateway.sample.yaml")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f, nil, nil); err != nil {
				t.Fatalf("Load(%s): %v", f, err)
			}
		})
	}
}

// TestBadFiles loads each testdata/bad file and checks the error it gets:
// the sentinel (errors.Is) and a distinctive part of the message. Every
// file must be listed, so a new bad file comes with its expected answer.
func TestBadFiles(t *testing.T) {
	want := map[string]struct {
		is  error
		msg string
	}{
		"bad_duration.yaml":                {ErrInvalid, "line 2: cannot unmarshal !!str `forever` into time.Duration"},
		"bad_level.yaml":                   {ErrInvalid, "config: invalid value: log_level: want debug, info, warn or error"},
		"bad_size.yaml":                    {ErrInvalid, `config: invalid value: line 2: invalid size: "lots"`},
		"bad_url.yaml":                     {ErrInvalid, "config: invalid value: influx.url: must be an http(s) URL"},
		"tiny_packet.yaml":                 {ErrInvalid, "config: invalid value: mqtt.max_packet_size: must be between 256 B and 256 MiB"},
		"tls_without_cert.yaml":            {ErrInvalid, "config: invalid value: mqtt.tls_addr: needs tls_cert_file and tls_key_file"},
		"unknown_key.yaml":                 {ErrUnknownKey, "line 2: field urll not found"},
		"wrong_type.yaml":                  {ErrInvalid, "line 1: cannot unmarshal !!seq into"},
		"zero_keepalive.yaml":              {ErrInvalid, "config: invalid value: mqtt.max_keepalive: must be 1s..65535s"},
		"receive_maximum_overflow.yaml":    {ErrInvalid, "line 2: cannot unmarshal !!int `70000` into uint16"},
		"long_sync_delay.yaml":             {ErrInvalid, "config: invalid value: spool.sync_delay: must be 0 to 1s"},
		"negative_sync_rate.yaml":          {ErrInvalid, "config: invalid value: spool.sync_min_rate: must be ≥ 0 records/s"},
		"sync_delay_over_ack_timeout.yaml": {ErrInvalid, "config: invalid value: spool.sync_delay: must be shorter than spool.ack_timeout"},
		"long_linger.yaml":                 {ErrInvalid, "config: invalid value: influx.linger: must be between 1ms and 10s"},
		"long_read_batch.yaml":             {ErrInvalid, "config: invalid value: mqtt.read_batch: must be 0 (off) to 1s"},
	}
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) != len(want) {
		t.Errorf("%d bad files, %d expected answers: list every file in want", len(files), len(want))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			w, ok := want[filepath.Base(f)]
			if !ok {
				t.Fatalf("%s has no expected error in want", f)
			}
			_, err := Load(f, nil, nil)
			if err == nil {
				t.Fatalf("Load(%s) accepted a bad file", f)
			}
			if !errors.Is(err, w.is) {
				t.Errorf("Load(%s) = %v, want errors.Is %v", f, err, w.is)
			}
			if !strings.Contains(err.Error(), w.msg) {
				t.Errorf("Load(%s) = %q, want it to contain %q", f, err, w.msg)
			}
		})
	}
}

// TestSampleIsDefaults: deploy/gateway.sample.yaml documents every key with
// its default, so loading it must give exactly Default() (the sample cannot
// drift from the code).
func TestSampleIsDefaults(t *testing.T) {
	got, err := Load("../../deploy/gateway.sample.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("sample differs from Default():\n got  %+v\n want %+v", got, want)
	}
}

// TestSampleListsEveryKey: each settable key is in the sample, or (lists
// whose default is empty) shown commented out as "# key:".
func TestSampleListsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../deploy/gateway.sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		var node any = tree
		found := true
		for _, part := range splitKey(k) {
			m, ok := node.(map[string]any)
			if !ok {
				found = false
				break
			}
			if node, found = m[part]; !found {
				break
			}
		}
		parts := splitKey(k)
		if !found && !strings.Contains(string(data), "# "+parts[len(parts)-1]+":") {
			t.Errorf("key %s missing from deploy/gateway.sample.yaml", k)
		}
	}
}

func TestFullValues(t *testing.T) {
	c, err := Load("testdata/good/full.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.ReadBatch != 250*time.Millisecond {
		t.Fatalf("read_batch %v", c.MQTT.ReadBatch)
	}
	if c.MQTT.MaxPacketSize != 32<<10 || c.MQTT.ConnectTimeout != 5*time.Second || c.Spool.MaxBytes != 2<<30 {
		t.Fatalf("values not decoded: %+v", c.MQTT)
	}
	if c.Influx.Bucket() != "fleet" || c.NATS.Replicas != 3 || c.Influx.Linger != 25*time.Millisecond {
		t.Fatalf("bucket %q replicas %d linger %v", c.Influx.Bucket(), c.NATS.Replicas, c.Influx.Linger)
	}
	// Defaults survive for keys the file does not mention.
	if c.MQTT.RatePerDevice != Default().MQTT.RatePerDevice {
		t.Fatal("default lost")
	}
}

func TestOverridesPrecedence(t *testing.T) {
	env := []string{"TELEGATE_INFLUX_URL=http://env:8086", "TELEGATE_MQTT_MAX_PACKET_SIZE=16KiB", "PATH=/bin"}
	c, err := Load("testdata/good/minimal.yaml", env, []string{"influx.url=http://flag:8086", "spool.ack_timeout=2s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Influx.URL != "http://flag:8086" {
		t.Fatalf("flag must win: %s", c.Influx.URL)
	}
	if c.MQTT.MaxPacketSize != 16<<10 || c.Spool.AckTimeout != 2*time.Second {
		t.Fatal("override not applied")
	}
	if _, err := Load("", []string{"TELEGATE_NOPE=1"}, nil); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown env key: %v", err)
	}
	if _, err := Load("", nil, []string{"mqtt.nope=1"}); !errors.Is(err, ErrBadOverride) {
		t.Fatalf("unknown flag key: %v", err)
	}
	if _, err := Load("", nil, []string{"mqtt=1"}); err == nil {
		t.Fatal("section override accepted")
	}
	if _, err := Load("", nil, []string{"mqtt.receive_maximum=many"}); err == nil {
		t.Fatal("bad int accepted")
	}
}

func TestKeysCoverEnv(t *testing.T) {
	for _, k := range Keys() {
		c := Default()
		if _, err := field(reflectValue(&c), splitKey(k)); err != nil {
			t.Fatalf("key %s: %v", k, err)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"10": 10, "1KiB": 1024, "2 MiB": 2 << 20, "1GB": 1e9, "5B": 5} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Fatalf("%s: %d %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1", "1XB", "99999999999TiB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Fatalf("%q accepted", in)
		}
	}
}

func TestMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml"), nil, nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want ErrNotExist, got %v", err)
	}
}

func TestWebhookAllowCIDRs(t *testing.T) {
	c, err := Load("", []string{"TELEGATE_SERVICES_WEBHOOK_ALLOW_CIDRS=10.20.0.0/16, 127.0.0.1/32"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := c.Services.WebhookAllow()
	if len(got) != 2 || got[0].String() != "10.20.0.0/16" || got[1].String() != "127.0.0.1/32" {
		t.Fatalf("WebhookAllow() = %v", got)
	}
	if len(Default().Services.WebhookAllowCIDRs) != 0 {
		t.Fatal("internal addresses must not be allowed by default")
	}
	if _, err := Load("", nil, []string{"services.webhook_allow_cidrs=10.0.0.300/8"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad CIDR: err = %v, want ErrInvalid", err)
	}
}

// TestMQTTIsBrokerConfig: the mqtt section is broker.Config itself, so every
// broker setting is a key (max_keepalive and max_connections were not
// reachable before) and the defaults are the broker's.
func TestMQTTIsBrokerConfig(t *testing.T) {
	if !reflect.DeepEqual(Default().MQTT, broker.DefaultConfig()) {
		t.Fatalf("mqtt defaults %+v differ from broker.DefaultConfig()", Default().MQTT)
	}
	c, err := Load("", []string{"TELEGATE_MQTT_MAX_KEEPALIVE=2m"}, []string{"mqtt.max_connections=500", "mqtt.rate_burst=9"})
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.MaxKeepalive != 2*time.Minute || c.MQTT.MaxConnections != 500 || c.MQTT.Burst != 9 {
		t.Fatalf("overrides not applied: %+v", c.MQTT)
	}
	if _, err := Load("", nil, []string{"mqtt.receive_maximum=70000"}); !errors.Is(err, ErrBadOverride) {
		t.Fatalf("receive_maximum beyond uint16: err = %v, want ErrBadOverride", err)
	}
}

// TestComponentSections: the sections whose structs the components own
// (suite.Settings, spool.Settings, natsbus.Settings, influxsink.Settings,
// localserver.Settings) default to the components' values and every key
// of theirs is reachable by the environment and -set, inlined or not.
func TestComponentSections(t *testing.T) {
	d := Default()
	if !reflect.DeepEqual(d.Services.Settings, suite.DefaultSettings()) || !reflect.DeepEqual(d.Spool, spool.DefaultSettings()) ||
		!reflect.DeepEqual(d.NATS, natsbus.DefaultSettings()) || d.Influx.Settings != influxsink.DefaultSettings() ||
		d.Influx.Local != localserver.DefaultSettings() {
		t.Fatalf("component sections differ from the components' defaults: %+v", d)
	}
	c, err := Load("", []string{"TELEGATE_SERVICES_WEBHOOK_BACKOFF=2s", "TELEGATE_INFLUX_BATCH_LINES=100"}, []string{
		"spool.sync_delay=3ms", "nats.embedded.partner_max_payload=8KiB", "influx.local.rpc_addr=127.0.0.1:9",
		"services.webhook_allow_cidrs=10.1.0.0/16", "influx.batch_bytes=1MiB",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Services.WebhookBackoff != 2*time.Second || c.Influx.BatchLines != 100 || c.Spool.SyncDelay != 3*time.Millisecond ||
		c.NATS.Embedded.PartnerMaxPayload != 8<<10 || c.Influx.Local.RPCAddr != "127.0.0.1:9" ||
		len(c.Services.WebhookAllowCIDRs) != 1 || c.Influx.BatchBytes != 1<<20 {
		t.Fatalf("overrides not applied: services %+v spool %+v nats %+v influx %+v", c.Services.Settings, c.Spool, c.NATS, c.Influx)
	}
	if _, err := Load("", nil, []string{"influx.batch_lines=0"}); err == nil ||
		!strings.Contains(err.Error(), "influx.batch_lines: batch_lines must be ≥ 1") {
		t.Fatalf("influx.batch_lines=0: err = %v, want the key named", err)
	}
	for _, v := range []string{"0", "65"} {
		if _, err := Load("", nil, []string{"influx.write_concurrency=" + v}); err == nil ||
			!strings.Contains(err.Error(), "influx.write_concurrency: must be 1 to 64") {
			t.Fatalf("influx.write_concurrency=%s: err = %v, want the key named", v, err)
		}
	}
	if c, err := Load("", nil, []string{"influx.write_concurrency=1"}); err != nil || c.Influx.WriteConcurrency != 1 {
		t.Fatalf("influx.write_concurrency=1: %v, %+v", err, c.Influx.Settings)
	}
}
