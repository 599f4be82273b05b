package offers

import (
	"net/http"

	"github.com/telegate/telegate/gateway/services/svc"
)

// Redemption is the body of POST /api/v1/partners/{partner}/redemptions.
type Redemption struct {
	OfferID   string `json:"offer_id"`
	OfferCode string `json:"offer_code"`
}

// Mount adds POST /api/v1/partners/{partner}/redemptions (admin or that
// partner): marks the offer redeemed; 200 with "redeemed_now": false when
// it already was.
func (e *Engine) Mount(mux *http.ServeMux, auth *svc.Auth) {
	mux.HandleFunc("POST /api/v1/partners/{partner}/redemptions", auth.AdminOrPartner(func(w http.ResponseWriter, r *http.Request, _ svc.Principal) {
		var body Redemption
		if err := svc.ReadJSON(r, &body); err != nil {
			svc.Fail(w, err)
			return
		}
		if body.OfferID == "" || body.OfferCode == "" || len(body.OfferCode) > 64 {
			svc.Error(w, http.StatusBadRequest, "offer_id and offer_code are required")
			return
		}
		tr, first, err := e.Redeem(r.Context(), r.PathValue("partner"), body.OfferID, body.OfferCode)
		if err != nil {
			svc.Fail(w, err)
			return
		}
		svc.JSON(w, http.StatusOK, map[string]any{"offer": tr, "redeemed_now": first})
	}))
}
