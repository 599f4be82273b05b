// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/xid"

	"github.com/mochi-mqtt/server/v2/packets"
)

const (
	defaultKeepalive             uint16 = 10 // the default connection keepalive value in seconds.
	defaultClientProtocolVersion byte   = 4  // the default mqtt protocol version of connecting clients (if somehow unspecified).
	minimumKeepalive             uint16 = 5  // the minimum recommended keepalive - values under with display a warning.
)

var (
	ErrMinimumKeepalive = errors.New("client keepalive is below minimum recommended value and may exhibit connection instability")
)

// ReadFn is the function signature for the function used for reading and processing new packets.
type ReadFn func(*Client, packets.Packet) error

// Clients contains a map of the clients known by the broker.
type Clients struct {
	internal map[string]*Client // clients known by the broker, keyed on client id.
	sync.RWMutex
}

// NewClients returns an instance of Clients.
func NewClients() *Clients {
	return &Clients{
		internal: make(map[string]*Client),
	}
}

// Add adds a new client to the clients map, keyed on client id.
func (cl *Clients) Add(val *Client) {
	cl.Lock()
	defer cl.Unlock()
	cl.internal[val.ID] = val
}

// GetAll returns all the clients.
func (cl *Clients) GetAll() map[string]*Client {
	cl.RLock()
	defer cl.RUnlock()
	m := map[string]*Client{}
	for k, v := range cl.internal {
		m[k] = v
	}
	return m
}

// Get returns the value of a client if it exists.
func (cl *Clients) Get(id string) (*Client, bool) {
	cl.RLock()
	defer cl.RUnlock()
	val, ok := cl.internal[id]
	return val, ok
}

// Len returns the length of the clients map.
func (cl *Clients) Len() int {
	cl.RLock()
	defer cl.RUnlock()
	val := len(cl.internal)
	return val
}

// Delete removes a client from the internal map.
func (cl *Clients) Delete(id string) {
	cl.Lock()
	defer cl.Unlock()
	delete(cl.internal, id)
}

// telegate: clientIDLocks serialises, per client id, the steps that
// change which *Client owns the id: a new connection taking the id
// (inheritClientSession up to Clients.Add, in establishSession), the old
// connection's clean-up when its session ends at disconnect (detachClient)
// and a disconnected session's expiry (clearExpiredClients). The topics
// index keeps subscriptions by client id, not by *Client, and a new
// connection subscribes only once it is in Clients: so, with these steps
// serialised, a clean-up that finds its *Client still the id's entry in
// Clients (and not taken over) removes only its own subscriptions, and one
// that finds another *Client there removes nothing. Upstream checked
// IsTakenOver, then unsubscribed by id and deleted the id from Clients
// without a lock: a connection with the same id that took the id in
// between lost its Clients entry and its new subscriptions (it had its
// SUBACK, but no publish reached it). The lock is per id (an entry lives
// while someone holds or waits for it): a takeover writes DISCONNECT to
// the old connection under it, which must not delay other devices.
type clientIDLocks struct {
	mu sync.Mutex               // guards m
	m  map[string]*clientIDLock // ids locked or waited for
}

type clientIDLock struct {
	sync.Mutex
	refs int // holders and waiters; guarded by clientIDLocks.mu
}

// lock takes id's lock and returns the function that releases it.
func (l *clientIDLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*clientIDLock)
	}
	e := l.m[id]
	if e == nil {
		e = new(clientIDLock)
		l.m[id] = e
	}
	e.refs++
	waits := e.refs > 1
	l.mu.Unlock()
	if waits {
		if f := seamClientIDLockWait.Load(); f != nil {
			(*f)(id)
		}
	}
	e.Lock()
	return func() {
		e.Unlock()
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.m, id)
		}
		l.mu.Unlock()
	}
}

// superseded reports whether a newer connection has taken cl's client id:
// cl was taken over, or another *Client is the id's entry. The caller
// holds the id's lock (clientIDLocks).
func (cl *Clients) superseded(c *Client) bool {
	if c.IsTakenOver() {
		return true
	}
	cur, ok := cl.Get(c.ID)
	return ok && cur != c
}

// deleteIf removes c's id only while c is its entry (compare-and-delete).
func (cl *Clients) deleteIf(c *Client) bool {
	cl.Lock()
	defer cl.Unlock()
	if cl.internal[c.ID] != c {
		return false
	}
	delete(cl.internal, c.ID)
	return true
}

// GetByListener returns clients matching a listener id.
func (cl *Clients) GetByListener(id string) []*Client {
	cl.RLock()
	defer cl.RUnlock()
	clients := make([]*Client, 0, len(cl.internal)) // telegate: was cl.Len(), a second RLock (deadlock with a waiting writer)
	for _, client := range cl.internal {
		if client.Net.Listener == id && !client.Closed() {
			clients = append(clients, client)
		}
	}
	return clients
}

