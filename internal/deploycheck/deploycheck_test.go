package deploycheck

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// TestDeployFilesParse: every YAML (all documents) and JSON file under
// deploy/ parses.
func TestDeployFilesParse(t *testing.T) {
	n := 0
	err := filepath.WalkDir(filepath.Join(root(t), "deploy"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			n++
			if _, err := yamlDocs(data); err != nil {
				t.Errorf("%s: %v", rel(t, path), err)
			}
		case ".json":
			n++
			if err := jsonValid(data); err != nil {
				t.Errorf("%s: %v", rel(t, path), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d YAML/JSON files under deploy/", n)
	}
}

// TestSampleAndDevConfigsLoad: the single-box configurations load.
func TestSampleAndDevConfigsLoad(t *testing.T) {
	for _, name := range []string{"gateway.sample.yaml", "gateway.dev.yaml"} {
		data, err := os.ReadFile(filepath.Join(root(t), "deploy", name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := loadGateway(t, "deploy/"+name, data, nil, nil); err != nil {
			t.Error(err)
		}
	}
}

// ---- compose ----

type composeGateway struct {
	service string
	cfg     loaded
	svc     map[string]any
}

// composeGateways loads the gateway services of deploy/compose/compose.yaml
// and the configuration each runs with: the file mounted at its -config
// path, with its TELEGATE_* environment (placeholders made dummy).
func composeGateways(t *testing.T) (string, map[string]any, []composeGateway) {
	t.Helper()
	dir := filepath.Join(root(t), "deploy", "compose")
	file := filepath.Join(dir, "compose.yaml")
	where := rel(t, file)
	docs := readYAML(t, file)
	if len(docs) != 1 {
		t.Fatalf("%s: want one document, got %d", where, len(docs))
	}
	doc := docs[0]
	services, _ := doc["services"].(map[string]any)
	var out []composeGateway
	for _, name := range keys(services) {
		svc, _ := services[name].(map[string]any)
		if !strings.HasPrefix(str(svc["image"]), "telegate/gateway") {
			continue
		}
		w := where + ": services." + name
		var args []string
		for _, a := range list(svc["command"]) {
			args = append(args, str(a))
		}
		cfgPath, sets := checkArgs(t, w+".command", "gateway", args)
		var src string
		for i, v := range list(svc["volumes"]) {
			s, ok := v.(string)
			if !ok {
				t.Errorf("%s.volumes[%d]: want \"source:target[:ro]\", got %T", w, i, v)
				continue
			}
			parts := strings.Split(s, ":")
			if len(parts) >= 2 && parts[1] == cfgPath {
				src = parts[0]
			}
		}
		if src == "" {
			t.Errorf("%s: -config %q is not a mounted file (volumes)", w, cfgPath)
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, src))
		if err != nil {
			t.Errorf("%s.volumes: config source %s: %v", w, src, err)
			continue
		}
		var env []string
		envMap, _ := svc["environment"].(map[string]any)
		for _, k := range keys(envMap) {
			env = append(env, k+"="+dummy(str(envMap[k])))
		}
		cfg, err := loadGateway(t, w+" ("+filepath.Join("deploy/compose", src)+" + environment)", data, env, sets)
		if err != nil {
			t.Error(err)
			continue
		}
		out = append(out, composeGateway{service: name, cfg: loaded{where: filepath.Join("deploy/compose", src), cfg: cfg}, svc: svc})
	}
	return where, doc, out
}

var urlRE = regexp.MustCompile(`https?://([^/\s'"]+)(/[^\s'"]*)`)

func TestComposeMatchesGateway(t *testing.T) {
	where, doc, gws := composeGateways(t)
	if len(gws) != 3 {
		t.Errorf("%s: want 3 gateway replicas, got %d", where, len(gws))
	}
	dataVolumes := map[string]string{}
	for _, g := range gws {
		w := where + ": services." + g.service
		cfg := g.cfg.cfg
		checkReplicaConfig(t, g.cfg)
		// Published ports: the container side is a listener of the config.
		for i, p := range list(g.svc["ports"]) {
			s := str(p)
			parts := strings.Split(s, ":")
			cport := strings.Split(parts[len(parts)-1], "/")[0]
			if keyForPort(cfg, cport) == "" {
				t.Errorf("%s.ports[%d] %q: container port %s is none of the config's listeners %v", w, i, s, cport, listeners(cfg))
			}
		}
		// Healthcheck: /healthz and /readyz on http.addr's port, Host allowed.
		hc := list(get(g.svc, "healthcheck.test"))
		var text []string
		for _, x := range hc {
			text = append(text, str(x))
		}
		found := map[string]bool{}
		for _, m := range urlRE.FindAllStringSubmatch(strings.Join(text, " "), -1) {
			hostport, target := m[1], m[2]
			_, p, _ := strings.Cut(hostport, ":")
			if p != port(cfg.HTTP.Addr) {
				t.Errorf("%s.healthcheck.test: %s uses port %s, http.addr is %s", w, m[0], p, cfg.HTTP.Addr)
			}
			if !hostAllowed(cfg, hostport) {
				t.Errorf("%s.healthcheck.test: host %s is not in http.allowed_hosts %v (the gateway answers 421)", w, hostport, cfg.HTTP.AllowedHosts)
			}
			checkProbeURL(t, w+".healthcheck.test", target)
			path, _, _ := strings.Cut(target, "?")
			found[path] = true
		}
		for _, want := range []string{"/healthz", "/readyz"} {
			if !found[want] {
				t.Errorf("%s.healthcheck.test: does not call %s", w, want)
			}
		}
		// Each replica has its own spool volume at data_dir.
		for _, v := range list(g.svc["volumes"]) {
			parts := strings.Split(str(v), ":")
			if len(parts) >= 2 && parts[1] == cfg.DataDir {
				if other, dup := dataVolumes[parts[0]]; dup {
					t.Errorf("%s.volumes: data_dir volume %s is shared with %s (one spool per replica)", w, parts[0], other)
				}
				dataVolumes[parts[0]] = g.service
			}
		}
		if !containsValue(dataVolumes, g.service) {
			t.Errorf("%s.volumes: nothing mounted at data_dir %s: the spool would live in the container layer", w, cfg.DataDir)
		}
		if n, _ := strconv.Atoi(str(get(g.svc, "ulimits.nofile.soft"))); int64(n) < cfg.MQTT.MaxClients {
			t.Errorf("%s.ulimits.nofile.soft: %d < mqtt.max_clients %d", w, n, cfg.MQTT.MaxClients)
		}
	}
	// Every ${VAR} in compose.yaml is documented in env.example.
	raw, _ := os.ReadFile(filepath.Join(root(t), "deploy", "compose", "compose.yaml"))
	example, _ := os.ReadFile(filepath.Join(root(t), "deploy", "compose", "env.example"))
	for _, m := range placeholderRE.FindAllStringSubmatch(string(raw), -1) {
		if !regexp.MustCompile(`(?m)^` + m[1] + `=`).Match(example) {
			t.Errorf("%s: ${%s} is not in deploy/compose/env.example", where, m[1])
		}
	}
	// NATS nodes: every $VAR of nats.conf is in each node's environment.
	conf, _ := os.ReadFile(filepath.Join(root(t), "deploy", "compose", "nats.conf"))
	services, _ := doc["services"].(map[string]any)
	nodes := 0
	for _, name := range keys(services) {
		svc, _ := services[name].(map[string]any)
		if !strings.HasPrefix(str(svc["image"]), "nats:") {
			continue
		}
		nodes++
		env, _ := svc["environment"].(map[string]any)
		for _, m := range natsVarRE.FindAllStringSubmatch(stripComments(conf), -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("%s: services.%s.environment: %s (used by deploy/compose/nats.conf) is missing", where, name, m[1])
			}
		}
	}
	if nodes != 3 {
		t.Errorf("%s: want 3 NATS nodes, got %d", where, nodes)
	}
}

func containsValue(m map[string]string, v string) bool {
	for _, x := range m {
		if x == v {
			return true
		}
	}
	return false
}

var natsVarRE = regexp.MustCompile(`\$([A-Z][A-Z0-9_]*)`)

func stripComments(b []byte) string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// checkReplicaConfig: a configuration for the replica topology uses the
// external 3-node NATS cluster with R3, authenticates, and does not
// supervise a local influxd.
func checkReplicaConfig(t *testing.T, l loaded) {
	t.Helper()
	c := l.cfg
	if urls := strings.Split(c.NATS.URL, ","); c.NATS.URL == "" || len(urls) != 3 {
		t.Errorf("%s: nats.url: want the 3 cluster nodes, got %q", l.where, c.NATS.URL)
	}
	if c.NATS.Replicas != 3 {
		t.Errorf("%s: nats.replicas: want 3 (R3), got %d", l.where, c.NATS.Replicas)
	}
	if c.NATS.User == "" && c.NATS.CredsFile == "" {
		t.Errorf("%s: nats.user / nats.creds_file: no NATS credentials (no anonymous access)", l.where)
	}
	if c.NATS.User != "" && c.NATS.Password == "" {
		t.Errorf("%s: nats.password: empty (set TELEGATE_NATS_PASSWORD)", l.where)
	}
	if c.Influx.Local.Enabled {
		t.Errorf("%s: influx.local.enabled: must be false with an external InfluxDB", l.where)
	}
	if c.Influx.Token == "" && c.Influx.Username == "" && c.Influx.CredentialsFile == "" {
		t.Errorf("%s: influx.token / username / credentials_file: no InfluxDB credentials", l.where)
	}
	for key, addr := range map[string]string{"http.addr": c.HTTP.Addr, "mqtt.tls_addr": c.MQTT.TLSAddr} {
		if addr != "" && !strings.HasPrefix(addr, "0.0.0.0:") && !strings.HasPrefix(addr, "[::]:") {
			t.Errorf("%s: %s %q binds to one address; a replica must be reachable from the load balancer and probes", l.where, key, addr)
		}
	}
}

// ---- Kubernetes ----

type k8sObject struct {
	file string
	doc  map[string]any
}

func (o k8sObject) kind() string { return str(o.doc["kind"]) }
func (o k8sObject) name() string { return str(get(o.doc, "metadata.name")) }
func (o k8sObject) where() string {
	return o.file + ": " + o.kind() + "/" + o.name()
}

func k8sObjects(t *testing.T) []k8sObject {
	t.Helper()
	dir := filepath.Join(root(t), "deploy", "kubernetes")
	kust := readYAML(t, filepath.Join(dir, "kustomization.yaml"))[0]
	var out []k8sObject
	for _, r := range list(kust["resources"]) {
		path := filepath.Join(dir, str(r))
		if _, err := os.Stat(path); err != nil {
			t.Errorf("deploy/kubernetes/kustomization.yaml: resources: %s: %v", str(r), err)
			continue
		}
		for _, d := range readYAML(t, path) {
			o := k8sObject{file: rel(t, path), doc: d}
			if o.kind() == "" || str(d["apiVersion"]) == "" || o.name() == "" {
				t.Errorf("%s: an object without apiVersion, kind or metadata.name", o.file)
				continue
			}
			out = append(out, o)
		}
	}
	return out
}

func find(objs []k8sObject, kind, name string) (k8sObject, bool) {
	for _, o := range objs {
		if o.kind() == kind && (name == "" || o.name() == name) {
			return o, true
		}
	}
	return k8sObject{}, false
}

// containerPortKey maps the gateway container's port names to the config
// key whose port they must equal.
var containerPortKey = map[string]string{
	"mqtt":  "mqtt.tcp_addr",
	"mqtts": "mqtt.tls_addr",
	"http":  "http.addr",
	"ocpp":  "ocpp.listen",
	"ws":    "mqtt.ws_addr",
}

func TestKubernetesMatchesGateway(t *testing.T) {
	objs := k8sObjects(t)
	sts, ok := find(objs, "StatefulSet", "")
	if !ok {
		t.Fatal("deploy/kubernetes: no StatefulSet for the gateway")
	}
	w := sts.where()
	pod := get(sts.doc, "spec.template.spec")
	containers := list(get(pod, "containers"))
	if len(containers) != 1 {
		t.Fatalf("%s: want one container, got %d", w, len(containers))
	}
	c, _ := containers[0].(map[string]any)
	cw := w + ": containers[0]"

	// -config names a file mounted from the ConfigMap.
	var args []string
	for _, a := range list(c["args"]) {
		args = append(args, str(a))
	}
	cfgPath, sets := checkArgs(t, cw+".args", "gateway", args)
	mountDir, key := filepath.Dir(cfgPath), filepath.Base(cfgPath)
	var volName string
	for _, m := range list(c["volumeMounts"]) {
		if str(get(m, "mountPath")) == mountDir {
			volName = str(get(m, "name"))
		}
	}
	var cmName string
	var dataMount bool
	for _, v := range list(get(pod, "volumes")) {
		if str(get(v, "name")) == volName {
			cmName = str(get(v, "configMap.name"))
		}
	}
	cm, ok := find(objs, "ConfigMap", cmName)
	if !ok {
		t.Fatalf("%s: -config %s: no ConfigMap volume mounted at %s (volume %q, ConfigMap %q)", cw, cfgPath, mountDir, volName, cmName)
	}
	data := str(asMap(cm.doc["data"])[key])
	if data == "" {
		t.Fatalf("%s: data.%s: missing (the StatefulSet's -config %s)", cm.where(), key, cfgPath)
	}
	var env []string
	for i, e := range list(c["env"]) {
		name := str(get(e, "name"))
		if !strings.HasPrefix(name, "TELEGATE_") {
			continue
		}
		if get(e, "valueFrom.secretKeyRef.name") == nil && get(e, "value") == nil {
			t.Errorf("%s.env[%d] %s: neither value nor secretKeyRef", cw, i, name)
		}
		env = append(env, name+"=dummy-secret-value-0123456789abcdef")
	}
	cfg, err := loadGateway(t, cm.where()+": data."+key+" (+ the StatefulSet's TELEGATE_* env)", []byte(data), env, sets)
	if err != nil {
		t.Fatal(err)
	}
	checkReplicaConfig(t, loaded{where: cm.where() + ": data." + key, cfg: cfg})

	// Container ports equal the config's listener ports, by name.
	named := map[string]string{}
	for i, p := range list(c["ports"]) {
		name, cp := str(get(p, "name")), str(get(p, "containerPort"))
		named[name] = cp
		k, known := containerPortKey[name]
		if !known {
			t.Errorf("%s.ports[%d] %s: not a gateway listener name %v", cw, i, name, keys(containerPortKey))
			continue
		}
		if got := listeners(cfg)[k]; got != cp {
			t.Errorf("%s.ports[%d] %s: containerPort %s but %s listens on port %q", cw, i, name, cp, k, got)
		}
	}
	// Probes: real routes, on the http port, with an allowed Host header.
	for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
		pw := cw + "." + probe
		hg := get(c, probe+".httpGet")
		if hg == nil {
			if probe != "startupProbe" {
				t.Errorf("%s: missing httpGet", pw)
			}
			continue
		}
		target := str(get(hg, "path"))
		checkProbeURL(t, pw+".httpGet.path", target)
		p := str(get(hg, "port"))
		if cp, ok := named[p]; ok {
			p = cp
		}
		if p != port(cfg.HTTP.Addr) {
			t.Errorf("%s.httpGet.port: %s, but http.addr is %s", pw, str(get(hg, "port")), cfg.HTTP.Addr)
		}
		host := ""
		for _, h := range list(get(hg, "httpHeaders")) {
			if strings.EqualFold(str(get(h, "name")), "Host") {
				host = str(get(h, "value"))
			}
		}
		if host == "" || !hostAllowed(cfg, host) {
			t.Errorf("%s.httpGet.httpHeaders: Host %q is not in http.allowed_hosts %v: kubelet sends the pod IP otherwise, answered 421", pw, host, cfg.HTTP.AllowedHosts)
		}
		want := map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"}[probe]
		if path, _, _ := strings.Cut(target, "?"); want != "" && path != want {
			t.Errorf("%s.httpGet.path: %q, want %s", pw, target, want)
		}
	}
	if get(c, "resources.requests.cpu") == nil || get(c, "resources.requests.memory") == nil || get(c, "resources.limits.memory") == nil {
		t.Errorf("%s.resources: want requests.cpu, requests.memory and limits.memory", cw)
	}
	// The spool is on the replica's own claim at data_dir.
	for _, m := range list(c["volumeMounts"]) {
		if str(get(m, "mountPath")) == cfg.DataDir {
			for _, vct := range list(get(sts.doc, "spec.volumeClaimTemplates")) {
				if str(get(vct, "metadata.name")) == str(get(m, "name")) {
					dataMount = true
				}
			}
		}
	}
	if !dataMount {
		t.Errorf("%s: spec.volumeClaimTemplates: data_dir %s is not on a per-replica claim", w, cfg.DataDir)
	}

	// Services: targetPorts are the container's named ports; MQTT is an L4
	// LoadBalancer on 1883 and 8883.
	sel := get(sts.doc, "spec.template.metadata.labels")
	mqttLB := false
	for _, o := range objs {
		if o.kind() != "Service" {
			continue
		}
		for k, v := range asMap(get(o.doc, "spec.selector")) {
			if str(asMap(sel)[k]) != str(v) {
				t.Errorf("%s: spec.selector %s=%v does not select the gateway pods", o.where(), k, v)
			}
		}
		ports := map[string]bool{}
		for i, p := range list(get(o.doc, "spec.ports")) {
			tp := str(get(p, "targetPort"))
			if _, ok := named[tp]; !ok {
				t.Errorf("%s: spec.ports[%d].targetPort %q is not a port name of the gateway container %v", o.where(), i, tp, keys(named))
			}
			ports[str(get(p, "port"))] = named[tp] != ""
			if str(get(p, "protocol")) != "TCP" {
				t.Errorf("%s: spec.ports[%d].protocol: want TCP", o.where(), i)
			}
		}
		if str(get(o.doc, "spec.type")) == "LoadBalancer" && ports["1883"] && ports["8883"] {
			mqttLB = true
		}
	}
	if !mqttLB {
		t.Error("deploy/kubernetes: no Service of type LoadBalancer with ports 1883 and 8883 for MQTT")
	}
	pdb, ok := find(objs, "PodDisruptionBudget", "")
	if !ok {
		t.Error("deploy/kubernetes: no PodDisruptionBudget")
	} else {
		for k, v := range asMap(get(pdb.doc, "spec.selector.matchLabels")) {
			if str(asMap(sel)[k]) != str(v) {
				t.Errorf("%s: spec.selector.matchLabels %s=%v does not select the gateway pods", pdb.where(), k, v)
			}
		}
	}
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// TestNATSHelmValues: the chart values make a 3-node JetStream cluster on
// file storage, with accounts and no anonymous access, and every variable
// they use comes from the container's environment.
func TestNATSHelmValues(t *testing.T) {
	path := filepath.Join(root(t), "deploy", "kubernetes", "nats-values.yaml")
	w := rel(t, path)
	v := readYAML(t, path)[0]
	if str(get(v, "config.cluster.enabled")) != "true" || str(get(v, "config.cluster.replicas")) != "3" {
		t.Errorf("%s: config.cluster: want enabled, replicas 3", w)
	}
	if str(get(v, "config.jetstream.enabled")) != "true" || str(get(v, "config.jetstream.fileStore.enabled")) != "true" || str(get(v, "config.jetstream.fileStore.pvc.enabled")) != "true" {
		t.Errorf("%s: config.jetstream: want enabled with fileStore on a PVC", w)
	}
	merge := asMap(get(v, "config.merge"))
	for _, k := range []string{"no_auth_user", "authorization"} {
		if _, ok := merge[k]; ok {
			t.Errorf("%s: config.merge.%s: anonymous or global-account access is not allowed", w, k)
		}
	}
	accounts := asMap(merge["accounts"])
	if len(accounts) == 0 || str(merge["system_account"]) == "" {
		t.Errorf("%s: config.merge.accounts / system_account: missing", w)
	}
	if str(get(accounts, "GATEWAY.jetstream")) == "" {
		t.Errorf("%s: config.merge.accounts.GATEWAY.jetstream: JetStream not enabled for the gateway's account", w)
	}
	env := asMap(get(v, "container.env"))
	for name, acc := range accounts {
		users := list(get(acc, "users"))
		if len(users) == 0 {
			t.Errorf("%s: config.merge.accounts.%s.users: empty", w, name)
		}
		for i, u := range users {
			pw := str(get(u, "password"))
			m := regexp.MustCompile(`^<<\s*\$([A-Z0-9_]+)\s*>>$`).FindStringSubmatch(pw)
			if m == nil {
				t.Errorf("%s: config.merge.accounts.%s.users[%d].password: want \"<< $VAR >>\" from a Secret, not a literal", w, name, i)
				continue
			}
			if get(env[m[1]], "valueFrom.secretKeyRef.name") == nil {
				t.Errorf("%s: container.env.%s: missing or not from a secretKeyRef (used by accounts.%s)", w, m[1], name)
			}
		}
	}
}

// TestComposeNATSConf: nats.conf is accepted by nats-server's own config
// parser, requires authentication everywhere and enables JetStream.
func TestComposeNATSConf(t *testing.T) {
	path := filepath.Join(root(t), "deploy", "compose", "nats.conf")
	w := rel(t, path)
	conf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range natsVarRE.FindAllStringSubmatch(stripComments(conf), -1) {
		t.Setenv(m[1], "dummy-"+strings.ToLower(m[1]))
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%s: %v", w, err)
	}
	if !opts.JetStream {
		t.Errorf("%s: jetstream: not enabled", w)
	}
	if opts.NoAuthUser != "" || opts.Authorization != "" || len(opts.Users) == 0 {
		t.Errorf("%s: accounts: want users in accounts only (users %d, no_auth_user %q)", w, len(opts.Users), opts.NoAuthUser)
	}
	for _, u := range opts.Users {
		if u.Password == "" || u.Account == nil || u.Account.Name == "$G" {
			t.Errorf("%s: user %q: no password or in the global account", w, u.Username)
		}
	}
	if opts.Cluster.Username == "" || opts.Cluster.Password == "" {
		t.Errorf("%s: cluster.authorization: routes must authenticate", w)
	}
	if opts.SystemAccount == "" {
		t.Errorf("%s: system_account: missing", w)
	}
	if h := opts.HTTPHost; opts.HTTPPort != 0 && h != "127.0.0.1" && h != "localhost" {
		t.Errorf("%s: http: monitoring on %s, want the loopback (it has no authentication)", w, h)
	}
}

// ---- systemd ----

type unit struct {
	file string
	// directives by name, in order (a directive may repeat)
	d map[string][]string
}

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{file: rel(t, path), d: map[string][]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: line %q is not Key=Value", u.file, line)
			continue
		}
		u.d[k] = append(u.d[k], v)
	}
	return u
}

func (u unit) last(k string) string {
	if v := u.d[k]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

func TestSystemdUnits(t *testing.T) {
	dir := filepath.Join(root(t), "deploy", "systemd")
	units, _ := filepath.Glob(filepath.Join(dir, "*.service"))
	if len(units) == 0 {
		t.Fatal("deploy/systemd: no units")
	}
	sawGateway := false
	for _, path := range units {
		u := readUnit(t, path)
		exec := strings.Fields(u.last("ExecStart"))
		if len(exec) == 0 {
			t.Errorf("%s: ExecStart: missing", u.file)
			continue
		}
		for k, want := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "Restart": "on-failure"} {
			if u.last(k) != want {
				t.Errorf("%s: %s=%q, want %s", u.file, k, u.last(k), want)
			}
		}
		if u.last("DynamicUser") != "yes" && u.last("User") == "" {
			t.Errorf("%s: DynamicUser/User: the service would run as root", u.file)
		}
		bin := filepath.Base(exec[0])
		if _, err := os.Stat(filepath.Join(root(t), "cmd", bin)); err != nil {
			if bin != "influxd" { // the only third-party binary the units may start
				t.Errorf("%s: ExecStart: %s is not built from cmd/ (and is not influxd)", u.file, exec[0])
			}
			continue
		}
		sawGateway = true
		args := make([]string, 0, len(exec)-1)
		for _, a := range exec[1:] {
			args = append(args, strings.ReplaceAll(a, "%d", "/run/credentials/telegate-gateway.service"))
		}
		cfgPath, sets := checkArgs(t, u.file+": ExecStart", bin, args)
		if cfgPath == "" {
			t.Errorf("%s: ExecStart: no -config", u.file)
			continue
		}
		local := filepath.Join(dir, filepath.Base(cfgPath))
		data, err := os.ReadFile(local)
		if err != nil {
			t.Errorf("%s: ExecStart -config %s: no deploy/systemd/%s to install there: %v", u.file, cfgPath, filepath.Base(cfgPath), err)
			continue
		}
		var env []string
		for _, e := range u.d["Environment"] {
			if strings.HasPrefix(e, "TELEGATE_") {
				env = append(env, e)
			}
		}
		if len(u.d["EnvironmentFile"]) > 0 {
			// The file holds the NATS password (checked below); stand in for it.
			env = append(env, "TELEGATE_NATS_PASSWORD=dummy-secret-value-0123456789abcdef")
		}
		cfg, err := loadGateway(t, rel(t, local)+" (+ "+u.file+" ExecStart -set and environment)", data, env, sets)
		if err != nil {
			t.Error(err)
			continue
		}
		checkReplicaConfig(t, loaded{where: rel(t, local), cfg: cfg})
		rw := false
		for _, p := range u.d["ReadWritePaths"] {
			for _, f := range strings.Fields(p) {
				f = strings.TrimLeft(f, "-+")
				if f == cfg.DataDir || strings.HasPrefix(cfg.DataDir, strings.TrimSuffix(f, "/")+"/") {
					rw = true
				}
			}
		}
		if !rw {
			t.Errorf("%s: ReadWritePaths: data_dir %s of %s is not writable under ProtectSystem=strict", u.file, cfg.DataDir, rel(t, local))
		}
		if n, _ := strconv.Atoi(u.last("LimitNOFILE")); int64(n) < cfg.MQTT.MaxClients+1024 {
			t.Errorf("%s: LimitNOFILE=%s: below mqtt.max_clients %d plus headroom", u.file, u.last("LimitNOFILE"), cfg.MQTT.MaxClients)
		}
		if strings.Contains(u.last("ExecReload"), "HUP") == false {
			t.Errorf("%s: ExecReload: want SIGHUP (device registry reload, cmd/gateway)", u.file)
		}
	}
	if !sawGateway {
		t.Error("deploy/systemd: no unit starts the gateway")
	}
}
