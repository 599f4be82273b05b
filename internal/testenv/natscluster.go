package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Account names of the servers started by StartNATSCluster.
const (
	NATSSysAccount = "SYS" // the system account (server events, $SYS API)
	NATSAppAccount = "APP" // the application account, JetStream enabled
)

// NATSClusterOptions tune StartNATSCluster. Zero values pick defaults.
type NATSClusterOptions struct {
	// Name is the cluster name ("telegate-test").
	Name string
	// User and Password are the application account's user (full rights
	// inside APP, none outside it); generated when empty.
	User, Password string
	// ReadyTimeout bounds the wait for a JetStream meta leader and an
	// answering JetStream API (30s).
	ReadyTimeout time.Duration
}

// NATSCluster is an n-node nats-server JetStream cluster running in this
// process on loopback. Every node has its own file store under t.TempDir(),
// fixed client and route ports (so Restart comes back on the same
// addresses), and authentication everywhere: clients log in as the APP user
// or the SYS user, routes with a route user; there is no anonymous access.
type NATSCluster struct {
	t testing.TB
	// Name is the cluster name.
	Name string
	// User and Password log into the application account APP.
	User, Password string
	// SysUser and SysPassword log into the system account SYS.
	SysUser, SysPassword string

	readyTimeout time.Duration

	mu    sync.Mutex // guards nodes[i].srv
	nodes []*natsNode
}

// natsNode is one member; only srv changes (under NATSCluster.mu).
type natsNode struct {
	name    string
	cfgPath string
	dir     string
	addr    string // client host:port
	srv     *server.Server
}

// StartNATSCluster starts an n-node JetStream cluster (n = 1: a standalone
// JetStream server with the same accounts) and waits until it is ready: a
// JetStream meta leader exists, every node is current, and the application
// account's JetStream API answers. It is shut down by t.Cleanup.
func StartNATSCluster(t testing.TB, n int, opts ...NATSClusterOptions) *NATSCluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("testenv: StartNATSCluster: n = %d", n)
	}
	var o NATSClusterOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Name == "" {
		o.Name = "telegate-test"
	}
	if o.User == "" {
		o.User = "app"
	}
	if o.Password == "" {
		o.Password = randomSecret(t)
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	c := &NATSCluster{
		t: t, Name: o.Name, User: o.User, Password: o.Password,
		SysUser: "sys", SysPassword: randomSecret(t),
		readyTimeout: o.ReadyTimeout,
	}
	routeUser, routePassword := "route", randomSecret(t)
	var lastErr error
	for attempt := range 3 {
		if attempt > 0 {
			t.Logf("testenv: NATS cluster start, attempt %d with fresh ports: %v", attempt+1, lastErr)
		}
		if lastErr = c.build(n, routeUser, routePassword); lastErr == nil {
			c.WaitReady()
			return c
		}
		c.shutdownAll()
	}
	t.Fatal(lastErr)
	return nil
}