// Client contains information about a client known by the broker.
type Client struct {
	Properties   ClientProperties // client properties
	State        ClientState      // the operational state of the client.
	Net          ClientConnection // network connection state of the client
	ID           string           // the client id.
	ops          *ops             // ops provides a reference to server ops.
	sync.RWMutex                  // mutex

	// telegate: Ext is a slot owned by the embedding application, which
	// keeps its per-connection state there instead of in a map keyed by
	// *Client (one lookup less per hook call). mochi never reads or writes
	// it. It is an atomic.Value so that the application may set it on the
	// client's read goroutine (e.g. in OnSessionEstablished) and read it
	// from any goroutine without a lock; the application must store values
	// of one concrete type only (atomic.Value panics otherwise). A session
	// takeover creates a new *Client, whose Ext starts empty.
	Ext atomic.Value
}

// ClientConnection contains the connection transport and metadata for the client.
type ClientConnection struct {
	Conn     net.Conn      // the net.Conn used to establish the connection
	bconn    *bufio.Reader // a buffered net.Conn for reading packets
	outbuf   *bytes.Buffer // a buffer for writing packets
	Remote   string        // the remote address of the client
	Listener string        // listener id of the client
	Inline   bool          // if true, the client is the built-in 'inline' embedded client
}

// ClientProperties contains the properties which define the client behaviour.
type ClientProperties struct {
	Props           packets.Properties
	Will            Will
	Username        []byte
	ProtocolVersion byte
	Clean           bool
}

// Will contains the last will and testament details for a client connection.
type Will struct {
	Payload           []byte                 // -
	User              []packets.UserProperty // -
	TopicName         string                 // -
	Flag              uint32                 // 0,1
	WillDelayInterval uint32                 // -
	Qos               byte                   // -
	Retain            bool                   // -
}

// ClientState tracks the state of the client.
type ClientState struct {
	TopicAliases    TopicAliases         // a map of topic aliases
	stopCause       atomic.Value         // reason for stopping
	Inflight        *Inflight            // a map of in-flight qos messages
	Subscriptions   *Subscriptions       // a map of the subscription filters a client maintains
	disconnected    int64                // the time the client disconnected in unix time, for calculating expiry
	outbound        chan *packets.Packet // queue for pending outbound packets
	endOnce         sync.Once            // only end once
	isTakenOver     atomic.Bool          // used to identify orphaned clients
	packetID        uint32               // the current highest packetID
	open            context.Context      // indicate that the client is open for packet exchange
	cancelOpen      context.CancelFunc   // cancel function for open context
	outboundQty     int32                // number of messages currently in the outbound queue
	Keepalive       uint16               // the number of seconds the connection can wait
	ServerKeepalive bool                 // keepalive was set by the server
	// telegate: body is the pooled buffer (publishBodies) the PUBLISH
	// being handled was read into, nil if its body was allocated; bodyFree
	// is set by processPublish when that packet kept nothing of it, so
	// readAndHandle returns it to the pool. Both belong to the client's
	// read goroutine (processPublish runs there for a non-inline client;
	// InjectPacket with a live device client would race and is not used).
	body     *[]byte
	bodyFree bool
	// telegate: sessionEnded is set, under the client id's lock, when a
	// newer connection took the id over without continuing this session
	// (Clean Start 1): this connection's will, even delayed, is then
	// published when the connection ends (Server.storeDelayedWill).
	sessionEnded atomic.Bool
	// telegate: sendMu orders the server's QoS 1/2 publishes to the
	// client. Its holder alone takes send quota for a publish, decides
	// whether a new publish goes out or is held, releases held ones and
	// queues them on outbound (publishToClient, sendHeld,
	// ResendInflightMessages). Quota is given back (PUBACK, PUBCOMP)
	// without it; whoever frees quota then calls sendHeld. Taken before
	// the Inflight lock, never the other way round.
	sendMu sync.Mutex
	// telegate: heldStalled is set when sendHeld found outbound full with
	// quota free; WriteLoop calls sendHeld again after its next write.
	heldStalled atomic.Bool
	// telegate: idMu serialises NextPacketID. Upstream took the client's
	// lock, which WritePacket holds while it writes to the socket: a
	// publish to a client that had stopped reading waited for its write
	// deadline, and every publish queued behind it in the publisher's
	// goroutine (other clients' included).
	idMu sync.Mutex
	// telegate: writesOpen, made by attachClient before it starts
	// WriteLoop, is closed (openWrites, once) when establishSession has
	// written CONNACK and resent the session's stored packets: WriteLoop
	// writes nothing queued on outbound before, so a publish made while
	// the session resumes goes out after them without establishSession
	// holding sendMu across those writes. nil: WriteLoop does not wait.
	writesOpen   chan struct{}
	writesOpened atomic.Bool
	// telegate: successor is the client that took this client's session
	// over; inheritClientSession sets it under sendMu once it has copied
	// the stored publishes, and publishToClient sends a QoS 1/2 publish
	// that reaches this client afterwards to the successor instead.
	successor atomic.Pointer[Client]
}

