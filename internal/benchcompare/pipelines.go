package benchcompare

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/telegate/telegate/internal/probe"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/influx"
)

// Databases, one per pipeline.
const (
	DBDirect   = "bench_direct"
	DBTelegraf = "bench_telegraf"
	DBGateway  = "bench_gateway"
	// DBGatewayBatched is the gateway-batched pipeline's.
	DBGatewayBatched = "bench_gateway_batched"
)

// fleetKey derives every device password (sim.Secret).
const fleetKey = "bench-compare-fleet"

// telegrafUser is Telegraf's Mosquitto identity; it may only read telemetry.
const telegrafUser = "telegraf"

// devices returns n load devices plus the warm-up probe (the last one).
func devices(n int) []device {
	out := make([]device, n+1)
	for i := range out {
		vin := sim.VIN(sim.DefaultVINPrefix, i+1)
		out[i] = device{id: vin, user: vin, pass: sim.Secret(fleetKey, vin)}
	}
	return out
}

// mosquittoConf is the broker's configuration: one loopback listener,
// password file and ACL (no anonymous access, each device may only write
// its own telemetry topic, Telegraf may only read), persistence on, and no
// in-flight or queue cap towards Telegraf (the caps would drop QoS 1
// messages or stall the consumer; Telegraf's max_undelivered_messages is
// the flow control).
func mosquittoConf(dir, addr string, asUser string) string {
	host, port, _ := strings.Cut(addr, ":")
	var b strings.Builder
	if asUser != "" {
		fmt.Fprintf(&b, "user %s\n", asUser)
	}
	fmt.Fprintf(&b, `per_listener_settings false
listener %s %s
allow_anonymous false
password_file %s
acl_file %s
persistence true
persistence_location %s/
max_inflight_messages 0
max_queued_messages 0
max_queued_bytes 0
log_dest stderr
log_type error
log_type warning
connection_messages false
`, port, host, filepath.Join(dir, "passwd"), filepath.Join(dir, "acl"), dir)
	return b.String()
}

// mosquittoACL: Telegraf reads every vehicle's telemetry; a device writes
// only its own topic.
const mosquittoACL = `user ` + telegrafUser + `
topic read vehicles/+/telemetry

pattern write vehicles/%u/telemetry
`

// telegrafConf is Telegraf's configuration: mqtt_consumer (QoS 1,
// persistent session, acknowledged after the output's write) parsing the
// JSON frames with the stock json parser into measurement telemetry, tag
// vin, one float field per signal plus seq, timestamp from "ts" (ms); and
// outputs.influxdb into DBTelegraf, batches of batch lines, uncompressed
// (the gateway does not compress either).
func telegrafConf(mqttAddr, pass, influxURL string, iu influx.User, batch, undelivered int) string {
	return fmt.Sprintf(`[agent]
  interval = "10s"
  round_interval = false
  metric_batch_size = %d
  metric_buffer_limit = %d
  collection_jitter = "0s"
  flush_interval = "1s"
  flush_jitter = "0s"
  omit_hostname = true
  debug = false
  quiet = false

[[inputs.mqtt_consumer]]
  servers = ["tcp://%s"]
  topics = ["vehicles/+/telemetry"]
  topic_tag = ""
  qos = 1
  persistent_session = true
  client_id = "telegraf-bench"
  username = %q
  password = %q
  max_undelivered_messages = %d
  connection_timeout = "30s"
  data_format = "json"
  tag_keys = ["vin"]
  json_time_key = "ts"
  json_time_format = "unix_ms"
  name_override = "telemetry"

[[outputs.influxdb]]
  urls = [%q]
  database = %q
  username = %q
  password = %q
  skip_database_creation = true
  content_encoding = "identity"
  timeout = "60s"
`, batch, max(10*batch, 4*undelivered), mqttAddr, telegrafUser, pass, undelivered, influxURL, DBTelegraf, iu.Name, iu.Password)
}

// alternative is a running Mosquitto + Telegraf.
type alternative struct {
	mosquitto, telegraf *proc
	mqttAddr            string
}

func (a *alternative) pids() []int { return []int{a.mosquitto.pid(), a.telegraf.pid()} }

func (a *alternative) stop() {
	if a.telegraf != nil {
		a.telegraf.stop()
	}
	if a.mosquitto != nil {
		a.mosquitto.stop()
	}
}

// ErrTool: a required external program is missing or failed.
var ErrTool = errors.New("benchcompare: external tool")

