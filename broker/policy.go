package broker

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"github.com/telegate/telegate/broker/acl"
	"github.com/telegate/telegate/broker/listener"
	"github.com/telegate/telegate/broker/registry"
)

// policy is the broker's own mochi hook: identity, ACL, rate limits,
// keepalive clamp, CONNACK capabilities and the fixes for mochi defects.
// It is added first, so it runs before any hook added with AddHook.
type policy struct {
	mqtt.HookBase
	b *Broker
	// shared holds, per v5 client with a SUBSCRIBE being processed, the
	// indexes of its shared-subscription filters (sharedMark), from
	// OnSubscribe to the SUBACK's OnPacketEncode (both on the client's
	// read goroutine); dropped at disconnect.
	shared sync.Map // *mqtt.Client -> sharedMark
}

// sharedMark: the SUBSCRIBE packet id and its $share/... filter indexes.
type sharedMark struct {
	id  uint16
	idx []int
}

func (h *policy) ID() string { return "telegate-policy" }

func (h *policy) Provides(e byte) bool {
	switch e {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablished,
		mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnPacketEncode, mqtt.OnPublish,
		mqtt.OnPacketProcessed, mqtt.OnDisconnect, mqtt.OnSubscribe:
		return true
	}
	return false
}

// WantsPacketRead implements mqtt.PacketReadFilter: OnPacketRead acts on
// PUBLISH and DISCONNECT only, so mochi does not call it (and copy the
// packet in and out) for other packets.
func (h *policy) WantsPacketRead(t byte) bool { return t == packets.Publish || t == packets.Disconnect }

// OnConnect runs right after the CONNECT packet was read, before
// authentication. It marks the socket as past the connect phase and clamps
// the keepalive: mochi disables all deadlines for keepalive 0, so such a
// client (or one asking for more than MaxKeepalive) gets MaxKeepalive,
// announced to v5 clients as Server Keep Alive.
//
// It also refuses a CONNECT with a Will QoS but no Will flag: a malformed
// packet (MQTT 3.1.1 [MQTT-3.1.2-13], MQTT 5 [MQTT-3.1.2-11]) that mochi
// accepts; the connection is closed without CONNACK ([MQTT-3.1.4-1]) and
// counted as a protocol violation. (A Will retain flag without the Will
// flag mochi refuses itself, with CONNACK 0x82 / 0x05.)
func (h *policy) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if !pk.Connect.WillFlag && pk.Connect.WillQos != 0 {
		h.b.stats.Listener.ProtocolViolations.Add(1)
		h.b.log.Info("connect refused", "client", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote,
			"listener", cl.Net.Listener, "reason", "will QoS without will flag")
		return packets.ErrMalformedQos
	}
	if lc, ok := cl.Net.Conn.(*listener.Conn); ok {
		lc.MarkEstablished()
	}
	maxKA := uint16(h.b.cfg.MaxKeepalive / time.Second)
	if cl.State.Keepalive == 0 || cl.State.Keepalive > maxKA {
		cl.State.Keepalive = maxKA
		cl.State.ServerKeepalive = true
	}
	return nil
}

