// Package auth implements the dashboard's service-team users (a YAML file of
// bcrypt password hashes and roles), login sessions with absolute and idle
// expiry, CSRF tokens and the HTTP middleware that enforces them.
package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
)

// Errors returned by the package.
var (
	ErrInvalidUsers = errors.New("auth: invalid users file")
	ErrBadLogin     = errors.New("auth: bad user name or password")
	ErrThrottled    = errors.New("auth: too many failed logins, try again later")
	ErrNoSession    = errors.New("auth: no valid session")
	ErrForbidden    = errors.New("auth: role not allowed")
	ErrCSRF         = errors.New("auth: missing or wrong CSRF token")
)

// Role is what a user may do.
type Role string

// Roles, in increasing order of rights.
const (
	// RoleViewer reads the dashboard and the API.
	RoleViewer Role = "viewer"
	// RoleOperator may also send commands to vehicles.
	RoleOperator Role = "operator"
)

// Allows reports whether r has at least the rights of need.
func (r Role) Allows(need Role) bool {
	rank := func(x Role) int {
		switch x {
		case RoleViewer:
			return 1
		case RoleOperator:
			return 2
		}
		return 0
	}
	return rank(r) >= rank(need) && rank(need) > 0
}

// User is one service-team user.
type User struct {
	Name         string `yaml:"name"`
	Role         Role   `yaml:"role"`
	PasswordHash string `yaml:"password_hash"`
}

// MaxPasswordLength is the longest password accepted (bcrypt ignores bytes
// after 72, so longer ones are refused instead of silently truncated).
const MaxPasswordLength = 72

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Users is a loaded, validated users file.
type Users struct {
	byName map[string]User
}

// LoadUsers reads and validates a users file.
func LoadUsers(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidUsers, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidUsers, err)
	}
	u, err := ParseUsers(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return u, nil
}

// ParseUsers parses a users file strictly (unknown keys are errors):
//
//	users:
//	  - name: demo
//	    role: operator   # viewer | operator
//	    password_hash: "$2a$10$..."
func ParseUsers(b []byte) (*Users, error) {
	var file struct {
		Users []User `yaml:"users"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidUsers, err)
	}
	if len(file.Users) == 0 {
		return nil, fmt.Errorf("%w: no users", ErrInvalidUsers)
	}
	u := &Users{byName: make(map[string]User, len(file.Users))}
	for i, x := range file.Users {
		if !nameRE.MatchString(x.Name) {
			return nil, fmt.Errorf("%w: user %d: name %q must be 1-64 of a-z 0-9 . _ - (lower case)", ErrInvalidUsers, i+1, x.Name)
		}
		if _, dup := u.byName[x.Name]; dup {
			return nil, fmt.Errorf("%w: user %q listed twice", ErrInvalidUsers, x.Name)
		}
		if x.Role != RoleViewer && x.Role != RoleOperator {
			return nil, fmt.Errorf("%w: user %q: role %q is not viewer or operator", ErrInvalidUsers, x.Name, x.Role)
		}
		cost, err := bcrypt.Cost([]byte(x.PasswordHash))
		if err != nil || !strings.HasPrefix(x.PasswordHash, "$2") {
			return nil, fmt.Errorf("%w: user %q: password_hash is not a bcrypt hash", ErrInvalidUsers, x.Name)
		}
		if cost < 8 {
			return nil, fmt.Errorf("%w: user %q: bcrypt cost %d is below 8", ErrInvalidUsers, x.Name, cost)
		}
		u.byName[x.Name] = x
	}
	return u, nil
}

// Len is the number of users.
func (u *Users) Len() int { return len(u.byName) }

// LogName is what may be logged of a user name a caller sent: the name
// when it is a configured user's, else "(unknown)" (a caller's junk, or a
// password typed into the user name field, never reaches the log).
func (u *Users) LogName(name string) string {
	if _, ok := u.byName[name]; ok {
		return name
	}
	return "(unknown)"
}

// dummyHash is compared against when the user does not exist, so that the
// answer takes as long as for a wrong password.
var dummyHash = func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("telegate-no-such-user"), bcrypt.DefaultCost)
	return h
}()

// Verify checks name and password and returns the user.
func (u *Users) Verify(name, password string) (User, error) {
	x, ok := u.byName[name]
	if len(password) > MaxPasswordLength || len(password) == 0 {
		ok = false
	}
	hash := dummyHash
	if ok {
		hash = []byte(x.PasswordHash)
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	if !ok || err != nil {
		return User{}, ErrBadLogin
	}
	return x, nil
}

// HashPassword returns a bcrypt hash for a users file.
func HashPassword(password string, cost int) (string, error) {
	if len(password) == 0 || len(password) > MaxPasswordLength {
		return "", fmt.Errorf("%w: password must be 1-%d bytes", ErrInvalidUsers, MaxPasswordLength)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	return string(h), err
}
