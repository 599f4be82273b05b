package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/telegate/telegate/firmware-sim/sim"
)

// FleetKey is the fleet key of the devices provisioned by StartGateway:
// device secrets are sim.Secret(FleetKey, id).
const FleetKey = "e2e-fleet-key"

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// GatewayBinary builds the gateway once per test binary.
func GatewayBinary(t testing.TB) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "telegate-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "gateway")
		out, err := exec.Command("go", "build", "-o", buildBin, "github.com/telegate/telegate/cmd/gateway").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build gateway: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// Gateway is the gateway running as a child process, restartable on the same
// data directory and ports.
type Gateway struct {
	t       testing.TB
	bin     string
	cfgFile string
	logPath string
	// HTTPAddr is the operations listener, MQTTURL the broker (tcp://).
	HTTPAddr, MQTTURL string
	// DataDir holds the spool and the embedded NATS store.
	DataDir string
	// PID of the running process (0 when stopped).
	PID  int
	env  []string // GatewayOptions.Env
	cmd  *exec.Cmd
	done chan struct{}
}

// GatewayOptions tune StartGateway.
type GatewayOptions struct {
	NATSURL string // external NATS; "" = embedded on a free port
	// NATSUser and NATSPassword log into the external NATS; NATSReplicas
	// is nats.replicas (0: the default).
	NATSUser, NATSPassword string
	NATSReplicas           int
	ExtraCfg               string // appended YAML
	MQTTCfg                string // appended to the mqtt flow mapping, e.g. ", read_batch: 250ms"
	// SecretCost selects the device secret hashes: 0 = bcrypt cost 4 (fast
	// provisioning for tests), -1 = machine-secret hashes (the product's
	// default, registry.HashMachineSecret), n > 0 = bcrypt cost n.
	SecretCost int
	// Pprof serves /debug/pprof on the operations listener (http.pprof).
	Pprof bool
	// DevicesFile is a registry written by WriteRegistry, shared by several
	// replicas; "" provisions vehicles+1 devices for this gateway alone
	// (SecretCost picks the hashes).
	DevicesFile string
	// Env is added to the gateway process's environment (e.g.
	// "GOGC=200"), after the test process's own variables.
	Env []string
}

// WriteRegistry provisions devices 1..vehicles+1 (the last for probes) of
// FleetKey with the hashes SecretCost selects (see GatewayOptions) and
// writes them as a device registry under dir; it returns the file's path.
// Several StartGateway calls can share it (GatewayOptions.DevicesFile).
func WriteRegistry(t testing.TB, dir string, vehicles, secretCost int) string {
	t.Helper()
	cost := 4
	switch {
	case secretCost < 0:
		cost = 0 // sim.Provision: machine-secret hashes
	case secretCost > 0:
		cost = secretCost
	}
	entries, err := sim.Provision(sim.Config{Vehicles: vehicles + 1, FleetKey: FleetKey}, cost)
	if err != nil {
		t.Fatal(err)
	}
	devices := filepath.Join(dir, "devices.yaml")
	if err := sim.WriteRegistry(devices, entries); err != nil {
		t.Fatal(err)
	}
	return devices
}

// StartGateway provisions devices (vehicles+1, the last for probes;
// none when opts.DevicesFile names a registry) and starts the gateway binary
// against in.
func StartGateway(t testing.TB, in *Influx, vehicles int, opts ...GatewayOptions) *Gateway {
	t.Helper()
	var o GatewayOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	dir := t.TempDir()
	devices := o.DevicesFile
	if devices == "" {
		devices = WriteRegistry(t, dir, vehicles, o.SecretCost)
	}
	mqttAddr, httpAddr := FreeAddr(t), FreeAddr(t)
	natsCfg := fmt.Sprintf("{embedded: {addr: %s}}", FreeAddr(t))
	if o.NATSURL != "" {
		natsCfg = fmt.Sprintf("{url: %q, user: %q, password: %q}", o.NATSURL, o.NATSUser, o.NATSPassword)
		if o.NATSReplicas > 0 {
			natsCfg = fmt.Sprintf("{url: %q, user: %q, password: %q, replicas: %d}", o.NATSURL, o.NATSUser, o.NATSPassword, o.NATSReplicas)
		}
	}
	cfg := fmt.Sprintf(`data_dir: %s
devices_file: %s
log_level: info
http: {addr: %s, pprof: %t}
mqtt: {tcp_addr: %s, ws_addr: "", rate_per_device: 5000, rate_burst: 5000%s}
influx: {url: %s, credentials_file: %s}
nats: %s
dashboard: {enabled: false}
services: {enabled: false}
%s`, filepath.Join(dir, "data"), devices, httpAddr, o.Pprof, mqttAddr, o.MQTTCfg, in.URL, in.CredentialsFile, natsCfg, o.ExtraCfg)
	g := &Gateway{t: t, bin: GatewayBinary(t), cfgFile: filepath.Join(dir, "gateway.yaml"), logPath: filepath.Join(dir, "gateway.log"),
		HTTPAddr: httpAddr, MQTTURL: "tcp://" + mqttAddr, DataDir: filepath.Join(dir, "data"), env: o.Env}
	if err := os.WriteFile(g.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.Start()
	t.Cleanup(func() {
		g.Stop()
		if t.Failed() {
			out, _ := os.ReadFile(g.logPath)
			if len(out) > 8000 {
				out = out[len(out)-8000:]
			}
			t.Logf("gateway log tail:\n%s", out)
		}
	})
	return g
}

// Start starts the process and waits until /healthz answers.
func (g *Gateway) Start() {
	g.t.Helper()
	cmd := exec.Command(g.bin, "-config", g.cfgFile)
	// The gateway rejects unknown TELEGATE_* variables (strict config); keep
	// the tests' own knobs out of its environment.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TELEGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, g.env...)
	logf, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		g.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.cmd, g.PID, g.done = cmd, cmd.Process.Pid, make(chan struct{})
	done := g.done
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get("http://" + g.HTTPAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-done:
			out, _ := os.ReadFile(g.logPath)
			g.t.Fatalf("gateway exited during start:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("gateway not healthy: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (g *Gateway) Kill() {
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Kill()
	<-g.done
	g.cmd = nil
}

// Stop sends SIGINT (graceful shutdown) and waits.
func (g *Gateway) Stop() {
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Signal(os.Interrupt)
	select {
	case <-g.done:
	case <-time.After(60 * time.Second):
		g.Kill()
	}
	g.cmd = nil
}

// Log returns the process's combined output so far.
func (g *Gateway) Log() string {
	out, _ := os.ReadFile(g.logPath)
	return string(out)
}

// FreeAddr returns a free loopback address (host:port) for a server the
// test starts next (often another process, which binds it a second or so
// later). Like influxd's, it is below the kernel's ephemeral range when
// possible (freeAddr): a port-0 address could meanwhile become the local
// port of any outgoing connection or port-0 listener of the tests running
// in parallel (go test ./... runs packages at once), and the server would
// then fail to start with "address already in use".
func FreeAddr(t testing.TB) string {
	addr := freeAddr()
	if addr == "127.0.0.1:0" {
		t.Fatal("testenv: no free loopback port")
	}
	return addr
}