// newClient returns a new instance of Client. This is almost exclusively used by Server
// for creating new clients, but it lives here because it's not dependent.
func newClient(c net.Conn, o *ops) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &Client{
		State: ClientState{
			Inflight:      NewInflights(),
			Subscriptions: NewSubscriptions(),
			TopicAliases:  NewTopicAliases(o.options.Capabilities.TopicAliasMaximum),
			open:          ctx,
			cancelOpen:    cancel,
			Keepalive:     defaultKeepalive,
			outbound:      make(chan *packets.Packet, o.options.Capabilities.MaximumClientWritesPending),
		},
		Properties: ClientProperties{
			ProtocolVersion: defaultClientProtocolVersion, // default protocol version
		},
		ops: o,
	}

	if c != nil {
		cl.Net = ClientConnection{
			Conn:   c,
			bconn:  bufio.NewReaderSize(c, o.options.ClientNetReadBufferSize),
			Remote: c.RemoteAddr().String(),
		}
	}

	return cl
}

// WriteLoop ranges over pending outbound messages and writes them to the client connection.
func (cl *Client) WriteLoop() {
	if g := cl.State.writesOpen; g != nil { // telegate: see ClientState.writesOpen
		select {
		case <-g:
		case <-cl.State.open.Done():
			return
		}
	}
	for {
		if f := seamWriteLoopNext.Load(); f != nil { // telegate: test seam
			(*f)(cl)
		}
		select {
		case pk := <-cl.State.outbound:
			if err := cl.WritePacket(*pk); err != nil {
				if errors.Is(err, packets.ErrPacketTooLarge) && pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 0 {
					// telegate: a held publish released to this connection
					// whose Maximum Packet Size it exceeds (the session's
					// previous connection allowed it) is discarded as if sent
					// ([MQTT-3.1.2-25]), as ResendInflightMessages does, and
					// its send quota given back: kept, it held a slot for the
					// rest of the connection, never sent nor acknowledged
					// (with Receive Maximum 1 every later command stalled).
					cl.discardUnsendable(*pk)
				} else {
					// TODO : Figure out what to do with error
					cl.ops.log.Debug("failed publishing packet", "error", err, "client", cl.ID, "packet", pk)
				}
			}
			atomic.AddInt32(&cl.State.outboundQty, -1)
			if cl.State.heldStalled.CompareAndSwap(true, false) {
				cl.sendHeld(time.Now().Unix()) // telegate: outbound has room again
			}
		case <-cl.State.open.Done():
			return
		}
	}
}

// ParseConnect parses the connect parameters and properties for a client.
func (cl *Client) ParseConnect(lid string, pk packets.Packet) {
	cl.Net.Listener = lid

	cl.Properties.ProtocolVersion = pk.ProtocolVersion
	cl.Properties.Username = pk.Connect.Username
	cl.Properties.Clean = pk.Connect.Clean
	cl.Properties.Props = pk.Properties.Copy(false)

	if cl.Properties.Props.ReceiveMaximum > cl.ops.options.Capabilities.MaximumInflight { // 3.3.4 Non-normative
		cl.Properties.Props.ReceiveMaximum = cl.ops.options.Capabilities.MaximumInflight
	}

	if pk.Connect.Keepalive <= minimumKeepalive {
		cl.ops.log.Warn(
			ErrMinimumKeepalive.Error(),
			"client", cl.ID,
			"keepalive", pk.Connect.Keepalive,
			"recommended", minimumKeepalive,
		)
	}

	cl.State.Keepalive = pk.Connect.Keepalive                                              // [MQTT-3.2.2-22]
	cl.State.Inflight.ResetReceiveQuota(int32(cl.ops.options.Capabilities.ReceiveMaximum)) // server receive max per client
	cl.State.Inflight.ResetSendQuota(int32(cl.Properties.Props.ReceiveMaximum))            // client receive max
	cl.State.TopicAliases.Outbound = NewOutboundTopicAliases(cl.Properties.Props.TopicAliasMaximum)

	cl.ID = pk.Connect.ClientIdentifier
	if cl.ID == "" {
		cl.ID = xid.New().String() // [MQTT-3.1.3-6] [MQTT-3.1.3-7]
		cl.Properties.Props.AssignedClientID = cl.ID
	}

	if pk.Connect.WillFlag {
		cl.Properties.Will = Will{
			Qos:               pk.Connect.WillQos,
			Retain:            pk.Connect.WillRetain,
			Payload:           pk.Connect.WillPayload,
			TopicName:         pk.Connect.WillTopic,
			WillDelayInterval: pk.Connect.WillProperties.WillDelayInterval,
			User:              pk.Connect.WillProperties.User,
		}
		if pk.Properties.SessionExpiryIntervalFlag &&
			pk.Properties.SessionExpiryInterval < pk.Connect.WillProperties.WillDelayInterval {
			cl.Properties.Will.WillDelayInterval = pk.Properties.SessionExpiryInterval
		}
		if pk.Connect.WillFlag {
			cl.Properties.Will.Flag = 1 // atomic for checking
		}
	}
}

