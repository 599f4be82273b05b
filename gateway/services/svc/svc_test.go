package svc

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAuthRolesAndLimits(t *testing.T) {
	a := NewAuth([]APIToken{{Token: "admin-token", Role: RoleAdmin},
		{SHA256: "1c6b6c5a4a4c4d3fd2b2e2a1f8f3d43bbf8e0b9bbbdf0a1b7f7a0d9c2b8d4b1d", Role: RolePartner, Partner: "x"},
		{Token: "p-token", Role: RolePartner, Partner: "cafe"}})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /p/{partner}", a.AdminOrPartner(func(w http.ResponseWriter, r *http.Request, p Principal) {
		var v map[string]any
		if err := ReadJSON(r, &v); err != nil {
			Fail(w, err)
			return
		}
		JSON(w, 200, p)
	}))
	mux.HandleFunc("GET /a", a.Admin(func(w http.ResponseWriter, _ *http.Request, _ Principal) { JSON(w, 200, nil) }))
	do := func(method, path, tok, body string) int {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w.Code
	}
	cases := []struct {
		method, path, tok, body string
		want                    int
	}{
		{"GET", "/a", "", "", 401},
		{"GET", "/a", "wrong", "", 401},
		{"GET", "/a", "p-token", "", 403},
		{"GET", "/a", "admin-token", "", 200},
		{"POST", "/p/cafe", "p-token", "{}", 200},
		{"POST", "/p/other", "p-token", "{}", 403},
		{"POST", "/p/other", "admin-token", "{}", 200},
		{"POST", "/p/cafe", "p-token", "{", 400},
		{"POST", "/p/cafe", "p-token", "{} {}", 400},
		{"POST", "/p/cafe", "p-token", `{"a":"` + strings.Repeat("x", MaxBody) + `"}`, 400},
	}
	for _, c := range cases {
		if got := do(c.method, c.path, c.tok, c.body); got != c.want {
			t.Errorf("%s %s token %q: %d, want %d", c.method, c.path, c.tok, got, c.want)
		}
	}
	if ValidID("a.b") || ValidID("") || !ValidID("TGSVS000000000001") {
		t.Fatal("ids")
	}
}
