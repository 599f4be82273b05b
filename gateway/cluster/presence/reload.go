package presence

import (
	"context"
	"encoding/json"
	"fmt"
)

// ReloadKey is the sessions-bucket key of the last device registry reload
// request. It can never be a claim's key: plain claim keys hold no '.',
// encoded ones start with "x.".
const ReloadKey = "r.registry"

// reloadMsg is the request's value: who reloaded, and a nonce so that
// two requests by one replica are two updates.
type reloadMsg struct {
	Replica string `json:"replica"`
	Nonce   string `json:"nonce"`
}

// RequestReload asks every other replica to reload its device registry
// (sent by the replica that reloaded on SIGHUP). The request is a put into
// the sessions bucket, which every replica already watches: unlike a core
// NATS message, a replica that is disconnected from NATS at that moment
// gets it when its watch resumes (the watch is an ordered consumer, which
// restarts after the last update it delivered). Replicas call
// Config.Reload; the sender does not.
func (p *Presence) RequestReload(ctx context.Context) error {
	b, _ := json.Marshal(reloadMsg{Replica: p.cfg.Replica, Nonce: randomHex(8)})
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	if _, err := p.cfg.KV.Put(ctx, ReloadKey, b); err != nil {
		return fmt.Errorf("presence: registry reload request: %w", err)
	}
	return nil
}

// observeReload applies a reload request seen in the bucket.
func (p *Presence) observeReload(rev uint64, val []byte) {
	var r reloadMsg
	if err := json.Unmarshal(val, &r); err != nil || r.Replica == "" {
		p.stats.BadClaims.Add(1)
		p.log.Warn("registry reload request ignored: malformed", "revision", rev, "size", len(val))
		return
	}
	if r.Replica == p.cfg.Replica || p.cfg.Reload == nil {
		return
	}
	p.stats.Reloads.Add(1)
	p.log.Info("device registry reload requested by another replica", "from", r.Replica, "revision", rev)
	p.cfg.Reload()
}