// OnConnectAuthenticate establishes the device identity. The client id must
// be a registered, enabled device id, and either
//   - the username equals the client id and the password verifies against
//     the registry, or
//   - the connection is mutual TLS, the verified client certificate's CN
//     equals the client id, the username is empty or equal, and the
//     password, if sent, verifies.
//
// It also refuses a Will whose topic the device may not publish to, with
// CONNACK 0x87 (v5) / 0x05 (v3.1.1): mochi publishes Wills without any ACL
// check.
func (h *policy) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	st := &h.b.stats
	id := pk.Connect.ClientIdentifier
	user := string(pk.Connect.Username)
	refuse := func(c interface{ Add(uint64) uint64 }, reason string, err error) bool {
		c.Add(1)
		st.AuthFailures.Add(1)
		attrs := []any{"client", id, "remote", cl.Net.Remote, "listener", cl.Net.Listener, "reason", reason}
		if err != nil {
			attrs = append(attrs, "error", err.Error())
		}
		h.b.log.Info("connect refused", attrs...)
		return false
	}
	classify := func(err error) bool {
		switch {
		case errors.Is(err, registry.ErrUnknownDevice):
			return refuse(&st.RefusedUnknownDevice, "unknown device", nil)
		case errors.Is(err, registry.ErrDisabled):
			return refuse(&st.RefusedDisabled, "device disabled", nil)
		default:
			return refuse(&st.RefusedBadSecret, "bad secret", nil)
		}
	}

	if h.b.Draining() {
		h.b.log.Info("connect refused", "client", id, "remote", cl.Net.Remote, "listener", cl.Net.Listener,
			"reason", "draining")
		h.b.refuseDraining(cl)
		return false
	}
	if id == "" {
		// Every device has an id: an empty one is rejected as an invalid
		// client identifier, CONNACK 0x85 (v5) / 0x02 (3.1.1,
		// [MQTT-3.1.3-9]), not as bad credentials.
		refuse(&st.RefusedIdentityMismatch, "empty client id", nil)
		_ = h.b.server.SendConnack(cl, packets.ErrClientIdentifierNotValid, false, nil)
		cl.Stop(packets.ErrClientIdentifierNotValid)
		return false
	}
	var dev registry.Device
	hash := "" // the bcrypt hash the password matched; "" for a certificate alone
	var certUntil time.Time
	if cn, until, ok := peerCertificate(cl.Net.Conn); ok {
		certUntil = until
		if !h.b.now().Before(until) {
			// Valid at the handshake, expired by the time the CONNECT was
			// read (within the connect timeout): the expiry timer only arms
			// for expiries ahead, so such a session would never be ended.
			return refuse(&st.RefusedBadSecret, "client certificate expired", nil)
		}
		if cn != id {
			return refuse(&st.RefusedIdentityMismatch, "client id differs from certificate CN", nil)
		}
		if user != "" && user != id {
			return refuse(&st.RefusedIdentityMismatch, "username differs from client id", nil)
		}
		d, found := h.b.reg.Lookup(id)
		switch {
		case !found:
			return classify(registry.ErrUnknownDevice)
		case d.Disabled:
			return classify(registry.ErrDisabled)
		}
		if pk.Connect.PasswordFlag {
			_, matched, err := h.b.reg.VerifyHash(id, pk.Connect.Password)
			if err != nil {
				return classify(err)
			}
			hash = matched
		}
		dev = d
	} else {
		if user != id {
			return refuse(&st.RefusedIdentityMismatch, "username differs from client id", nil)
		}
		d, matched, err := h.b.reg.VerifyHash(id, pk.Connect.Password)
		if err != nil {
			return classify(err)
		}
		dev, hash = d, matched
	}

	if pk.Connect.WillFlag && !acl.CanPublish(dev.Kind, dev.ID, pk.Connect.WillTopic) {
		st.RefusedWill.Add(1)
		st.AuthFailures.Add(1)
		h.b.log.Info("connect refused", "client", id, "remote", cl.Net.Remote, "listener", cl.Net.Listener,
			"reason", "will topic not allowed", "will_topic", pk.Connect.WillTopic)
		// Our own CONNACK, then stop the client so the one mochi sends
		// next (0x86) is never written.
		_ = h.b.server.SendConnack(cl, packets.ErrNotAuthorized, false, nil)
		cl.Stop(packets.ErrNotAuthorized)
		return false
	}
	if atomic.LoadInt64(&h.b.server.Info.ClientsConnected) >= h.b.cfg.MaxClients && !h.b.hasOpenClient(id, cl) {
		// Full, and not a reconnect of a device whose connection is still
		// open (a takeover frees that connection's place).
		st.RefusedFull.Add(1)
		h.b.log.Info("connect refused", "client", id, "remote", cl.Net.Remote, "listener", cl.Net.Listener,
			"reason", "broker full")
		code := packets.ErrServerBusy // 3.1.1: 0x03 (v3ConnackCode)
		_ = h.b.server.SendConnack(cl, code, false, nil)
		cl.Stop(code)
		return false
	}
	h.b.recordAuth(cl, hash, hash == "", certUntil)
	return true
}

