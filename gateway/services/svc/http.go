package svc

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
)

// MaxBody bounds every request body the services accept.
const MaxBody = 64 << 10

// Roles of an API token.
const (
	RoleAdmin   = "admin"
	RolePartner = "partner"
)

// ErrUnauthorized and ErrForbidden are returned by the auth checks.
var (
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
)

// Principal is the authenticated caller of an API request.
type Principal struct {
	Role    string // admin | partner
	Partner string // partner id for RolePartner
}

// APIToken is one bearer token of the services API, given in clear
// (Token) or as the hex SHA-256 digest of the token (SHA256).
type APIToken struct {
	Token   string
	SHA256  string
	Role    string
	Partner string
}

// Auth checks "Authorization: Bearer <token>" against a fixed token list.
// Tokens are compared by SHA-256 digest in constant time.
type Auth struct {
	mu     sync.RWMutex
	tokens []authEntry
}

type authEntry struct {
	sum [32]byte
	p   Principal
}

// NewAuth builds an Auth from tokens.
func NewAuth(tokens []APIToken) *Auth {
	a := &Auth{}
	a.SetTokens(tokens)
	return a
}

// SetTokens replaces the token list.
func (a *Auth) SetTokens(tokens []APIToken) {
	var list []authEntry
	for _, t := range tokens {
		e := authEntry{p: Principal{Role: t.Role, Partner: t.Partner}}
		switch {
		case t.Token != "":
			e.sum = sha256.Sum256([]byte(t.Token))
		case len(t.SHA256) == 64:
			if _, err := hex.Decode(e.sum[:], []byte(t.SHA256)); err != nil {
				continue
			}
		default:
			continue
		}
		list = append(list, e)
	}
	a.mu.Lock()
	a.tokens = list
	a.mu.Unlock()
}

// Check authenticates r.
func (a *Auth) Check(r *http.Request) (Principal, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return Principal{}, ErrUnauthorized
	}
	sum := sha256.Sum256([]byte(tok))
	var found Principal
	hit := 0
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, e := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], e.sum[:]) == 1 {
			found, hit = e.p, 1
		}
	}
	if hit == 0 {
		return Principal{}, ErrUnauthorized
	}
	return found, nil
}

// Handler is an authenticated API handler.
type Handler func(w http.ResponseWriter, r *http.Request, p Principal)

// Admin wraps h so that only admin tokens reach it.
func (a *Auth) Admin(h Handler) http.HandlerFunc {
	return a.wrap(func(p Principal, _ *http.Request) bool { return p.Role == RoleAdmin }, h)
}

// AdminOrPartner wraps h so that admins and the partner named by the path
// value "partner" reach it (a partner sees only its own resources).
func (a *Auth) AdminOrPartner(h Handler) http.HandlerFunc {
	return a.wrap(func(p Principal, r *http.Request) bool {
		return p.Role == RoleAdmin || (p.Role == RolePartner && p.Partner != "" && p.Partner == r.PathValue("partner"))
	}, h)
}

func (a *Auth) wrap(allow func(Principal, *http.Request) bool, h Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Check(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="telegate-services"`)
			Error(w, http.StatusUnauthorized, "missing or invalid bearer token")
			return
		}
		if !allow(p, r) {
			Error(w, http.StatusForbidden, "forbidden")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		h(w, r, p)
	}
}

// JSON writes v with status code.
func JSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Error writes {"error": msg} with status code.
func Error(w http.ResponseWriter, code int, msg string) {
	JSON(w, code, map[string]string{"error": msg})
}

// Fail maps err onto a status: ErrNotFound 404, ErrInvalid 400,
// ErrConflict 409, ErrErased 410, anything else 500 (message not exposed).
func Fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		Error(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrInvalid):
		Error(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrConflict):
		Error(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrErased):
		Error(w, http.StatusGone, err.Error())
	default:
		Error(w, http.StatusInternalServerError, "internal error")
	}
}

// ReadJSON strictly decodes the (already size-limited) body into v.
func ReadJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body larger than %d bytes", ErrInvalid, mbe.Limit)
		}
		return fmt.Errorf("%w: body: %w", ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after JSON body", ErrInvalid)
	}
	return nil
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidID reports whether s is a valid id (customer, partner, venue,
// station, feature, consent, VIN): 1-64 letters, digits, '-' or '_'.
func ValidID(s string) bool { return idRE.MatchString(s) }
