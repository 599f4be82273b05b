package app

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
)

// natsClients are the components' own NATS connections, one per role, each
// with that role's credentials and rights (natsbus roles). Owned by this
// file; opened during Start, closed by Close right before the bus.
type natsClients struct {
	mu sync.Mutex // guards byRole
	// byRole: role -> its connection.
	byRole map[string]*natsbus.Client
}

// natsClient returns role's connection, opening it on first use (with opts).
func (a *App) natsClient(role string, opts ...jetstream.JetStreamOpt) (*natsbus.Client, error) {
	a.natsc.mu.Lock()
	defer a.natsc.mu.Unlock()
	if c, ok := a.natsc.byRole[role]; ok {
		return c, nil
	}
	c, err := a.bus.Client(role, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats %s connection: %w", role, err)
	}
	if a.natsc.byRole == nil {
		a.natsc.byRole = map[string]*natsbus.Client{}
	}
	a.natsc.byRole[role] = c
	return c, nil
}

// closeNATSClients drains and closes the components' connections.
func (a *App) closeNATSClients() {
	a.natsc.mu.Lock()
	defer a.natsc.mu.Unlock()
	for role, c := range a.natsc.byRole {
		c.Close()
		delete(a.natsc.byRole, role)
	}
}
