package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/telegate/telegate/broker/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every blocking step of a test. It only guards against hangs:
// no test asserts that something happens within a time.
const wait = 10 * time.Second

// Test fleet. Charger ids ABC and ABCD exist for prefix tricks.
const (
	vin1   = "TGSVS000000000001"
	vin2   = "TGSVS000000000002"
	vinOff = "TGSVS000000000009"
	chABC  = "ABC"
	chABCD = "ABCD"
)

var secrets = map[string]string{
	vin1:   "secret-vin1",
	vin2:   "secret-vin2",
	vinOff: "secret-off",
	chABC:  "secret-abc",
	chABCD: "secret-abcd",
}

var (
	fleetOnce sync.Once
	fleet     []registry.Device
)

// testDevices returns the test fleet, hashed once per test binary at the
// lowest bcrypt cost.
func testDevices(t testing.TB) []registry.Device {
	t.Helper()
	fleetOnce.Do(func() {
		add := func(id, kind string, disabled bool) {
			h, err := registry.HashSecret([]byte(secrets[id]), 4)
			if err != nil {
				panic(err)
			}
			fleet = append(fleet, registry.Device{ID: id, Kind: kind, SecretHash: h, Disabled: disabled})
		}
		add(vin1, registry.KindVehicle, false)
		add(vin2, registry.KindVehicle, false)
		add(vinOff, registry.KindVehicle, true)
		add(chABC, registry.KindCharger, false)
		add(chABCD, registry.KindCharger, false)
	})
	return append([]registry.Device(nil), fleet...)
}

// testRegistryFile writes the fleet to a file and loads it (for Reload).
func testRegistryFile(t testing.TB, devs []registry.Device) (*registry.Registry, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "devices.yaml")
	if err := registry.Write(path, devs); err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return reg, path
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("BROKER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.TCPAddr = "127.0.0.1:0"
	cfg.WSAddr = "127.0.0.1:0"
	cfg.ConnectTimeout = 5 * time.Second
	return cfg
}

// startBroker starts a broker on random loopback ports and closes it at
// the end of the test.
func startBroker(t testing.TB, reg *registry.Registry, mutate func(*Config), hooks ...mqtt.Hook) *Broker {
	t.Helper()
	if reg == nil {
		var err error
		reg, err = registry.New(testDevices(t))
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := New(cfg, reg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		if err := b.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Start(); err != nil {
		b.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// --- MQTT 3.1.1 client (paho.mqtt.golang) ---

type v3Client struct {
	mqtt3.Client
	lost chan error // receives once when the connection is lost
}

func v3Options(url, id, user, pass string) *mqtt3.ClientOptions {
	o := mqtt3.NewClientOptions().AddBroker(url).SetClientID(id).
		SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).
		SetConnectTimeout(wait).SetWriteTimeout(wait).
		SetKeepAlive(30 * time.Second).SetCleanSession(true).SetOrderMatters(false)
	return o
}

// v3Connect connects and returns the client and the CONNACK return code.
func v3Connect(t testing.TB, o *mqtt3.ClientOptions) (*v3Client, byte, error) {
	t.Helper()
	c := &v3Client{lost: make(chan error, 1)}
	o.SetConnectionLostHandler(func(_ mqtt3.Client, err error) {
		select {
		case c.lost <- err:
		default:
		}
	})
	c.Client = mqtt3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatal("v3 connect timed out")
	}
	code := tok.(*mqtt3.ConnectToken).ReturnCode()
	if err := tok.Error(); err != nil {
		return nil, code, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, code, nil
}

func mustV3(t testing.TB, url, id string) *v3Client {
	t.Helper()
	c, code, err := v3Connect(t, v3Options(url, id, id, secrets[id]))
	if err != nil {
		t.Fatalf("v3 connect %s: code %d: %v", id, code, err)
	}
	return c
}

func (c *v3Client) waitLost(t testing.TB) {
	t.Helper()
	select {
	case <-c.lost:
	case <-time.After(wait):
		t.Fatal("v3 connection was not closed")
	}
}

// --- MQTT 5 client (paho.golang) ---

type v5Client struct {
	*paho.Client
	msgs       chan *paho.Publish
	disconnect chan *paho.Disconnect
}

type v5Opts struct {
	user, pass string
	noPass     bool
	keepalive  uint16
	will       *paho.WillMessage
	conn       net.Conn // pre-dialled (TLS); else TCP to addr
	sessionExp uint32
}

// v5Connect connects over TCP (or o.conn) and returns the client (nil on
// refusal) and the CONNACK.
func v5Connect(t testing.TB, addr, id string, o v5Opts) (*v5Client, *paho.Connack, error) {
	t.Helper()
	conn := o.conn
	if conn == nil {
		var err error
		conn, err = net.DialTimeout("tcp", addr, wait)
		if err != nil {
			t.Fatal(err)
		}
	}
	c := &v5Client{msgs: make(chan *paho.Publish, 64), disconnect: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:          conn,
		PacketTimeout: wait,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				select {
				case c.msgs <- pr.Packet:
				default:
				}
				return true, nil
			},
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.disconnect <- d:
			default:
			}
		},
		OnClientError: func(error) {},
	})
	cp := &paho.Connect{
		ClientID:     id,
		KeepAlive:    o.keepalive,
		CleanStart:   true,
		Username:     o.user,
		UsernameFlag: o.user != "",
		Password:     []byte(o.pass),
		PasswordFlag: !o.noPass && o.pass != "",
		WillMessage:  o.will,
	}
	if o.will != nil {
		cp.WillProperties = &paho.WillProperties{}
	}
	if o.sessionExp > 0 {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &o.sessionExp}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		return nil, ca, err
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-c.Done():
		case <-time.After(wait):
		}
	})
	return c, ca, nil
}