// refreshDeadline refreshes the read/write deadline for the net.Conn connection.
func (cl *Client) refreshDeadline(keepalive uint16) {
	var expiry time.Time // nil time can be used to disable deadline if keepalive = 0
	if keepalive > 0 {
		expiry = time.Now().Add(time.Duration(keepalive+(keepalive/2)) * time.Second) // [MQTT-3.1.2-22]
	}

	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.SetDeadline(expiry) // [MQTT-3.1.2-22]
	}
}

// NextPacketID returns the next available (unused) packet id for the client.
// If no unused packet ids are available, an error is returned and the client
// should be disconnected.
func (cl *Client) NextPacketID() (i uint32, err error) {
	cl.State.idMu.Lock() // telegate: not the client's lock, which a blocked socket write holds
	defer cl.State.idMu.Unlock()

	i = atomic.LoadUint32(&cl.State.packetID)
	started := i
	overflowed := false
	for {
		if overflowed && i == started {
			return 0, packets.ErrQuotaExceeded
		}

		if i >= cl.ops.options.Capabilities.maximumPacketID {
			overflowed = true
			i = 0
			continue
		}

		i++

		if _, ok := cl.State.Inflight.Get(uint16(i)); !ok {
			atomic.StoreUint32(&cl.State.packetID, i)
			return i, nil
		}
	}
}

// ResendInflightMessages attempts to resend any pending inflight messages to connected clients.
//
// telegate: the stored packets to resend are chosen, and the send quota
// taken, under cl.State.sendMu (prepareResend); they are written without
// it (writeResend), so that a publisher to the client never waits for its
// socket. The server resumes a session in establishSession, which also
// keeps a publish made meanwhile behind the resent packets.
func (cl *Client) ResendInflightMessages(force bool) error {
	if cl.State.Inflight.Len() == 0 {
		return nil
	}
	cl.lockSend()
	resend := cl.prepareResend(time.Now().Unix())
	cl.State.sendMu.Unlock()
	return cl.writeResend(resend)
}

// prepareResend returns the stored packets to resend on this connection,
// in the order stored, for the holder of cl.State.sendMu (telegate:
// establishSession holds it from Clients.Add). A publish sent before is
// marked DUP and counted against this connection's send quota.
//
// telegate: a held publish (never sent: the previous connection's
// Receive Maximum was used up) is not a redelivery: it is dropped if
// expired ([MQTT-3.3.2-5]) and sent without DUP only while this
// connection's send quota allows, the rest when PUBACKs free it
// (sendHeld). Upstream sent every stored publish at once, DUP, the held
// ones without their Message Expiry.
func (cl *Client) prepareResend(now int64) []packets.Packet {
	if cl.State.Inflight.Len() == 0 {
		return nil
	}
	var resend []packets.Packet
	for _, tk := range cl.State.Inflight.GetAll(false) {
		if tk.FixedHeader.Type == packets.Publish {
			if cl.State.Inflight.IsHeld(tk.PacketID) {
				if expired(tk, now) {
					cl.dropInflight(tk)
					continue
				}
				if atomic.LoadInt32(&cl.State.Inflight.maximumSendQuota) > 0 && atomic.LoadInt32(&cl.State.Inflight.sendQuota) <= 0 {
					continue
				}
				var ok bool
				if tk, ok = cl.State.Inflight.Release(tk.PacketID); !ok {
					continue
				}
			} else {
				tk.FixedHeader.Dup = true // [MQTT-3.3.1-1] [MQTT-3.3.1-3]
			}
			cl.State.Inflight.DecreaseSendQuota()
		}
		resend = append(resend, tk)
	}
	return resend
}

