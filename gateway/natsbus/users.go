package natsbus

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrNoEmbedded is returned by SetUsers when the bus is connected to an
// external server (users are then configured on that server).
var ErrNoEmbedded = errors.New("natsbus: no embedded server")

// InternalUser is the name of the embedded server's full-rights user that
// the gateway's own connections map to once users are configured.
const InternalUser = "telegate-internal"

// User is a user of the embedded NATS server with publish and subscribe
// allow lists (NATS subject wildcards). Password may be plain text or a
// bcrypt hash ("$2a$..."), which nats-server compares as such.
type User struct {
	Name      string
	Password  string
	Publish   []string // subjects the user may publish to; empty: none
	Subscribe []string // subjects the user may subscribe to; empty: none
}

// usersState remembers the embedded server's base options for reloads.
type usersState struct {
	mu   sync.Mutex
	opts *server.Options
}

// SetUsers (re)configures the users of the embedded server at run time.
// Connections without credentials (the gateway's own, and local tools on
// loopback) keep full rights: they map to InternalUser (nats-server's
// no_auth_user, set by Open), exactly as before users existed; a client that presents a
// user's credentials gets that user's permissions only. Against an external
// server it returns ErrNoEmbedded: configure users there.
func (b *Bus) SetUsers(users []User) error {
	if b.srv == nil {
		return ErrNoEmbedded
	}
	b.users.mu.Lock()
	defer b.users.mu.Unlock()
	base := b.users.opts
	if base == nil {
		return ErrNoEmbedded
	}
	o := base.Clone()
	// The running server resolved a random port; reload must not change it.
	if _, p, err := net.SplitHostPort(b.srv.Addr().String()); err == nil {
		if n, err := strconv.Atoi(p); err == nil {
			o.Port = n
		}
	}
	// Keep the full-rights users the server started with (internal, and
	// the configured nats.user); replace the restricted ones.
	o.Users = nil
	for _, u := range base.Users {
		if u.Permissions == nil {
			o.Users = append(o.Users, u)
		}
	}
	for _, u := range users {
		if u.Name == "" || isFullUser(base, u.Name) {
			return fmt.Errorf("natsbus: invalid user name %q", u.Name)
		}
		o.Users = append(o.Users, &server.User{Username: u.Name, Password: u.Password, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: allowList(u.Publish)},
			Subscribe: &server.SubjectPermission{Allow: allowList(u.Subscribe)},
		}})
	}
	if err := b.srv.ReloadOptions(o); err != nil {
		return fmt.Errorf("natsbus: reload users: %w", err)
	}
	return nil
}

// withInternalUser makes the embedded server authenticate users and returns
// the generated password of InternalUser (full rights), which the gateway's
// own connection uses. A configured nats.user gets full rights too.
// Restricted users are added later by SetUsers (nats-server can reload
// users, but not no_auth_user).
//
// anonymous maps credential-less clients to InternalUser (no_auth_user). It
// is only enabled when the embedded server listens on loopback, where only
// local processes (the gateway, `nats` CLI during `make run`) can reach it;
// on any other address a client without credentials is refused.
func withInternalUser(o *server.Options, user, password string, anonymous bool) (string, error) {
	pw := make([]byte, 24)
	if _, err := rand.Read(pw); err != nil {
		return "", fmt.Errorf("natsbus: internal password: %w", err)
	}
	internal := hex.EncodeToString(pw)
	o.Users = []*server.User{{Username: InternalUser, Password: internal}}
	if user != "" && user != InternalUser {
		o.Users = append(o.Users, &server.User{Username: user, Password: password})
	}
	if anonymous {
		o.NoAuthUser = InternalUser
	}
	return internal, nil
}

// loopbackHost reports whether host (from host:port) only accepts local
// connections.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isFullUser(o *server.Options, name string) bool {
	for _, u := range o.Users {
		if u.Username == name && u.Permissions == nil {
			return true
		}
	}
	return false
}

// allowList maps an empty list to a subject nobody can use (an empty Allow
// list would mean "everything" to nats-server).
func allowList(s []string) []string {
	if len(s) == 0 {
		return []string{"_telegate.none"}
	}
	return append([]string(nil), s...)
}
