package testenv

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A 3-node cluster keeps an R3 stream and KV bucket writable and readable
// with one node down, and the node catches up after Restart.
func TestNATSClusterQuorumAndCatchUp(t *testing.T) {
	c := StartNATSCluster(t, 3)
	js := c.JetStream(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "EVENTS", Subjects: []string{"ev.>"}, Storage: jetstream.FileStorage, Replicas: 3,
	}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "state", Storage: jetstream.FileStorage, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := js.Publish(ctx, fmt.Sprintf("ev.%d", i), []byte("x"), jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
			if _, err := kv.Put(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i))); err != nil {
				t.Fatalf("kv put %d: %v", i, err)
			}
		}
	}
	publish(0, 10)

	// Stop a node other than the one the client uses (that failover is
	// the client library's business, tested elsewhere).
	c.Stop(2)
	if s := c.Server(2); s != nil {
		t.Fatal("stopped node still running")
	}
	publish(10, 20) // quorum 2 of 3
	for i := range 20 {
		e, err := kv.Get(ctx, fmt.Sprintf("k%d", i))
		if err != nil || string(e.Value()) != fmt.Sprint(i) {
			t.Fatalf("kv get k%d with a node down: %v", i, err)
		}
	}
	info, err := js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 20 {
		t.Fatalf("stream has %d msgs, want 20", n)
	}
	if _, ok := c.StreamMsgs(2, "EVENTS"); ok {
		t.Fatal("StreamMsgs on a stopped node")
	}

	c.Restart(2)
	waitFor(t, 30*time.Second, "node 2 catches up", func() bool {
		ev, ok1 := c.StreamMsgs(2, "EVENTS")
		kvn, ok2 := c.StreamMsgs(2, "KV_state")
		return ok1 && ok2 && ev == 20 && kvn == 20
	})

	// The restarted node now counts towards quorum: with node 1 down, the
	// cluster (nodes 0 and 2) still accepts writes and serves all data.
	c.Stop(1)
	publish(20, 25)
	js2 := c.JetStream(t, 2)
	kv2, err := js2.KeyValue(ctx, "state")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		if _, err := kv2.Get(ctx, fmt.Sprintf("k%d", i)); err != nil {
			t.Fatalf("kv get k%d via node 2: %v", i, err)
		}
	}
	waitFor(t, 30*time.Second, "node 2 holds all 25", func() bool {
		n, ok := c.StreamMsgs(2, "EVENTS")
		return ok && n == 25
	})
}

// No anonymous access; the application user cannot act in the system
// account; wrong passwords are refused.
func TestNATSClusterAuth(t *testing.T) {
	c := StartNATSCluster(t, 1, NATSClusterOptions{User: "svc", Password: "s3cret-for-test"})
	if nc, err := nats.Connect(c.URL(0), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("anonymous connection accepted")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous: %v, want authorization violation", err)
	}
	if nc, err := nats.Connect(c.URL(0), nats.UserInfo("svc", "wrong"), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("wrong password accepted")
	}
	nc := c.Connect(t)
	// $SYS requests from the application account get no answer.
	if _, err := nc.Request("$SYS.REQ.SERVER.PING", nil, 300*time.Millisecond); err == nil {
		t.Fatal("application user reached the system account")
	}
	sys, err := nats.Connect(c.URL(0), nats.UserInfo(c.SysUser, c.SysPassword), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	if _, err := sys.Request("$SYS.REQ.SERVER.PING", nil, 2*time.Second); err != nil {
		t.Fatalf("system user: %v", err)
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