// writeResend writes the packets prepareResend chose, without
// cl.State.sendMu (telegate).
func (cl *Client) writeResend(resend []packets.Packet) error {
	for _, tk := range resend {
		cl.ops.hooks.OnQosPublish(cl, tk, tk.Created, 0)
		err := cl.WritePacket(tk)
		if errors.Is(err, packets.ErrPacketTooLarge) && tk.FixedHeader.Type == packets.Publish {
			// telegate: larger than the Maximum Packet Size this connection
			// announced (a smaller one than the session's previous
			// connection): discarded as if sent ([MQTT-3.1.2-25]), its
			// send quota given to the next held publishes, instead of
			// failing the resume, which closed the connection after CONNACK.
			cl.discardUnsendable(tk)
			continue
		}
		if err != nil {
			return err
		}

		if tk.FixedHeader.Type == packets.Puback || tk.FixedHeader.Type == packets.Pubcomp {
			if ok := cl.State.Inflight.Delete(tk.PacketID); ok {
				cl.ops.hooks.OnQosComplete(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
			}
		}
	}

	return nil
}

// openWrites lets WriteLoop write what is queued on outbound (telegate:
// see ClientState.writesOpen). It first writes out what WritePacket kept
// in its buffer while packets were queued (CONNACK and the resent
// packets, behind a QoS 0 publish queued meanwhile).
func (cl *Client) openWrites() error {
	if cl.State.writesOpen == nil || !cl.State.writesOpened.CompareAndSwap(false, true) {
		return nil
	}
	cl.Lock()
	err := cl.flushOutbuf()
	cl.Unlock()
	close(cl.State.writesOpen)
	return err
}

// discardUnsendable drops stored publish pk, which this connection cannot
// be sent (too large), gives its send quota back and sends the held
// publishes that quota now allows (telegate).
func (cl *Client) discardUnsendable(pk packets.Packet) {
	cl.lockSend()
	defer cl.State.sendMu.Unlock()
	if cl.dropInflight(pk) {
		cl.State.Inflight.IncreaseSendQuota()
	}
	cl.sendHeldLocked(time.Now().Unix())
}

// expired reports whether publish pk's Message Expiry has passed at now
// (telegate; [MQTT-3.3.2-5]).
func expired(pk packets.Packet, now int64) bool {
	return pk.Expiry > 0 && pk.Expiry < now
}

// dropInflight deletes stored packet pk, as discarded (telegate). Returns
// true if it was stored.
func (cl *Client) dropInflight(pk packets.Packet) bool {
	ok := cl.State.Inflight.Delete(pk.PacketID)
	if ok {
		cl.ops.hooks.OnQosDropped(cl, pk)
		atomic.AddInt64(&cl.ops.info.Inflight, -1)
	}
	return ok
}

// sendHeld sends the held publishes (stored while the client's Receive
// Maximum was used up) that the send quota now allows, in the order
// stored, each with its remaining Message Expiry Interval (WritePacket,
// [MQTT-3.3.2-6]); an expired one is dropped, not sent ([MQTT-3.3.2-5]).
// A sent publish stays inflight until the client acknowledges it, which
// gives its quota back (telegate: upstream deleted it once written, so it
// was not resent on session resume and its PUBACK, found nowhere, never
// freed the quota: every later publish to the client stayed held). It
// runs on the client's read goroutine after each packet (a PUBACK frees
// quota) and on WriteLoop after a stall; publishToClient does the same
// under the lock it already holds (sendHeldLocked).
func (cl *Client) sendHeld(now int64) {
	if atomic.LoadInt32(&cl.State.Inflight.sendQuota) <= 0 || cl.State.Inflight.Len() == 0 {
		return // the common case, without the lock
	}
	cl.lockSend()
	defer cl.State.sendMu.Unlock()
	cl.sendHeldLocked(now)
}

// sendHeldLocked is sendHeld for the holder of cl.State.sendMu. A held
// publish is queued on outbound, behind the publishes queued before it
// (telegate: upstream wrote it from the read goroutine, which could pass
// an older publish still queued). If outbound is full it stays held and
// WriteLoop retries after its next write (heldStalled).
func (cl *Client) sendHeldLocked(now int64) {
	if cl.Net.Conn == nil || cl.Closed() {
		return // sent on the next connection (ResendInflightMessages)
	}
	for atomic.LoadInt32(&cl.State.Inflight.sendQuota) > 0 {
		next, ok := cl.State.Inflight.NextImmediate()
		if !ok {
			return
		}
		if expired(next, now) {
			cl.dropInflight(next)
			continue
		}
		if len(cl.State.outbound) == cap(cl.State.outbound) {
			cl.State.heldStalled.Store(true)
			if len(cl.State.outbound) < cap(cl.State.outbound) {
				continue // WriteLoop took one meanwhile: try again
			}
			return
		}
		if next, ok = cl.State.Inflight.Release(next.PacketID); !ok {
			continue
		}
		cl.State.Inflight.DecreaseSendQuota()
		select {
		case cl.State.outbound <- &next:
			atomic.AddInt32(&cl.State.outboundQty, 1)
		default: // a QoS 0 publish took the room: held again
			cl.State.Inflight.SetHeld(next)
			cl.State.Inflight.IncreaseSendQuota()
			cl.State.heldStalled.Store(true)
			return
		}
	}
}

// lockSend takes cl.State.sendMu (telegate).
func (cl *Client) lockSend() {
	if cl.State.sendMu.TryLock() {
		return
	}
	if f := seamSendLockWait.Load(); f != nil {
		(*f)(cl)
	}
	cl.State.sendMu.Lock()
}

// publishSize is the size of PUBLISH pk as WritePacket writes it to the
// client, without a topic alias (telegate).
func (cl *Client) publishSize(pk packets.Packet) uint32 {
	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	if cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0x0 {
		pk.Mods.DisallowProblemInfo = true
	}
	if pk.Expiry > 0 {
		pk.Properties.MessageExpiryInterval = 1 // a four-byte property whatever its value
	}
	if pk.FixedHeader.Qos > 0 && pk.PacketID == 0 {
		pk.PacketID = 1 // not chosen yet; two bytes whatever its value
	}
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false
	buf := new(bytes.Buffer)
	if err := pk.PublishEncode(buf); err != nil {
		return math.MaxUint32
	}
	return uint32(buf.Len())
}

// ClearInflights deletes all inflight messages for the client, e.g. for a disconnected user with a clean session.
func (cl *Client) ClearInflights() {
	for _, tk := range cl.State.Inflight.GetAll(false) {
		if ok := cl.State.Inflight.Delete(tk.PacketID); ok {
			cl.ops.hooks.OnQosDropped(cl, tk)
			atomic.AddInt64(&cl.ops.info.Inflight, -1)
		}
	}
}

// ClearExpiredInflights deletes any inflight messages which have expired.
//
// telegate: of the server's own flows (isOutbound) only a held publish,
// never sent, expires. A PUBLISH sent to the client stays inflight until
// acknowledged, whatever its Message Expiry (MQTT 5 3.3.2.3.3, 4.9:
// expiry applies to messages not yet sent), as does a PUBREL: upstream
// deleted them, so their PUBACK / PUBCOMP freed no send quota and the
// client's quota shrank for good (with Receive Maximum 1, every later
// publish stayed held). The client's answers to its own flows expire as
// upstream.
func (cl *Client) ClearExpiredInflights(now, maximumExpiry int64) []uint16 {
	deleted := []uint16{}
	for _, tk := range cl.State.Inflight.GetAll(false) {
		expired := tk.ProtocolVersion == 5 && tk.Expiry > 0 && tk.Expiry < now // [MQTT-3.3.2-5]

		// If the maximum message expiry interval is set (greater than 0), and the message
		// retention period exceeds the maximum expiry, the message will be forcibly removed.
		enforced := maximumExpiry > 0 && now-tk.Created > maximumExpiry

		if isOutbound(tk) {
			// telegate: a held one with its expiry passed (any protocol
			// version: sendHeld would drop it too), removed only if still
			// held (deleteHeld is atomic with Release).
			if (enforced || tk.Expiry > 0 && tk.Expiry < now) && cl.State.Inflight.deleteHeld(tk.PacketID) {
				cl.ops.hooks.OnQosDropped(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
				deleted = append(deleted, tk.PacketID)
			}
			continue
		}

		if expired || enforced {
			if ok := cl.State.Inflight.Delete(tk.PacketID); ok {
				cl.ops.hooks.OnQosDropped(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
				deleted = append(deleted, tk.PacketID)
			}
		}
	}

	return deleted
}

// Read reads incoming packets from the connected client and transforms them into
// packets to be handled by the packetHandler.
func (cl *Client) Read(packetHandler ReadFn) error {
	for {
		if cl.Closed() {
			return nil
		}

		cl.refreshDeadline(cl.State.Keepalive)
		var fh packets.FixedHeader // telegate: on the stack, was new() per packet
		if err := cl.ReadFixedHeader(&fh); err != nil {
			return err
		}

		if err := cl.readAndHandle(&fh, packetHandler); err != nil {
			return err
		}
	}
}

// readAndHandle reads the rest of the packet fh starts and hands it to
// packetHandler. telegate: a separate function, not inlined, so that the
// packet value (about 800 bytes) is on the stack only while a packet is
// handled, not while Read waits for the next one (see attachClient).
//
//go:noinline
func (cl *Client) readAndHandle(fh *packets.FixedHeader, packetHandler ReadFn) error {
	pk, err := cl.ReadPacket(fh)
	if err == nil {
		err = packetHandler(cl, pk) // Process inbound packet.
	}
	// telegate: a pooled body goes back only if the packet was proven
	// to keep nothing of it (see Options.ReuseIgnoredPublishBody).
	if b := cl.State.body; b != nil {
		if cl.State.bodyFree && err == nil {
			if poisonPooledBodies {
				full := (*b)[:cap(*b)]
				for i := range full {
					full[i] = 0xA5
				}
			}
			publishBodies.Put(b)
		}
		cl.State.body, cl.State.bodyFree = nil, false
	}
	return err
}

// telegate: publishBodies holds the bodies of ignored PUBLISH packets for
// the next ones (Options.ReuseIgnoredPublishBody), as *[]byte.
var publishBodies sync.Pool

// Bodies up to maxPooledBody bytes are pooled; a new one has at least
// minPooledBody bytes of capacity so that a pool of them fits most.
const (
	maxPooledBody = 8 << 10
	minPooledBody = 512
)

// readBody returns the buffer for the body of the packet fh starts: a
// pooled one for a PUBLISH that may turn out to keep nothing of it
// (recorded in cl.State.body), else a fresh one. telegate patch.
func (cl *Client) readBody(fh *packets.FixedHeader) []byte {
	n := fh.Remaining
	if fh.Type != packets.Publish || n > maxPooledBody || !cl.ops.options.ReuseIgnoredPublishBody ||
		cl.Properties.ProtocolVersion >= 5 || cl.Net.Inline {
		return make([]byte, n)
	}
	b, _ := publishBodies.Get().(*[]byte)
	if b == nil {
		b = new([]byte)
	}
	if cap(*b) < n {
		*b = make([]byte, n, max(n, minPooledBody))
	}
	cl.State.body = b
	return (*b)[:n]
}

// Stop instructs the client to shut down all processing goroutines and disconnect.
func (cl *Client) Stop(err error) {
	cl.State.endOnce.Do(func() {

		if cl.Net.Conn != nil {
			_ = cl.Net.Conn.Close() // omit close error
		}

		if err != nil {
			cl.State.stopCause.Store(err)
		}

		if cl.State.cancelOpen != nil {
			cl.State.cancelOpen()
		}

		atomic.StoreInt64(&cl.State.disconnected, time.Now().Unix())
	})
}

// StopCause returns the reason the client connection was stopped, if any.
func (cl *Client) StopCause() error {
	if cl.State.stopCause.Load() == nil {
		return nil
	}
	return cl.State.stopCause.Load().(error)
}

// StopTime returns the the time the client disconnected in unix time, else zero.
func (cl *Client) StopTime() int64 {
	return atomic.LoadInt64(&cl.State.disconnected)
}

// Closed returns true if client connection is closed.
func (cl *Client) Closed() bool {
	return cl.State.open == nil || cl.State.open.Err() != nil
}

func (cl *Client) IsTakenOver() bool {
	return cl.State.isTakenOver.Load()
}

// ReadFixedHeader reads in the values of the next packet's fixed header.
func (cl *Client) ReadFixedHeader(fh *packets.FixedHeader) error {
	if cl.Net.bconn == nil {
		return ErrConnectionClosed
	}

	b, err := cl.Net.bconn.ReadByte()
	if err != nil {
		return err
	}

	err = fh.Decode(b)
	if err != nil {
		return err
	}

	var bu int
	fh.Remaining, bu, err = packets.DecodeLength(cl.Net.bconn)
	if err != nil {
		return err
	}

	if cl.ops.options.Capabilities.MaximumPacketSize > 0 && uint32(fh.Remaining+1) > cl.ops.options.Capabilities.MaximumPacketSize {
		return packets.ErrPacketTooLarge // [MQTT-3.2.2-15]
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(bu+1))
	return nil
}

// ReadPacket reads the remaining buffer into an MQTT packet.
func (cl *Client) ReadPacket(fh *packets.FixedHeader) (pk packets.Packet, err error) {
	atomic.AddInt64(&cl.ops.info.PacketsReceived, 1)

	pk.ProtocolVersion = cl.Properties.ProtocolVersion // inherit client protocol version for decoding
	pk.FixedHeader = *fh
	// telegate: read straight into the buffer the packet decodes from
	// (upstream read into one and decoded from a copy of it: two
	// allocations); it is fresh unless the packet may be proven to keep
	// nothing of it (readBody).
	px := cl.readBody(fh)
	n, err := io.ReadFull(cl.Net.bconn, px)
	if err != nil {
		return pk, err
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(n))
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(px)
	case packets.Disconnect:
		err = pk.DisconnectDecode(px)
	case packets.Connack:
		err = pk.ConnackDecode(px)
	case packets.Publish:
		err = pk.PublishDecode(px)
		if err == nil {
			atomic.AddInt64(&cl.ops.info.MessagesReceived, 1)
		}
	case packets.Puback:
		err = pk.PubackDecode(px)
	case packets.Pubrec:
		err = pk.PubrecDecode(px)
	case packets.Pubrel:
		err = pk.PubrelDecode(px)
	case packets.Pubcomp:
		err = pk.PubcompDecode(px)
	case packets.Subscribe:
		err = pk.SubscribeDecode(px)
	case packets.Suback:
		err = pk.SubackDecode(px)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(px)
	case packets.Unsuback:
		err = pk.UnsubackDecode(px)
	case packets.Pingreq:
	case packets.Pingresp:
	case packets.Auth:
		err = pk.AuthDecode(px)
	default:
		err = fmt.Errorf("invalid packet type; %v", pk.FixedHeader.Type)
	}

	if err != nil {
		return pk, err
	}

	if cl.ops.hooks.WantsPacketRead(pk.FixedHeader.Type) { // telegate: no packet copies when no hook wants this type
		pk, err = cl.ops.hooks.OnPacketRead(cl, pk)
	}
	return
}

// WritePacket encodes and writes a packet to the client.
func (cl *Client) WritePacket(pk packets.Packet) error {
	if cl.Closed() {
		return ErrConnectionClosed
	}

	if cl.Net.Conn == nil {
		return nil
	}

	if pk.Expiry > 0 {
		expiry := pk.Expiry - time.Now().Unix()
		if expiry < 1 {
			expiry = 1
		}
		pk.Properties.MessageExpiryInterval = uint32(expiry) // [MQTT-3.3.2-6]
	}

	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	if pk.Mods.MaxSize == 0 { // NB we use this statement to embed client packet sizes in tests
		pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	}

	if cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0x0 {
		pk.Mods.DisallowProblemInfo = true // [MQTT-3.1.2-29] strict, no problem info on any packet if set
	}

	if pk.FixedHeader.Type != packets.Connack || cl.Properties.Props.RequestResponseInfo == 0x1 || cl.ops.options.Capabilities.Compatibilities.AlwaysReturnResponseInfo {
		pk.Mods.AllowResponseInfo = true // [MQTT-3.1.2-28] we need to know which properties we can encode
	}

	pk = cl.ops.hooks.OnPacketEncode(cl, pk)

	var err error
	buf := new(bytes.Buffer)
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(buf)
	case packets.Connack:
		err = pk.ConnackEncode(buf)
	case packets.Publish:
		err = pk.PublishEncode(buf)
	case packets.Puback:
		err = pk.PubackEncode(buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(buf)
	case packets.Suback:
		err = pk.SubackEncode(buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(buf)
	case packets.Auth:
		err = pk.AuthEncode(buf)
	default:
		err = fmt.Errorf("%w: %v", packets.ErrNoValidPacketAvailable, pk.FixedHeader.Type)
	}
	if err == nil && pk.Mods.MaxSize > 0 && uint32(buf.Len()) > pk.Mods.MaxSize {
		err = packets.ErrPacketTooLarge // [MQTT-3.1.2-24] [MQTT-3.1.2-25]
	}
	if err != nil {
		cl.flushIfIdle() // telegate: nothing else may flush what is buffered
		return err
	}

	n, err := func() (int64, error) {
		cl.Lock()
		defer cl.Unlock()
		if len(cl.State.outbound) == 0 {
			if cl.Net.outbuf == nil {
				return buf.WriteTo(cl.Net.Conn)
			}

			// first write to buffer, then flush buffer
			n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
			err = cl.flushOutbuf()
			return int64(n), err
		}

		// there are more writes in the queue
		if cl.Net.outbuf == nil {
			if buf.Len() >= cl.ops.options.ClientNetWriteBufferSize {
				return buf.WriteTo(cl.Net.Conn)
			}
			cl.Net.outbuf = new(bytes.Buffer)
		}

		n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
		if cl.Net.outbuf.Len() < cl.ops.options.ClientNetWriteBufferSize {
			return int64(n), nil
		}

		err = cl.flushOutbuf()
		return int64(n), err
	}()
	if err != nil {
		return err
	}

	atomic.AddInt64(&cl.ops.info.BytesSent, n)
	atomic.AddInt64(&cl.ops.info.PacketsSent, 1)
	if pk.FixedHeader.Type == packets.Publish {
		atomic.AddInt64(&cl.ops.info.MessagesSent, 1)
	}

	cl.ops.hooks.OnPacketSent(cl, pk, buf.Bytes())

	return err
}

// flushIfIdle writes out what WritePacket buffered (outbuf) when nothing
// is left queued on outbound (telegate). A packet written while outbound
// is not empty is buffered, for WriteLoop to flush with the next queued
// one; when that one is not written (larger than the client's Maximum
// Packet Size, or not encodable) and was the last, nothing flushed the
// buffer: a PINGRESP, PUBACK or SUBACK written meanwhile waited for the
// connection's next write, possibly for good. A failed flush is not
// reported here: the connection is broken, and its read loop or the next
// write ends it.
func (cl *Client) flushIfIdle() {
	cl.Lock()
	defer cl.Unlock()
	if len(cl.State.outbound) == 0 {
		_ = cl.flushOutbuf()
	}
}

func (cl *Client) flushOutbuf() (err error) {
	if cl.Net.outbuf == nil {
		return
	}

	_, err = cl.Net.outbuf.WriteTo(cl.Net.Conn)
	if err == nil {
		cl.Net.outbuf = nil
	}
	return
}
