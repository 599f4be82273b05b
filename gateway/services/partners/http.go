package partners

import (
	"net/http"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/svc"
)

// redacted returns p without secrets (webhook secret, password hash).
func redacted(p Partner) Partner {
	p.APITokenSHA256 = ""
	if p.Webhook != nil {
		w := *p.Webhook
		w.Secret = ""
		p.Webhook = &w
	}
	if p.NATS != nil {
		n := *p.NATS
		n.PasswordBcrypt = ""
		p.NATS = &n
	}
	return p
}

// Mount adds the partner registry routes to mux:
//
//	GET  /api/v1/partners                                         admin: all partners
//	POST /api/v1/partners                                         admin: register or replace a partner
//	GET  /api/v1/partners/{partner}                               admin or that partner
//	PUT  /api/v1/partners/{partner}/venues/{venue}/availability   admin or that partner: {"available": bool}
func (r *Registry) Mount(mux *http.ServeMux, auth *svc.Auth) {
	mux.HandleFunc("GET /api/v1/partners", auth.Admin(func(w http.ResponseWriter, _ *http.Request, _ svc.Principal) {
		ps := r.Partners()
		for i := range ps {
			ps[i] = redacted(ps[i])
		}
		svc.JSON(w, http.StatusOK, map[string]any{"partners": ps})
	}))
	mux.HandleFunc("POST /api/v1/partners", auth.Admin(func(w http.ResponseWriter, req *http.Request, _ svc.Principal) {
		var p Partner
		if err := svc.ReadJSON(req, &p); err != nil {
			svc.Fail(w, err)
			return
		}
		if err := r.Put(req.Context(), p); err != nil {
			svc.Fail(w, err)
			return
		}
		svc.JSON(w, http.StatusCreated, redacted(p))
	}))
	mux.HandleFunc("GET /api/v1/partners/{partner}", auth.AdminOrPartner(func(w http.ResponseWriter, req *http.Request, _ svc.Principal) {
		p, ok := r.Get(req.PathValue("partner"))
		if !ok {
			svc.Fail(w, ErrUnknownPartner)
			return
		}
		svc.JSON(w, http.StatusOK, redacted(p))
	}))
	mux.HandleFunc("PUT /api/v1/partners/{partner}/venues/{venue}/availability", auth.AdminOrPartner(func(w http.ResponseWriter, req *http.Request, _ svc.Principal) {
		var body struct {
			Available *bool `json:"available"`
		}
		if err := svc.ReadJSON(req, &body); err != nil {
			svc.Fail(w, err)
			return
		}
		if body.Available == nil {
			svc.Error(w, http.StatusBadRequest, "available (true/false) is required")
			return
		}
		if err := r.SetAvailability(req.Context(), req.PathValue("partner"), req.PathValue("venue"), *body.Available); err != nil {
			svc.Fail(w, err)
			return
		}
		svc.JSON(w, http.StatusOK, map[string]bool{"available": *body.Available})
	}))
}

// NATSAccounts returns the partners' NATS accounts (partners with NATS
// credentials): each imports its own feed only (NATSImports).
func (r *Registry) NATSAccounts() []natsbus.PartnerAccount {
	var out []natsbus.PartnerAccount
	for _, p := range r.Partners() {
		if p.NATS == nil {
			continue
		}
		pub, sub := NATSPermissions(p.ID)
		out = append(out, natsbus.PartnerAccount{ID: p.ID, User: p.NATS.User, PasswordBcrypt: p.NATS.PasswordBcrypt,
			Publish: pub, Subscribe: sub, Imports: NATSImports(p.ID)})
	}
	return out
}

// NATSUsers returns the partners' NATS users with NATSPermissions.
func (r *Registry) NATSUsers() []NATSUser {
	var out []NATSUser
	for _, p := range r.Partners() {
		if p.NATS == nil {
			continue
		}
		pub, sub := NATSPermissions(p.ID)
		out = append(out, NATSUser{Name: p.NATS.User, PasswordBcrypt: p.NATS.PasswordBcrypt,
			Publish: pub, Subscribe: sub})
	}
	return out
}

// NATSUser is a partner's NATS user with its allow lists.
type NATSUser struct {
	Name, PasswordBcrypt string
	Publish, Subscribe   []string
}