// build writes n nodes' configurations on fresh loopback ports and starts
// them all, returning the first start error (typically a port another
// process took meanwhile).
func (c *NATSCluster) build(n int, routeUser, routePassword string) error {
	t := c.t
	c.nodes = nil
	root := t.TempDir()
	// Registered after TempDir: cleanups run last-in first-out, so the
	// servers stop before their store directories are removed.
	t.Cleanup(c.shutdownAll)
	clientAddrs := make([]string, n)
	routeAddrs := make([]string, n)
	for i := range n {
		clientAddrs[i] = FreeAddr(t)
		routeAddrs[i] = FreeAddr(t)
	}
	for i := range n {
		nd := &natsNode{name: fmt.Sprintf("n%d", i), dir: filepath.Join(root, fmt.Sprintf("n%d", i)), addr: clientAddrs[i]}
		if err := os.MkdirAll(nd.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		var cluster string
		if n > 1 {
			var routes []string
			for j := range n {
				if j != i {
					routes = append(routes, fmt.Sprintf("nats-route://%s:%s@%s", routeUser, routePassword, routeAddrs[j]))
				}
			}
			cluster = fmt.Sprintf(`cluster {
  name: %q
  listen: %q
  authorization { user: %q, password: %q }
  routes: [%s]
}
`, c.Name, routeAddrs[i], routeUser, routePassword, quoteList(routes))
		}
		cfg := fmt.Sprintf(`server_name: %q
listen: %q
jetstream {
  store_dir: %q
  max_memory_store: 64MB
  max_file_store: 512MB
}
%saccounts {
  %s { users: [ { user: %q, password: %q } ] }
  %s { jetstream: enabled, users: [ { user: %q, password: %q } ] }
}
system_account: %s
`, nd.name, nd.addr, filepath.Join(nd.dir, "js"), cluster,
			NATSSysAccount, c.SysUser, c.SysPassword,
			NATSAppAccount, c.User, c.Password, NATSSysAccount)
		nd.cfgPath = filepath.Join(nd.dir, "nats.conf")
		if err := os.WriteFile(nd.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, nd)
	}
	// Start all nodes before waiting for any: a clustered node only
	// becomes ready once it has routes to a quorum.
	for i := range c.nodes {
		if err := c.tryStart(i); err != nil {
			return err
		}
	}
	return nil
}

// Size is the number of nodes.
func (c *NATSCluster) Size() int { return len(c.nodes) }

// URL is node i's client URL (nats://host:port), running or not.
func (c *NATSCluster) URL(i int) string { return "nats://" + c.nodes[i].addr }

// URLs is every node's client URL, node i first, as a comma-separated list
// for nats.Connect: a client connected to it fails over to the others.
func (c *NATSCluster) URLs(first ...int) string {
	f := 0
	if len(first) > 0 {
		f = first[0]
	}
	urls := []string{c.URL(f)}
	for i := range c.nodes {
		if i != f {
			urls = append(urls, c.URL(i))
		}
	}
	return strings.Join(urls, ",")
}

// Server is node i's running server, or nil when it is stopped.
func (c *NATSCluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Connect connects to the cluster as the application user, to node first
// (default 0) with the others as failover URLs, and closes the connection
// at the end of the test. Reconnects retry for the whole test.
func (c *NATSCluster) Connect(t testing.TB, first ...int) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.URLs(first...),
		nats.UserInfo(c.User, c.Password),
		nats.DontRandomize(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.Name("testenv"),
	)
	if err != nil {
		t.Fatalf("testenv: connect to %s: %v", c.URLs(first...), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream is a JetStream context on c.Connect(t, first...).
func (c *NATSCluster) JetStream(t testing.TB, first ...int) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(c.Connect(t, first...))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Stop shuts node i down and waits until it is gone; its store stays for
// Restart. Stopping a stopped node does nothing.
func (c *NATSCluster) Stop(i int) {
	c.mu.Lock()
	srv := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Shutdown()
	srv.WaitForShutdown()
}

// Kill is the closest in-process stand-in for kill -9: the node stops at
// once without lame-duck mode and keeps its store. An in-process server
// cannot skip its shutdown path, so unlike a real SIGKILL it still steps
// down the Raft groups it leads (its peers elect a new leader at once
// instead of after an election timeout) and closes its files cleanly; data
// written before the call is in the store either way.
func (c *NATSCluster) Kill(i int) { c.Stop(i) }

// Restart starts stopped node i again on the same ports and store, and
// waits until the cluster is ready with it (meta leader, every running node
// current). Restarting a running node stops it first.
func (c *NATSCluster) Restart(i int) {
	c.t.Helper()
	c.Stop(i)
	c.start(i)
	c.WaitReady()
}

// WaitReady waits until every running node accepts clients, a JetStream
// meta leader exists, every running node is current with it, and the
// application account's JetStream API answers on every running node.
func (c *NATSCluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(c.readyTimeout)
	var why string
	for time.Now().Before(deadline) {
		why = c.notReady()
		if why == "" {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	c.t.Fatalf("testenv: NATS cluster not ready after %v: %s", c.readyTimeout, why)
}

// notReady says why the cluster is not ready yet, "" when it is.
func (c *NATSCluster) notReady() string {
	c.mu.Lock()
	var running []*server.Server
	for _, nd := range c.nodes {
		if nd.srv != nil {
			running = append(running, nd.srv)
		}
	}
	c.mu.Unlock()
	if len(running) == 0 {
		return "no node running"
	}
	leader := false
	for _, s := range running {
		if !s.Running() {
			return s.Name() + " not running"
		}
		if !s.JetStreamEnabled() {
			return s.Name() + " JetStream not enabled"
		}
		if len(c.nodes) > 1 {
			if s.JetStreamIsLeader() {
				leader = true
			}
			if !s.JetStreamIsCurrent() {
				return s.Name() + " not current with the meta leader"
			}
		}
	}
	if len(c.nodes) > 1 && !leader {
		return "no JetStream meta leader"
	}
	for _, s := range running {
		if err := c.probe(s.ClientURL()); err != nil {
			return s.Name() + ": " + err.Error()
		}
	}
	return ""
}

// probe asks the JetStream API for the application account's info.
func (c *NATSCluster) probe(url string) error {
	nc, err := nats.Connect(url, nats.UserInfo(c.User, c.Password), nats.NoReconnect(), nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// StreamMsgs is the number of messages node i's own replica of stream
// holds in the application account (its local state, not the leader's);
// ok is false when the node is stopped or holds no replica of stream.
func (c *NATSCluster) StreamMsgs(i int, stream string) (msgs uint64, ok bool) {
	s := c.Server(i)
	if s == nil {
		return 0, false
	}
	info, err := s.Jsz(&server.JSzOptions{Account: NATSAppAccount, Accounts: true, Streams: true})
	if err != nil {
		return 0, false
	}
	for _, a := range info.AccountDetails {
		if a.Name != NATSAppAccount {
			continue
		}
		for _, sd := range a.Streams {
			if sd.Name == stream {
				return sd.State.Msgs, true
			}
		}
	}
	return 0, false
}

func (c *NATSCluster) start(i int) {
	c.t.Helper()
	if err := c.tryStart(i); err != nil {
		c.t.Fatal(err)
	}
}

// tryStart starts node i and waits until it accepts clients. A node whose
// ports another process took between FreeAddr and the start never becomes
// ready: the caller may retry with fresh ports.
func (c *NATSCluster) tryStart(i int) error {
	nd := c.nodes[i]
	o, err := server.ProcessConfigFile(nd.cfgPath)
	if err != nil {
		c.t.Fatalf("testenv: nats config %s: %v", nd.name, err)
	}
	o.NoSigs = true
	o.NoLog = true
	srv, err := server.NewServer(o)
	if err != nil {
		c.t.Fatalf("testenv: nats server %s: %v", nd.name, err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) { // generous: a loaded CI box
		srv.Shutdown()
		return fmt.Errorf("testenv: nats server %s not accepting clients on %s", nd.name, nd.addr)
	}
	c.mu.Lock()
	nd.srv = srv
	c.mu.Unlock()
	return nil
}

func (c *NATSCluster) shutdownAll() {
	for i := range c.nodes {
		c.Stop(i)
	}
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

func randomSecret(t testing.TB) string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
