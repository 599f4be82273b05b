package features

import (
	"net/http"
	"time"

	"github.com/telegate/telegate/gateway/services/svc"
)

func (s *Scheduler) dateParam(r *http.Request) (time.Time, bool) {
	q := r.URL.Query().Get("date")
	if q == "" {
		return s.cfg.Clock.Now(), true
	}
	d, err := time.Parse("2006-01-02", q)
	return d, err == nil
}

// Mount adds the feature routes (admin) to mux:
//
//	GET  /api/v1/features                      catalog with controls
//	GET  /api/v1/features/plan?date=YYYY-MM-DD  dry run for a date
//	POST /api/v1/features/run?date=YYYY-MM-DD   run the scheduler for a date now
//	PUT  /api/v1/features/{id}/rollout          {"percent": 0..100}
//	POST /api/v1/features/{id}/rollback         deactivate everywhere
//	POST /api/v1/features/{id}/restore          undo a rollback
//	GET  /api/v1/vehicles/{vin}/features        per-vehicle state
func (s *Scheduler) Mount(mux *http.ServeMux, auth *svc.Auth) {
	mux.HandleFunc("GET /api/v1/features", auth.Admin(func(w http.ResponseWriter, r *http.Request, _ svc.Principal) {
		type item struct {
			Feature
			Control Control `json:"control"`
		}
		var out []item
		for _, f := range s.cfg.Catalog {
			c, _, err := s.Control(r.Context(), f.ID)
			if err != nil {
				svc.Fail(w, err)
				return
			}
			out = append(out, item{f, c})
		}
		svc.JSON(w, http.StatusOK, map[string]any{"features": out, "dry_run": s.cfg.DryRun})
	}))
	tick := func(dry bool) svc.Handler {
		return func(w http.ResponseWriter, r *http.Request, _ svc.Principal) {
			d, ok := s.dateParam(r)
			if !ok {
				svc.Error(w, http.StatusBadRequest, "date: want YYYY-MM-DD")
				return
			}
			dry = dry || r.URL.Query().Get("dry_run") == "true"
			chs, err := s.Tick(r.Context(), d, dry)
			if err != nil {
				svc.Fail(w, err)
				return
			}
			if chs == nil {
				chs = []Change{}
			}
			svc.JSON(w, http.StatusOK, map[string]any{"date": d.UTC().Format("2006-01-02"), "dry_run": dry || s.cfg.DryRun, "changes": chs})
		}
	}
	mux.HandleFunc("GET /api/v1/features/plan", auth.Admin(tick(true)))
	mux.HandleFunc("POST /api/v1/features/run", auth.Admin(tick(false)))
	control := func(update func(*Control, *http.Request) error) http.HandlerFunc {
		return auth.Admin(func(w http.ResponseWriter, r *http.Request, _ svc.Principal) {
			var uerr error
			c, err := s.SetControl(r.Context(), r.PathValue("id"), func(c *Control) { uerr = update(c, r) })
			if uerr != nil {
				svc.Fail(w, uerr)
				return
			}
			if err != nil {
				svc.Fail(w, err)
				return
			}
			svc.JSON(w, http.StatusOK, c)
		})
	}
	mux.HandleFunc("PUT /api/v1/features/{id}/rollout", control(func(c *Control, r *http.Request) error {
		var body struct {
			Percent *int `json:"percent"`
		}
		if err := svc.ReadJSON(r, &body); err != nil {
			return err
		}
		if body.Percent == nil || *body.Percent < 0 || *body.Percent > 100 {
			return svc.ErrInvalid
		}
		c.Rollout = body.Percent
		return nil
	}))
	mux.HandleFunc("POST /api/v1/features/{id}/rollback", control(func(c *Control, _ *http.Request) error { c.RolledBack = true; return nil }))
	mux.HandleFunc("POST /api/v1/features/{id}/restore", control(func(c *Control, _ *http.Request) error { c.RolledBack = false; return nil }))
	mux.HandleFunc("GET /api/v1/vehicles/{vin}/features", auth.Admin(func(w http.ResponseWriter, r *http.Request, _ svc.Principal) {
		vin := r.PathValue("vin")
		if !svc.ValidID(vin) {
			svc.Error(w, http.StatusBadRequest, "invalid vin")
			return
		}
		st, err := s.States(r.Context(), vin)
		if err != nil {
			svc.Fail(w, err)
			return
		}
		svc.JSON(w, http.StatusOK, map[string]any{"vin": vin, "features": st})
	}))
}