// startAlternative writes the configurations into dir and starts Mosquitto
// then Telegraf (ready once it logged its MQTT connection).
func startAlternative(o Options, dir, influxURL string, iu influx.User, devs []device) (*alternative, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	addr, err := probe.FreeAddr()
	if err != nil {
		return nil, err
	}
	tgPass := sim.Secret(fleetKey, telegrafUser)
	var pw strings.Builder
	for _, d := range devs {
		fmt.Fprintf(&pw, "%s:%s\n", d.user, d.pass)
	}
	fmt.Fprintf(&pw, "%s:%s\n", telegrafUser, tgPass)
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte(pw.String()), 0o600); err != nil {
		return nil, err
	}
	if out, err := exec.Command(o.MosquittoPasswd, "-U", passwd).CombinedOutput(); err != nil { // hash in place
		return nil, fmt.Errorf("%w: %s -U: %w: %s", ErrTool, o.MosquittoPasswd, err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "acl"), []byte(mosquittoACL), 0o600); err != nil {
		return nil, err
	}
	// Started as root, mosquitto switches to its own user: hand it the
	// directory so it can read its files and write its persistence file.
	asUser := ""
	if os.Geteuid() == 0 {
		if u, err := user.Lookup("mosquitto"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			for _, p := range []string{dir, passwd, filepath.Join(dir, "acl")} {
				if err := os.Chown(p, uid, gid); err != nil {
					return nil, err
				}
			}
			asUser = "mosquitto"
		} else {
			asUser = "root"
		}
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(mosquittoConf(dir, addr, asUser)), 0o644); err != nil {
		return nil, err
	}
	a := &alternative{mqttAddr: addr}
	if a.mosquitto, err = startProc("mosquitto", o.Mosquitto, []string{"-c", conf}, nil,
		filepath.Join(o.workDir, "mosquitto.log"), 30*time.Second, tcpReady(addr)); err != nil {
		return nil, err
	}
	tconf := filepath.Join(o.workDir, "telegraf.conf")
	if err := os.WriteFile(tconf, []byte(telegrafConf(addr, tgPass, influxURL, iu, o.Batch, o.TelegrafUndelivered)), 0o600); err != nil {
		a.stop()
		return nil, err
	}
	tlog := filepath.Join(o.workDir, "telegraf.log")
	if a.telegraf, err = startProc("telegraf", o.Telegraf, []string{"--config", tconf}, envWithout("INFLUX"),
		tlog, time.Minute, logReady(tlog, "Connected [tcp://")); err != nil {
		a.stop()
		return nil, err
	}
	return a, nil
}

// gatewayConf is the gateway's configuration for the run: loopback
// listeners, pprof on when a profile is wanted, database db, mqtt.read_batch
// readBatch (0: off).
func gatewayConf(dataDir, devicesFile, httpAddr, mqttAddr, natsAddr, influxURL, db string, iu influx.User, pprof bool, linger, readBatch time.Duration) string {
	lingerKey, batchKey := "", ""
	if linger > 0 {
		lingerKey = fmt.Sprintf(", linger: %s", linger)
	}
	if readBatch > 0 {
		batchKey = fmt.Sprintf(", read_batch: %s", readBatch)
	}
	return fmt.Sprintf(`data_dir: %s
devices_file: %s
log_level: warn
http: {addr: %s, pprof: %t}
mqtt: {tcp_addr: %s, ws_addr: "", rate_per_device: 100000, rate_burst: 100000%s}
influx: {url: %s, database: %s, username: %q, password: %q%s}
nats: {embedded: {addr: %s}}
dashboard: {enabled: false}
services: {enabled: false}
`, dataDir, devicesFile, httpAddr, pprof, mqttAddr, batchKey, influxURL, db, iu.Name, iu.Password, lingerKey, natsAddr)
}

// gatewayProc is the running gateway binary.
type gatewayProc struct {
	*proc
	mqttAddr, httpAddr string
}

// startGateway provisions devs (machine-secret hashes, the product
// default) and starts the gateway binary.
func startGateway(o Options, dir, influxURL string, iu influx.User, devs []device, db string, readBatch time.Duration) (*gatewayProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	entries, err := sim.Provision(sim.Config{Vehicles: len(devs), FleetKey: fleetKey}, 0)
	if err != nil {
		return nil, err
	}
	devicesFile := filepath.Join(dir, "devices.yaml")
	if err := sim.WriteRegistry(devicesFile, entries); err != nil {
		return nil, err
	}
	var addrs [3]string
	for i := range addrs {
		if addrs[i], err = probe.FreeAddr(); err != nil {
			return nil, err
		}
	}
	cfgFile := filepath.Join(dir, "gateway.yaml")
	cfg := gatewayConf(filepath.Join(dir, "data"), devicesFile, addrs[0], addrs[1], addrs[2], influxURL, db, iu, o.CPUProfile != "", o.GatewayLinger, readBatch)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := startProc("gateway", o.Gateway, []string{"-config", cfgFile}, envWithout("TELEGATE_"),
		filepath.Join(o.workDir, "gateway.log"), 2*time.Minute, probe.HTTPReady("http://"+addrs[0]+"/readyz", http.StatusOK))
	if err != nil {
		return nil, err
	}
	return &gatewayProc{proc: p, mqttAddr: addrs[1], httpAddr: addrs[0]}, nil
}

// cpuProfile fetches a CPU profile of secs seconds from the gateway's
// /debug/pprof into path.
func (g *gatewayProc) cpuProfile(ctx context.Context, path string, secs int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", g.httpAddr, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: pprof status %d", ErrTool, resp.StatusCode)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.ReadFrom(resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// metric returns the value of an unlabelled Prometheus sample of the
// gateway's /metrics, or 0.
func (g *gatewayProc) metric(name string) float64 {
	resp, err := http.Get("http://" + g.httpAddr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}