// peerCertificate returns the subject CN of a verified client certificate
// and when it stops being valid: the earliest NotAfter of its verified
// chain (an intermediate CA may expire before the leaf).
func peerCertificate(c net.Conn) (cn string, until time.Time, ok bool) {
	lc, ok := c.(*listener.Conn)
	if !ok {
		return "", time.Time{}, false
	}
	cs, ok := lc.TLSConnectionState()
	if !ok || len(cs.PeerCertificates) == 0 || len(cs.VerifiedChains) == 0 {
		return "", time.Time{}, false
	}
	for _, chain := range cs.VerifiedChains[:1] {
		for _, c := range chain {
			if until.IsZero() || c.NotAfter.Before(until) {
				until = c.NotAfter
			}
		}
	}
	return cs.PeerCertificates[0].Subject.CommonName, until, true
}

func (h *policy) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if lc, ok := cl.Net.Conn.(*listener.Conn); ok {
		lc.MarkSession()
	}
	h.b.stats.ConnectsAccepted.Add(1)
	h.b.trackClient(cl)
	h.b.log.Debug("device connected", "client", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener,
		"protocol", cl.Properties.ProtocolVersion, "keepalive", cl.State.Keepalive)
}

// OnACLCheck applies the device ACL. mochi calls it for publish topics
// (write), subscription filters and deliveries to subscribers (read). The
// identity is the client id, which OnConnectAuthenticate bound to the
// registry; a device removed or disabled since is denied everything.
func (h *policy) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		// mochi checks a publish on the client's read goroutine: the
		// client's state (and its verdict cache) is its own there.
		var st *connState
		if !cl.Net.Inline {
			st = h.b.connOf(cl)
		}
		if h.b.canPublish(st, cl.ID, topic) {
			return true
		}
	} else if d, ok := h.b.reg.Lookup(cl.ID); ok && !d.Disabled && acl.CanSubscribe(d.Kind, d.ID, topic) {
		return true
	}
	if write {
		h.b.stats.ACLDeniedPublish.Add(1)
	} else {
		h.b.stats.ACLDeniedSubscribe.Add(1)
	}
	h.b.log.Debug("acl denied", "client", cl.ID, "topic", topic, "publish", write)
	return false
}

// OnPacketRead fixes mochi defects in PUBLISH handling before mochi sees
// the packet:
//   - QoS 2 is refused (see below) and an MQTT 5 publish with the retain
//     flag gets DISCONNECT 0x9A Retain not supported: mochi would downgrade
//     the one and silently accept the other;
//   - inbound v5 topic aliases are resolved before the ACL check: mochi
//     checks the ACL against the topic name as sent, which is empty when a
//     client re-uses an alias, and only resolves the alias afterwards;
//   - a topic mochi considers invalid for publishing ($SYS/..., "$share")
//     is silently dropped by mochi, even at QoS 1, leaving the client
//     waiting for a PUBACK forever; such a client is disconnected instead
//     (v5: DISCONNECT 0x90 Topic Name invalid);
//   - a v5 publish with an empty topic and an alias that was never set is a
//     protocol error (DISCONNECT 0x94), not a publish to topic "";
//   - a v5 publish that declares a UTF-8 payload (payload format 1) but
//     carries invalid UTF-8 is refused (DISCONNECT 0x99).
//
// While the broker drains, a PUBLISH is not processed: the client is
// disconnected with 0x9C Use another server instead (drain.go).
func (h *policy) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Disconnect {
		h.clampDisconnectExpiry(cl, &pk)
		return pk, nil
	}
	if pk.FixedHeader.Type != packets.Publish {
		return pk, nil
	}
	var st *connState
	if !cl.Net.Inline {
		st = h.b.connOf(cl)
	}
	err := h.checkPublish(cl, &pk, st) // by pointer: a Packet is 800 bytes
	if err != nil || cl.Net.Inline {
		return pk, err
	}
	if !h.b.beginPublish(st) {
		h.b.disconnectForDrain(cl, h.b.handoffFor(cl))
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// clampDisconnectExpiry lowers the Session Expiry Interval of an MQTT 5
// DISCONNECT to the broker's maximum (Config.SessionExpiry). mochi clamps
// the CONNECT's value but takes the DISCONNECT's as sent (MQTT 5
// 3.14.2.2.2 lets a client change it there), so a device could keep its
// session, subscriptions and queued commands for 136 years by sending
// 0xFFFFFFFF at disconnect. A value 0 at CONNECT made non-zero here stays
// non-zero: mochi then answers DISCONNECT 0x82 Protocol Error.
func (h *policy) clampDisconnectExpiry(cl *mqtt.Client, pk *packets.Packet) {
	if cl.Properties.ProtocolVersion != 5 || !pk.Properties.SessionExpiryIntervalFlag {
		return
	}
	if limit := uint32(h.b.cfg.SessionExpiry / time.Second); pk.Properties.SessionExpiryInterval > limit {
		pk.Properties.SessionExpiryInterval = limit
	}
}

// OnPacketProcessed ends the publish hand-off begun in OnPacketRead.
func (h *policy) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type == packets.Publish && !cl.Net.Inline {
		h.b.endPublish(cl, h.b.connOf(cl))
	}
}

