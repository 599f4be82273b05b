package presence

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/broker"
	"github.com/telegate/telegate/broker/registry"
	"github.com/telegate/telegate/internal/testenv"
)

// wait guards every blocking step against hangs; no test asserts a speed.
const wait = 15 * time.Second

const (
	vinX    = "TGSVS00000000000X"
	secretX = "secret-x"
)

// replica is one broker with its presence hook, on its own NATS node.
type replica struct {
	b *broker.Broker
	p *Presence
}

func (r replica) addr() string { return r.b.Addr(broker.ListenerTCP) }

func testRegistry(t testing.TB) *registry.Registry {
	t.Helper()
	h, err := registry.HashSecret([]byte(secretX), 4)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New([]registry.Device{{ID: vinX, Kind: registry.KindVehicle, SecretHash: h}})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func logger() *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return nil
}

// startReplica starts a broker whose presence hook uses kv.
func startReplica(t testing.TB, name string, kv jetstream.KeyValue) replica {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.TCPAddr, cfg.WSAddr = "127.0.0.1:0", ""
	b, err := broker.New(cfg, testRegistry(t), logger())
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{KV: kv, Replica: NewReplicaID(name), End: b.TakeOver, Log: logger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddHook(p, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		p.Close()
	})
	return replica{b: b, p: p}
}

// twoReplicas starts a 3-node NATS cluster, the sessions bucket (3
// replicas) and replicas A and B connected to different nodes.
func twoReplicas(t *testing.T) (a, b replica) {
	t.Helper()
	kvA, kvB := sessionBuckets(t, testenv.StartNATSCluster(t, 3))
	return startReplica(t, "a", kvA), startReplica(t, "b", kvB)
}

// sessionBuckets creates the sessions bucket (3 replicas) on cluster c and
// opens it through connections to nodes 0 and 1.
func sessionBuckets(t *testing.T, c *testenv.NATSCluster) (kvA, kvB jetstream.KeyValue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var err error
	if kvA, err = c.JetStream(t, 0).CreateOrUpdateKeyValue(ctx, BucketConfig(3)); err != nil {
		t.Fatal(err)
	}
	if kvB, err = c.JetStream(t, 1).KeyValue(ctx, Bucket); err != nil {
		t.Fatal(err)
	}
	return kvA, kvB
}

// --- raw MQTT ---

