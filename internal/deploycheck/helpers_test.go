package deploycheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/telegate/telegate/gateway/config"
)

// root is the repository root (the directory holding go.mod).
func root(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// rel is path relative to the repository root, for messages.
func rel(t *testing.T, path string) string {
	r, err := filepath.Rel(root(t), path)
	if err != nil {
		return path
	}
	return r
}

// yamlDocs decodes every document of a (possibly multi-document) YAML file.
func yamlDocs(data []byte) ([]map[string]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for i := 0; ; i++ {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, fmt.Errorf("document %d: %w", i, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

func readYAML(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := yamlDocs(data)
	if err != nil {
		t.Fatalf("%s: %v", rel(t, path), err)
	}
	return docs
}

// get walks a decoded YAML tree along dotted keys ("spec.template.spec").
func get(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// placeholderRE matches compose-style ${VAR}, ${VAR:?msg}, ${VAR:-default}.
var placeholderRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}`)

// dummy replaces placeholders with a value long enough for every secret
// the gateway checks (token_key needs 32 bytes).
func dummy(s string) string {
	return placeholderRE.ReplaceAllString(s, "dummy-secret-value-0123456789abcdef")
}

// loaded is one gateway configuration a deployment runs with.
type loaded struct {
	where string // file (and key) it came from
	cfg   config.Config
}

// loadGateway writes data to a temporary file when needed and loads it with
// the gateway's own loader, with env (KEY=VALUE) and -set overrides.
func loadGateway(t *testing.T, where string, data []byte, env, sets []string) (config.Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, env, sets)
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", where, err)
	}
	return cfg, nil
}

// port returns the port of a host:port listen address ("" when disabled).
func port(addr string) string {
	if addr == "" {
		return ""
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return p
}

// listeners maps each listen address's config key to its port.
func listeners(cfg config.Config) map[string]string {
	out := map[string]string{
		"http.addr":     port(cfg.HTTP.Addr),
		"mqtt.tcp_addr": port(cfg.MQTT.TCPAddr),
		"mqtt.ws_addr":  port(cfg.MQTT.WSAddr),
		"mqtt.tls_addr": port(cfg.MQTT.TLSAddr),
	}
	if cfg.OCPP.Enabled {
		out["ocpp.listen"] = port(cfg.OCPP.Listen)
	}
	for k, v := range out {
		if v == "" {
			delete(out, k)
		}
	}
	return out
}

// keyForPort names the config key listening on p, or "".
func keyForPort(cfg config.Config, p string) string {
	var keys []string
	for k, v := range listeners(cfg) {
		if v == p {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

// hostAllowed mirrors the gateway's documented Host check
// (config.HTTP.AllowedHosts): the configured list, or the listen host plus
// localhost, 127.0.0.1 and ::1.
func hostAllowed(cfg config.Config, host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	if len(cfg.HTTP.AllowedHosts) == 0 {
		h, _, _ := net.SplitHostPort(cfg.HTTP.Addr)
		return host == h && h != "0.0.0.0" && h != "::" || host == "localhost" || host == "127.0.0.1" || host == "::1"
	}
	for _, a := range cfg.HTTP.AllowedHosts {
		if strings.ToLower(strings.Trim(a, "[]")) == host {
			return true
		}
	}
	return false
}

// goSource parses the non-test Go files of dir.
func goSource(t *testing.T, dir string) []*ast.File {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// stringLiterals lists every string literal in files.
func stringLiterals(files []*ast.File) map[string]bool {
	out := map[string]bool{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			if bl, ok := n.(*ast.BasicLit); ok && bl.Kind == token.STRING {
				if s, err := strconv.Unquote(bl.Value); err == nil {
					out[s] = true
				}
			}
			return true
		})
	}
	return out
}

// callsFirstString collects the first argument of calls to methods or
// functions named one of names, when it is a string literal.
func callsFirstString(files []*ast.File, names ...string) []string {
	var out []string
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			for _, name := range names {
				if sel.Sel.Name != name {
					continue
				}
				// flag.Var(&x, "name", ...) has the name second.
				arg := call.Args[0]
				if name == "Var" && len(call.Args) > 1 {
					arg = call.Args[1]
				}
				if bl, ok := arg.(*ast.BasicLit); ok && bl.Kind == token.STRING {
					if s, err := strconv.Unquote(bl.Value); err == nil {
						out = append(out, s)
					}
				}
			}
			return true
		})
	}
	return out
}

// gatewayRoutes is the set of paths the gateway's HTTP mux registers in
// gateway/app (patterns "GET /healthz" → "/healthz").
func gatewayRoutes(t *testing.T) map[string]bool {
	t.Helper()
	files := goSource(t, filepath.Join(root(t), "gateway", "app"))
	out := map[string]bool{}
	for _, p := range callsFirstString(files, "Handle", "HandleFunc") {
		if _, path, ok := strings.Cut(p, " "); ok {
			p = path
		}
		out[p] = true
	}
	if !out["/healthz"] && !out["/readyz"] && len(out) < 2 {
		t.Fatalf("found no routes in gateway/app (%v): has the mux moved?", out)
	}
	return out
}

// checkProbeURL checks a probe target (path with optional query) against
// the gateway's routes and the string literals of gateway/app (a query
// value such as scope=ingest must be something the handler compares to).
func checkProbeURL(t *testing.T, where, target string) {
	t.Helper()
	path, query, _ := strings.Cut(target, "?")
	if !gatewayRoutes(t)[path] {
		t.Errorf("%s: probe path %q is not a route of gateway/app (routes: %v)", where, path, keys(gatewayRoutes(t)))
	}
	if query == "" {
		return
	}
	lits := stringLiterals(goSource(t, filepath.Join(root(t), "gateway", "app")))
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if !lits[k] || (v != "" && !lits[v]) {
			t.Errorf("%s: probe query %q: gateway/app never reads parameter %q with value %q", where, target, k, v)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// cmdFlags is the set of flags a cmd/<name> main defines.
func cmdFlags(t *testing.T, name string) map[string]bool {
	t.Helper()
	dir := filepath.Join(root(t), "cmd", name)
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, f := range callsFirstString(goSource(t, dir), "String", "Bool", "Int", "Duration", "Float64", "Var", "Uint", "Int64") {
		out[f] = true
	}
	return out
}

// checkArgs checks that every -flag in args is defined by cmd/<name>, and
// returns the value of -config and the -set overrides.
func checkArgs(t *testing.T, where, name string, args []string) (cfgPath string, sets []string) {
	t.Helper()
	flags := cmdFlags(t, name)
	if flags == nil {
		t.Errorf("%s: binary %q is not built from any cmd/ directory", where, name)
		return "", nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s: stray argument %q (the gateway takes flags only)", where, a)
			continue
		}
		fl := strings.TrimLeft(a, "-")
		val := ""
		if k, v, ok := strings.Cut(fl, "="); ok {
			fl, val = k, v
		} else if i+1 < len(args) && fl != "keys" {
			i++
			val = args[i]
		}
		if !flags[fl] {
			t.Errorf("%s: flag -%s is not defined by cmd/%s (defined: %v)", where, fl, name, keys(flags))
		}
		switch fl {
		case "config":
			cfgPath = val
		case "set":
			sets = append(sets, val)
		}
	}
	return cfgPath, sets
}

func jsonValid(data []byte) error {
	var v any
	return json.Unmarshal(data, &v)
}