// checkPublish is OnPacketRead's check of a PUBLISH; st is the client's
// state (nil for the inline client or an untracked one).
func (h *policy) checkPublish(cl *mqtt.Client, pk *packets.Packet, st *connState) error {
	if pk.FixedHeader.Qos == 2 {
		// QoS 2 is not offered (Maximum QoS 1). mochi would downgrade the
		// publish and answer PUBACK, which is no valid QoS 2 flow: the
		// client waits for PUBREC. MQTT 5 [MQTT-3.2.2-11]: DISCONNECT 0x9B
		// QoS not supported; MQTT 3.1.1 [MQTT-3.3.5-2]: close the
		// connection without acknowledging.
		h.b.stats.QoS2Refused.Add(1)
		h.b.log.Info("publish refused: QoS 2 not supported, disconnecting", "client", cl.ID,
			"topic", pk.TopicName, "size", len(pk.Payload), "protocol", cl.Properties.ProtocolVersion)
		if cl.Properties.ProtocolVersion == 5 {
			_ = h.b.server.DisconnectClient(cl, packets.ErrQosNotSupported)
		} else {
			cl.Stop(packets.ErrQosNotSupported)
		}
		return packets.ErrRejectPacket
	}
	if pk.FixedHeader.Retain && cl.Properties.ProtocolVersion == 5 {
		// Retain Available is 0 in the CONNACK [MQTT-3.2.2-14]. (3.1.1
		// clients cannot be told; OnPublish drops their retain flag.)
		h.b.stats.RetainRefused.Add(1)
		h.b.log.Info("publish refused: retain not supported, disconnecting", "client", cl.ID,
			"topic", pk.TopicName, "size", len(pk.Payload))
		_ = h.b.server.DisconnectClient(cl, packets.ErrRetainNotSupported)
		return packets.ErrRejectPacket
	}
	if cl.Properties.ProtocolVersion == 5 {
		alias := pk.Properties.TopicAlias
		if pk.Properties.TopicAliasFlag && alias > 0 && alias <= TopicAliasMaximum {
			pk.TopicName = cl.State.TopicAliases.Inbound.Set(alias, pk.TopicName)
		}
	}
	if cl.Properties.ProtocolVersion == 5 && pk.TopicName == "" {
		// An alias that was never set, used with an empty topic: a
		// protocol error, which mochi would pass on as topic "".
		h.b.log.Debug("publish with unknown topic alias, disconnecting", "client", cl.ID)
		_ = h.b.server.DisconnectClient(cl, packets.ErrTopicAliasInvalid)
		return packets.ErrRejectPacket
	}
	if pk.Properties.PayloadFormatFlag && pk.Properties.PayloadFormat == 1 && !utf8.Valid(pk.Payload) {
		// The client declared UTF-8 text but sent something else.
		h.b.log.Debug("publish payload is not the UTF-8 it claims, disconnecting", "client", cl.ID)
		_ = h.b.server.DisconnectClient(cl, packets.ErrPayloadFormatInvalid)
		return packets.ErrRejectPacket
	}
	if !st.validPublishTopic(pk.TopicName) {
		h.b.stats.ACLDeniedPublish.Add(1)
		h.b.log.Debug("publish to invalid topic, disconnecting", "client", cl.ID, "topic", pk.TopicName)
		if cl.Properties.ProtocolVersion == 5 {
			_ = h.b.server.DisconnectClient(cl, packets.ErrTopicNameInvalid)
		}
		return packets.ErrRejectPacket
	}
	return nil
}

