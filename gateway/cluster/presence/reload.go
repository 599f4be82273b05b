package presence

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
)

// SubjectRegistryReload carries the device registry reload broadcast
// (natsbus.SubjectRegistryReload).
const SubjectRegistryReload = "cluster.registry.reload"

// reloadMsg is the broadcast's body: who reloaded.
type reloadMsg struct {
	Replica string `json:"replica"`
}

// BroadcastReload tells every other replica to reload its device registry
// (sent by the replica that reloaded on SIGHUP).
func BroadcastReload(nc *nats.Conn, replica string) error {
	b, _ := json.Marshal(reloadMsg{Replica: replica})
	if err := nc.Publish(SubjectRegistryReload, b); err != nil {
		return fmt.Errorf("presence: registry reload broadcast: %w", err)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("presence: registry reload broadcast: %w", err)
	}
	return nil
}

// ListenReload calls reload for every broadcast sent by another replica.
// A body that is not a broadcast is logged and ignored.
func ListenReload(nc *nats.Conn, replica string, reload func(), log *slog.Logger) (*nats.Subscription, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sub, err := nc.Subscribe(SubjectRegistryReload, func(m *nats.Msg) {
		var r reloadMsg
		if err := json.Unmarshal(m.Data, &r); err != nil || r.Replica == "" {
			log.Warn("registry reload broadcast ignored: malformed", "size", len(m.Data))
			return
		}
		if r.Replica == replica {
			return
		}
		log.Info("device registry reload requested by another replica", "from", r.Replica)
		reload()
	})
	if err != nil {
		return nil, fmt.Errorf("presence: subscribe %s: %w", SubjectRegistryReload, err)
	}
	return sub, nil
}