func encStr(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func connectPacket(level byte, id, pass string) []byte {
	body := append(encStr("MQTT"), level, 0xC2, 0, 30) // user, password, clean; keepalive 30
	if level == 5 {
		body = append(body, 0)
	}
	body = append(append(append(body, encStr(id)...), encStr(id)...), encStr(pass)...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

type conn struct {
	net.Conn
	r *bufio.Reader
}

// connect opens a session of vinX at level 4 (3.1.1) or 5 and waits until
// its replica's claim is written (the CONNACK precedes it).
func connect(t *testing.T, r replica, level byte) conn {
	t.Helper()
	before := r.p.Stats().Claims.Load()
	nc, err := net.DialTimeout("tcp", r.addr(), wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(wait))
	c := conn{Conn: nc, r: bufio.NewReader(nc)}
	if _, err := nc.Write(connectPacket(level, vinX, secretX)); err != nil {
		t.Fatal(err)
	}
	typ, body := c.read(t)
	if typ != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK %x %x", typ, body)
	}
	eventually(t, "claim written", func() bool { return r.p.Stats().Claims.Load() > before })
	return c
}

func (c conn) read(t *testing.T) (byte, []byte) {
	t.Helper()
	h, err := c.r.ReadByte()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	n, mul := 0, 1
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		n += int(b&0x7F) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		t.Fatal(err)
	}
	return h, body
}

// takenOver checks that the broker sent DISCONNECT 0x8E (MQTT 5) or nothing
// (3.1.1), then closed the connection.
func (c conn) takenOver(t *testing.T, level byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	if level == 5 {
		typ, body := c.read(t)
		if typ != 0xE0 || len(body) < 1 || body[0] != 0x8E {
			t.Fatalf("got %x %x, want DISCONNECT 0x8E", typ, body)
		}
	}
	rest, err := io.ReadAll(c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection not closed (got %x)", rest)
	}
	if len(rest) != 0 {
		t.Fatalf("after the takeover the broker sent %x", rest)
	}
}

// alive checks the connection still answers PINGREQ.
func (c conn) alive(t *testing.T) {
	t.Helper()
	if _, err := c.Write([]byte{0xC0, 0x00}); err != nil {
		t.Fatal(err)
	}
	if typ, body := c.read(t); typ != 0xD0 || len(body) != 0 {
		t.Fatalf("PINGREQ answered %x %x", typ, body)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTakeoverAcrossReplicas: a device that connects to replica B while
// its session lives on replica A ends the one on A (MQTT 5: DISCONNECT
// 0x8E first; 3.1.1: closed without a DISCONNECT); the new session stays;
// connecting back to A ends B's.
func TestTakeoverAcrossReplicas(t *testing.T) {
	a, b := twoReplicas(t)

	onA := connect(t, a, 5)
	onB := connect(t, b, 5)
	onA.takenOver(t, 5)
	onB.alive(t)

	backOnA := connect(t, a, 4)
	onB.takenOver(t, 5)
	backOnA.alive(t)

	againOnB := connect(t, b, 4)
	backOnA.takenOver(t, 4)
	againOnB.alive(t)

	if a.p.Stats().TakenOver.Load() != 2 || b.p.Stats().TakenOver.Load() != 1 {
		t.Fatalf("taken over: A %d, B %d", a.p.Stats().TakenOver.Load(), b.p.Stats().TakenOver.Load())
	}
	if a.b.Stats().TakenOver.Load() != 2 {
		t.Fatalf("broker A TakenOver = %d", a.b.Stats().TakenOver.Load())
	}
}

// TestOlderClaimDoesNotEndNewerSession: a claim by another replica that
// is older (lower revision) than the local session's own claim, arriving
// late, leaves the local session alone; a newer one ends it.
func TestOlderClaimDoesNotEndNewerSession(t *testing.T) {
	a, _ := twoReplicas(t)
	onA := connect(t, a, 5)
	a.p.mu.Lock()
	own := a.p.local[Key(vinX)].rev
	a.p.mu.Unlock()
	if own == 0 {
		t.Fatalf("own revision %d", own)
	}
	stale, _ := json.Marshal(Claim{Replica: "z-old", Nonce: "n"})
	a.p.observe(Key(vinX), own-1, stale)
	onA.alive(t)
	if a.p.Stats().TakenOver.Load() != 0 {
		t.Fatal("an older claim ended the session")
	}
	a.p.observe(Key(vinX), own+1, stale)
	onA.takenOver(t, 5)
}

// TestBadClaimCounted: a bucket value that is not a claim is counted and
// ignored.
func TestBadClaimCounted(t *testing.T) {
	p, err := New(Config{KV: nopKV{}, Replica: "r", End: func(*mqttClient) {}})
	if err != nil {
		t.Fatal(err)
	}
	p.observe("k", 5, []byte("not json"))
	if p.Stats().BadClaims.Load() != 1 {
		t.Fatal("bad claim not counted")
	}
}

func TestKey(t *testing.T) {
	for id, want := range map[string]string{
		"WVWZZZ1JZXW000001": "WVWZZZ1JZXW000001",
		"st_01-A":           "st_01-A",
		"a.b":               "x.YS5i",
		"a/b c":             "x.YS9iIGM",
	} {
		if got := Key(id); got != want {
			t.Errorf("Key(%q) = %q, want %q", id, got, want)
		}
	}
	if !bytes.Equal([]byte(Key("")), []byte("x.")) {
		t.Errorf("Key(\"\") = %q", Key(""))
	}
}

// station is a non-MQTT connection holding a claim (as an OCPP socket does).
type station struct {
	closed  atomic.Bool
	ended   chan struct{}
	release func()
}

func claimStation(t *testing.T, p *Presence, key string) *station {
	t.Helper()
	s := &station{ended: make(chan struct{})}
	before := p.Stats().Claims.Load()
	s.release = p.Claim(key, s.closed.Load, func() {
		if s.closed.CompareAndSwap(false, true) {
			close(s.ended)
		}
	})
	if p.Stats().Claims.Load() != before+1 {
		t.Fatal("claim not written")
	}
	return s
}

func (s *station) isEnded() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}

// TestClaimAcrossReplicas: the generic Claim (an OCPP station's socket):
// a newer claim by replica B ends A's holder, not B's; a late older claim
// does not end B's; a released holder is not ended by a newer claim; a
// Presence without End serves Claim but refuses to be a broker hook.
func TestClaimAcrossReplicas(t *testing.T) {
	kvA, kvB := sessionBuckets(t, testenv.StartNATSCluster(t, 3))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := func(name string, kv jetstream.KeyValue) *Presence {
		p, err := New(Config{KV: kv, Replica: NewReplicaID(name), Log: logger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	a, b := start("a", kvA), start("b", kvB)
	if err := a.Init(nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("Init without End: %v, want ErrConfig", err)
	}
	key := OCPPKey("CS-01")

	onA := claimStation(t, a, key)
	onB := claimStation(t, b, key)
	eventually(t, "A's holder ended", onA.isEnded)
	if onB.isEnded() || a.Stats().TakenOver.Load() != 1 || b.Stats().TakenOver.Load() != 0 {
		t.Fatalf("B ended %v; taken over A %d B %d", onB.isEnded(), a.Stats().TakenOver.Load(), b.Stats().TakenOver.Load())
	}
	onA.release() // after the takeover: nothing left to forget

	b.mu.Lock()
	own := b.local[key].rev
	b.mu.Unlock()
	stale, _ := json.Marshal(Claim{Replica: "z-old", Nonce: "n"})
	b.observe(key, own-1, stale)
	if onB.isEnded() {
		t.Fatal("an older claim ended B's holder")
	}
	onB.release()
	b.observe(key, own+1, stale)
	if onB.isEnded() || b.Stats().TakenOver.Load() != 0 {
		t.Fatal("a released holder was ended")
	}
	// An MQTT session of a client id "CS-01" is another key.
	if Key("CS-01") == key {
		t.Fatal("OCPP and MQTT keys collide")
	}
}

func TestOCPPKey(t *testing.T) {
	for id, want := range map[string]string{"CS-01": "o.CS-01", "a.b": "o.x.YS5i"} {
		if got := OCPPKey(id); got != want || got == ReloadKey {
			t.Errorf("OCPPKey(%q) = %q, want %q", id, got, want)
		}
	}
}