// OnPacketEncode withholds DISCONNECT from MQTT 3.1.1 clients and
// completes CONNACKs. mochi does not advertise most of its
// limits to v5 clients, so a successful v5 CONNACK gets Maximum Packet
// Size, Topic Alias Maximum, Retain Available 0 and Shared Subscription
// Available 0 added. mochi also writes v5-only reason codes (0x87, 0x9A,
// ...) into v3.1.1 CONNACKs, where only 1-5 are valid: v3ConnackCode maps
// them.
func (h *policy) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Disconnect && cl.Properties.ProtocolVersion < 5 {
		// MQTT 3.1.1 has no server-to-client DISCONNECT, but mochi sends
		// one whenever it disconnects a client (ACL-denied QoS 1 publish,
		// receive maximum, session takeover, shutdown, Broker.Disconnect).
		// Close the connection now: the packet is then written to a closed
		// socket and never reaches the client.
		cl.Stop(packets.Code{Code: pk.ReasonCode, Reason: "disconnected by server"})
		return pk
	}
	if pk.FixedHeader.Type == packets.Suback {
		return h.sharedSuback(cl, pk)
	}
	if pk.FixedHeader.Type != packets.Connack {
		return pk
	}
	if cl.Properties.ProtocolVersion < 5 {
		pk.ReasonCode = v3ConnackCode(pk.ReasonCode, cl.Properties.Props.AssignedClientID != "")
		return pk
	}
	if pk.ReasonCode == packets.CodeSuccess.Code {
		pk.Properties.MaximumPacketSize = uint32(h.b.cfg.MaxPacketSize)
		pk.Properties.TopicAliasMaximum = TopicAliasMaximum
		pk.Properties.RetainAvailable = 0
		pk.Properties.RetainAvailableFlag = true
		pk.Properties.SharedSubAvailable = 0
		pk.Properties.SharedSubAvailableFlag = true
	}
	return pk
}

// OnSubscribe notes the shared-subscription filters ($share/{group}/...)
// of an MQTT 5 SUBSCRIBE. Shared Subscription Available is 0, so their
// SUBACK reason is 0x9E Shared Subscriptions not supported
// ([MQTT-3.2.2-18] family; mochi would answer 0x87 from the ACL). MQTT
// 3.1.1 has no shared subscriptions: there such a filter is an ordinary
// one, refused by the ACL with 0x80.
func (h *policy) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Properties.ProtocolVersion < 5 {
		return pk
	}
	var idx []int
	for i, f := range pk.Filters {
		if mqtt.IsSharedFilter(f.Filter) {
			idx = append(idx, i)
		}
	}
	if idx != nil {
		h.shared.Store(cl, sharedMark{id: pk.PacketID, idx: idx})
	}
	return pk
}

// sharedSuback sets 0x9E for the filters OnSubscribe noted.
func (h *policy) sharedSuback(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	v, ok := h.shared.LoadAndDelete(cl)
	if !ok || v.(sharedMark).id != pk.PacketID {
		return pk
	}
	codes := append([]byte(nil), pk.ReasonCodes...)
	for _, i := range v.(sharedMark).idx {
		if i < len(codes) {
			codes[i] = packets.ErrSharedSubscriptionsNotSupported.Code
		}
	}
	pk.ReasonCodes = codes
	return pk
}

// v3ConnackCode maps the reason code of a CONNACK to a 3.1.1 client
// (mochi has already mapped some v5 codes, not all) onto the 3.1.1 return
// codes 0x00-0x05. emptyID: the CONNECT had an empty client id (mochi
// answers the 3.1.1 case "empty id without CleanSession" with 0x80, where
// [MQTT-3.1.3-8] requires 0x02).
func v3ConnackCode(code byte, emptyID bool) byte {
	switch code {
	case 0x00, packets.Err3UnsupportedProtocolVersion.Code, packets.Err3ClientIdentifierNotValid.Code,
		packets.Err3ServerUnavailable.Code, packets.ErrMalformedUsernameOrPassword.Code, packets.Err3NotAuthorized.Code:
		return code
	case packets.ErrUnsupportedProtocolVersion.Code:
		return packets.Err3UnsupportedProtocolVersion.Code
	case packets.ErrClientIdentifierNotValid.Code:
		return packets.Err3ClientIdentifierNotValid.Code
	case packets.ErrServerUnavailable.Code, packets.ErrServerBusy.Code,
		packets.ErrUseAnotherServer.Code, packets.ErrServerMoved.Code, packets.ErrServerShuttingDown.Code:
		return packets.Err3ServerUnavailable.Code
	case packets.ErrUnspecifiedError.Code:
		if emptyID {
			return packets.Err3ClientIdentifierNotValid.Code
		}
	}
	// Bad credentials (0x86), not authorized (0x87, a refused Will) and
	// the v5-only refusals (QoS or retain not supported, ...).
	return packets.Err3NotAuthorized.Code
}

