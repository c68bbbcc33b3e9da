package server_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestReviewNoServerErrorOnBadInput: bad input to the new routes never answers 5xx (held).
func TestReviewNoServerErrorOnBadInput(t *testing.T) {
	h := newHarness(t, withToken("0123456789abcdef-token"))
	for _, q := range []string{"prefix=%C0%80", "prefix=%EF%BF%BF", "after=%ED%A0%80", "prefix=" + strings.Repeat("%2F", 170),
		"after=" + strings.Repeat("%F0%9F%98%80", 170), "prefix=%25&after=%25", "limit=-1", "limit=99999999999999999999",
		"prefix=a;b", "prefix=%", "after=%zz", "prefix=+", "limit=1000&prefix=" + strings.Repeat("x", 171)} {
		r := h.do("GET", "/streams?"+q, nil)
		if r.status >= 500 {
			t.Errorf("GET /streams?%.60s: %d %s", q, r.status, r.body)
		}
	}
	noAuth := []string{"Authorization", ""}
	for _, body := range []string{`{"token":"\ud800"}`, `{"token":"a","token":"b"}`, `{"token":null}`, `{"token":"` + strings.Repeat("a", 5000) + `"}`,
		`{"token":"0123456789abcdef-token"} x`, `{"token":{"a":1}}`, "\xff", `{"token":"0123456789abcdef-token\u0000"}`} {
		r := h.do("POST", "/auth/session", body, noAuth...)
		if r.status >= 500 || r.status == http.StatusNoContent {
			t.Errorf("POST /auth/session %.40q: %d %s", body, r.status, r.body)
		}
	}
}