func mustV5(t testing.TB, addr, id string) *v5Client {
	t.Helper()
	c, ca, err := v5Connect(t, addr, id, v5Opts{user: id, pass: secrets[id], keepalive: 30})
	if err != nil {
		t.Fatalf("v5 connect %s: %+v %v", id, ca, err)
	}
	return c
}

func (c *v5Client) publish(t testing.TB, topic string, qos byte, payload string) (*paho.PublishResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
}

func (c *v5Client) subscribe(t testing.TB, filters ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := c.Subscribe(ctx, s)
	if sa == nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	return sa.Reasons
}

func (c *v5Client) next(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(wait):
		t.Fatal("no message received")
		return nil
	}
}

func (c *v5Client) waitClosed(t testing.TB) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("v5 connection was not closed")
	}
}

// --- raw sockets ---

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(wait))
	return c
}

// waitEOF reads until the broker closes the connection and returns what
// was received. A read deadline (the test's guard) is a failure.
func waitEOF(t testing.TB, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection not closed by broker (got %x)", b)
	}
	return b
}

func readN(t testing.TB, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: %v (got %x)", n, err, b)
	}
	return b
}

// eventually polls cond until it holds, failing after the guard deadline.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition never held: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// --- hand-built packets (MQTT 3.1.1 unless noted) ---

func encLen(n int) []byte {
	var out []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}

func encStr(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

func packet(typeFlags byte, body []byte) []byte {
	return append(append([]byte{typeFlags}, encLen(len(body))...), body...)
}

// connectPacket builds a CONNECT for protocol level 4 (3.1.1) or 5.
func connectPacket(level byte, id, user, pass string, keepalive uint16) []byte {
	flags := byte(0x02) // clean session
	if user != "" {
		flags |= 0x80
	}
	if pass != "" {
		flags |= 0x40
	}
	body := append(encStr("MQTT"), level, flags, byte(keepalive>>8), byte(keepalive))
	if level == 5 {
		body = append(body, 0) // no properties
	}
	body = append(body, encStr(id)...)
	if user != "" {
		body = append(body, encStr(user)...)
	}
	if pass != "" {
		body = append(body, encStr(pass)...)
	}
	return packet(0x10, body)
}

func publishPacket(topic string, qos byte, id uint16, payload string) []byte {
	body := encStr(topic)
	if qos > 0 {
		body = append(body, byte(id>>8), byte(id))
	}
	body = append(body, payload...)
	return packet(0x30|qos<<1, body)
}

func subscribePacket(id uint16, filters ...string) []byte {
	body := []byte{byte(id >> 8), byte(id)}
	for _, f := range filters {
		body = append(append(body, encStr(f)...), 1)
	}
	return packet(0x82, body)
}

// rawConnect performs a 3.1.1 CONNECT on a raw socket and checks CONNACK.
func rawConnect(t testing.TB, addr, id string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := dial(t, addr)
	if _, err := c.Write(connectPacket(4, id, id, secretOf(id), 30)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if got := readN(t, r, 4); !bytes.Equal(got, []byte{0x20, 0x02, 0x00, 0x00}) {
		t.Fatalf("CONNACK = %x", got)
	}
	return c, r
}

// --- hooks for tests ---

// recorder is an extra hook that records the publishes it sees, like the
// gateway's ingest hook would.
type recorder struct {
	mqtt.HookBase
	mu      sync.Mutex
	topics  []string
	seen    chan string
	panicOn string
	grant   bool // claims OnACLCheck / OnConnectAuthenticate (must be ignored)
}

func newRecorder() *recorder { return &recorder{seen: make(chan string, 256)} }

func (r *recorder) ID() string { return "test-recorder" }

func (r *recorder) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish:
		return true
	case mqtt.OnACLCheck, mqtt.OnConnectAuthenticate:
		return r.grant
	}
	return false
}

func (r *recorder) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (r *recorder) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (r *recorder) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if r.panicOn != "" && pk.TopicName == r.panicOn {
		panic("test hook panic")
	}
	r.mu.Lock()
	r.topics = append(r.topics, pk.TopicName)
	r.mu.Unlock()
	select {
	case r.seen <- pk.TopicName:
	default:
	}
	return pk, nil
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.topics...)
}

func (r *recorder) next(t testing.TB) string {
	t.Helper()
	select {
	case s := <-r.seen:
		return s
	case <-time.After(wait):
		t.Fatal("hook saw no publish")
		return ""
	}
}

type (
	mqttClient   = mqtt.Client
	subscription = packets.Subscription
	mqttPacket   = packets.Packet
)

func ctxWait() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), wait)
}

func mustRegistry(t testing.TB) *registry.Registry {
	t.Helper()
	reg, err := registry.New(testDevices(t))
	if err != nil {
		t.Fatal(err)
	}
	return reg
}