// OnPublish enforces the per-device rate limit and drops the retain flag
// (retained messages are not offered to devices). Over the limit:
//   - QoS 0 is dropped (not delivered, not passed to later hooks);
//   - QoS 1 from a v5 client is answered with PUBACK 0x97 Quota exceeded;
//   - QoS 1 from a v3.1.1 client disconnects it: mochi ignores errors
//     from OnPublish for v3 clients and would acknowledge the message.
//
// Refused messages return packets.ErrRejectPacket so that later hooks
// (the gateway's ingest) never see them.
func (h *policy) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	pk.FixedHeader.Retain = false
	if h.b.limiter(h.b.connOf(cl), cl.ID).Allow() {
		return pk, nil
	}
	h.b.stats.RateLimited.Add(1)
	switch {
	case pk.FixedHeader.Qos == 0:
	case cl.Properties.ProtocolVersion == 5:
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Puback},
			PacketID:    pk.PacketID,
			ReasonCode:  packets.ErrQuotaExceeded.Code,
			Properties:  packets.Properties{ReasonString: packets.ErrQuotaExceeded.Reason},
		})
	default:
		h.b.stats.RateLimitDisconnects.Add(1)
		h.b.log.Info("device disconnected: publish rate exceeded", "client", cl.ID, "remote", cl.Net.Remote)
		cl.Stop(packets.ErrQuotaExceeded)
	}
	return pk, packets.ErrRejectPacket
}

// OnDisconnect frees the device's rate limiter unless another connection
// of the same device (a session takeover) is live, and forgets how the
// session authenticated.
func (h *policy) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.shared.Delete(cl)
	h.b.rates.release(cl.ID, h.b.hasOpenClient(cl.ID, cl))
	h.b.forget(cl.ID, cl)
	h.b.untrackClient(cl)
}

// afterPanic is called by the listeners after a panic was recovered while
// serving conn. mochi's own cleanup did not run to the end, so the client
// is treated as disconnected: a clean session is discarded (as mochi does on
// a normal disconnect) and its rate limiter freed.
func (b *Broker) afterPanic(conn net.Conn, _ any) {
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Conn != conn {
			continue
		}
		cl.Stop(packets.ErrUnspecifiedError)
		b.forget(cl.ID, cl)
		clean := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
			(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
		if clean {
			b.discardSession(cl)
		} else {
			b.rates.release(cl.ID, b.hasOpenClient(cl.ID, cl))
		}
	}
}

// limiters holds one token bucket per connected device id.
type limiters struct {
	mu    sync.Mutex // guards m
	m     map[string]*rate.Limiter
	limit rate.Limit
	burst int
	// epoch grows (under mu) whenever a limiter is dropped from m: a
	// limiter a connection remembered (connState.lim) is m's as long as
	// the epoch has not changed since it was read.
	epoch atomic.Uint64
}

func newLimiters(perSecond float64, burst int) *limiters {
	l := rate.Limit(perSecond)
	if perSecond == 0 {
		l = rate.Inf
	}
	return &limiters{m: make(map[string]*rate.Limiter), limit: l, burst: burst}
}

func (l *limiters) get(id string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[id]
	if !ok {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[id] = lim
	}
	return lim
}

// release drops the limiter of id unless keep is true.
func (l *limiters) release(id string, keep bool) {
	if keep {
		return
	}
	l.mu.Lock()
	if _, ok := l.m[id]; ok {
		delete(l.m, id)
		l.epoch.Add(1)
	}
	l.mu.Unlock()
}

func (l *limiters) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
