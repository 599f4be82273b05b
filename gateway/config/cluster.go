package config

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Cluster configures how this gateway shares state with other replicas on
// the same NATS JetStream cluster (docs/scaling.md).
type Cluster struct {
	// ReplicaID names this replica in leases and tick records (logs and
	// operators read it). Empty: the host name and the process id
	// (ReplicaIDOrDefault). Running replicas must not share one; the lease
	// holder id adds a random suffix per start, so a restart is always a
	// new contender.
	ReplicaID string `yaml:"replica_id"`
	// LeaseTTL is how long a silent leader of a singleton job (the feature
	// scheduler) keeps its lease: a dead leader is replaced after about
	// this long. It must exceed a JetStream leader election (seconds).
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

func clusterDefaults() Cluster { return Cluster{LeaseTTL: 15 * time.Second} }

func (c Cluster) validate() []error {
	var errs []error
	bad := func(key, why string) { errs = append(errs, fmt.Errorf("%w: cluster.%s: %s", ErrInvalid, key, why)) }
	if c.LeaseTTL < time.Second {
		bad("lease_ttl", "must be at least 1s")
	}
	for _, r := range c.ReplicaID {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			bad("replica_id", "only letters, digits, '-', '_' and '.'")
			break
		}
	}
	return errs
}

// ReplicaIDOrDefault is ReplicaID, or "<hostname>-<pid>" when it is empty.
func (c Cluster) ReplicaIDOrDefault() string {
	if c.ReplicaID != "" {
		return c.ReplicaID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "gateway"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}
