package customers

import (
	"net/http"

	"github.com/telegate/telegate/gateway/services/svc"
)

// View is the API representation of a customer (no token salt).
type View struct {
	ID           string             `json:"id"`
	Name         string             `json:"name,omitempty"`
	Region       string             `json:"region,omitempty"`
	Vehicles     []Vehicle          `json:"vehicles"`
	Entitlements []string           `json:"entitlements,omitempty"`
	Consents     map[string]Consent `json:"consents"`
}

func view(c Customer) View {
	return View{ID: c.ID, Name: c.Name, Region: c.Region, Vehicles: c.Vehicles, Entitlements: c.Entitlements, Consents: c.Consents}
}

// ConsentUpdate is the body of PUT /api/v1/customers/{id}/consents/{consent}.
type ConsentUpdate struct {
	Granted *bool  `json:"granted"`
	Source  string `json:"source"`
}

// Mount adds the registry's routes (admin only) to mux.
//
//	POST   /api/v1/customers                           register (Registration body)
//	GET    /api/v1/customers                           list ids
//	GET    /api/v1/customers/{id}                      one customer
//	PUT    /api/v1/customers/{id}/consents/{consent}   {"granted": bool, "source": "..."}
//	DELETE /api/v1/customers/{id}[?delete_telemetry=true]  erase (and the vehicles' telemetry)
func (r *Registry) Mount(mux *http.ServeMux, auth *svc.Auth) {
	mux.HandleFunc("POST /api/v1/customers", auth.Admin(func(w http.ResponseWriter, req *http.Request, _ svc.Principal) {
		var reg Registration
		if err := svc.ReadJSON(req, &reg); err != nil {
			svc.Fail(w, err)
			return
		}
		if err := r.Register(req.Context(), reg, "api"); err != nil {
			svc.Fail(w, err)
			return
		}
		c, _ := r.Get(reg.ID)
		svc.JSON(w, http.StatusCreated, view(c))
	}))
	mux.HandleFunc("GET /api/v1/customers", auth.Admin(func(w http.ResponseWriter, _ *http.Request, _ svc.Principal) {
		svc.JSON(w, http.StatusOK, map[string]any{"customers": r.IDs()})
	}))
	mux.HandleFunc("GET /api/v1/customers/{id}", auth.Admin(func(w http.ResponseWriter, req *http.Request, _ svc.Principal) {
		c, ok := r.Get(req.PathValue("id"))
		if !ok && r.ErasedTombstone(req.Context(), req.PathValue("id")) {
			svc.Error(w, http.StatusGone, "customer erased: the profile and its data were removed at the customer's request")
			return
		}
		if !ok {
			svc.Fail(w, ErrUnknownCustomer)
			return
		}
		svc.JSON(w, http.StatusOK, view(c))
	}))
	mux.HandleFunc("PUT /api/v1/customers/{id}/consents/{consent}", auth.Admin(func(w http.ResponseWriter, req *http.Request, _ svc.Principal) {
		var u ConsentUpdate
		if err := svc.ReadJSON(req, &u); err != nil {
			svc.Fail(w, err)
			return
		}
		if u.Granted == nil {
			svc.Error(w, http.StatusBadRequest, "granted (true/false) is required")
			return
		}
		if u.Source == "" {
			u.Source = "api"
		}
		cs, err := r.SetConsent(req.Context(), req.PathValue("id"), req.PathValue("consent"), *u.Granted, u.Source)
		if err != nil {
			svc.Fail(w, err)
			return
		}
		svc.JSON(w, http.StatusOK, cs)
	}))
	mux.HandleFunc("DELETE /api/v1/customers/{id}", auth.Admin(func(w http.ResponseWriter, req *http.Request, _ svc.Principal) {
		var opt EraseOptions
		switch req.URL.Query().Get("delete_telemetry") {
		case "", "false":
		case "true":
			opt.DeleteTelemetry = true
		default:
			svc.Error(w, http.StatusBadRequest, "delete_telemetry: want true or false")
			return
		}
		if err := r.EraseWith(req.Context(), req.PathValue("id"), opt); err != nil {
			svc.Fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
}
