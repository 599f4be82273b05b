// SPDX-License-Identifier: MIT

package mqtt

import "sync/atomic"

// telegate: test seams, nil outside the package's tests. Each is loaded
// atomically (a test sets it while the server's goroutines run) and lets
// zz_telegate_order_test.go put the publisher goroutine and the client's
// read goroutine in a chosen interleaving, without sleeps.
var (
	// seamQuotaFreed runs on the client's read goroutine once a PUBACK
	// has given a send-quota slot back, before held publishes are sent.
	seamQuotaFreed atomic.Pointer[func(cl *Client)]
	// seamHoldDecided runs in publishToClient once it has decided whether
	// a QoS 1/2 publish is sent now (held false) or held.
	seamHoldDecided atomic.Pointer[func(cl *Client, held bool)]
	// seamSendLockWait runs when a goroutine finds the client's send lock
	// taken and is about to wait for it.
	seamSendLockWait atomic.Pointer[func(cl *Client)]
	// seamSessionCopied runs in inheritClientSession once the stored
	// publishes of old, the session being taken over, are copied for
	// its new client cl.
	seamSessionCopied atomic.Pointer[func(old, cl *Client)]
	// seamSessionEnding runs first in detachClient, once the client's
	// read loop has ended: before its will and its clean-up.
	seamSessionEnding atomic.Pointer[func(cl *Client)]
	// seamSessionEnded runs at the end of detachClient.
	seamSessionEnded atomic.Pointer[func(cl *Client)]
	// seamClientExpiring runs in clearExpiredClients once it has found
	// cl's session expired, before it takes the client id's lock.
	seamClientExpiring atomic.Pointer[func(cl *Client)]
	// seamClientIDLockWait runs when a goroutine finds a client id's lock
	// (clientIDLocks) taken and is about to wait for it.
	seamClientIDLockWait atomic.Pointer[func(id string)]
	// seamClientIDTaken runs in establishSession once cl has taken its
	// client id (takeClientID, lock released), before CONNACK.
	seamClientIDTaken atomic.Pointer[func(cl *Client)]
	// seamWriteLoopNext runs in the client's WriteLoop before it waits
	// for the next packet queued on outbound.
	seamWriteLoopNext atomic.Pointer[func(cl *Client)]
)
