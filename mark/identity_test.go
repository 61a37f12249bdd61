package mark_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/graylane/graylane/mark"
)

// bearer returns an Authorization value whose unsigned token has the given JSON payload.
func bearer(payload string) string {
	return "Bearer e30." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
}

func TestIdentityOrder(t *testing.T) {
	long := strings.Repeat("u", 257)
	tests := []struct {
		name string
		req  request
		want string // the user ID the rules see, "" for none
	}{
		{name: "none", want: ""},
		{name: "header", req: request{target: "/?uid=q", headers: []string{"X-User-Id", "h", "Cookie", "uid=c", "Authorization", bearer(`{"sub":"j"}`)}}, want: "h"},
		{name: "cookie", req: request{target: "/?uid=q", headers: []string{"Cookie", "uid=c", "Authorization", bearer(`{"sub":"j"}`)}}, want: "c"},
		{name: "empty header falls through", req: request{target: "/?uid=q", headers: []string{"X-User-Id", "", "Cookie", "uid=c"}}, want: "c"},
		{name: "query", req: request{target: "/?uid=q", headers: []string{"Authorization", bearer(`{"sub":"j"}`)}}, want: "q"},
		{name: "empty query falls through", req: request{target: "/?uid=", headers: []string{"Authorization", bearer(`{"sub":"j"}`)}}, want: "j"},
		{name: "jwt", req: request{headers: []string{"Authorization", bearer(`{"sub":"j"}`)}}, want: "j"},
		{name: "oversized header falls through", req: request{headers: []string{"X-User-Id", long, "Cookie", "uid=c"}}, want: "c"},
		{name: "oversized cookie falls through", req: request{target: "/?uid=q", headers: []string{"Cookie", "uid=" + long}}, want: "q"},
		{name: "oversized query falls through", req: request{target: "/?uid=" + long, headers: []string{"Authorization", bearer(`{"sub":"j"}`)}}, want: "j"},
		{name: "256-byte cookie is fine", req: request{target: "/?uid=q", headers: []string{"Cookie", "uid=" + long[1:]}}, want: long[1:]},
		{name: "256-byte query is fine", req: request{target: "/?uid=" + long[1:], headers: []string{"Authorization", bearer(`{"sub":"j"}`)}}, want: long[1:]},
		{name: "256 bytes is fine", req: request{headers: []string{"X-User-Id", long[1:]}}, want: long[1:]},
		{name: "blank cookie falls through", req: request{target: "/?uid=q", headers: []string{"Cookie", `uid=" "`}}, want: "q"},
		{name: "blank query falls through", req: request{target: "/?uid=%20%09", headers: []string{"Authorization", bearer(`{"sub":"j"}`)}}, want: "j"},
		{name: "blank claim is none", req: request{headers: []string{"Authorization", bearer(`{"sub":" \r\n"}`)}}, want: ""},
		{name: "spaces around a query ID are trimmed", req: request{target: "/?uid=%20q%09"}, want: "q"},
		{name: "spaces around a cookie ID are trimmed", req: request{headers: []string{"Cookie", `uid=" c"`}}, want: "c"},
		// Go's HTTP/2 server (and so Traefik's) does not trim header values as its HTTP/1 server does.
		{name: "blank header falls through", req: request{target: "/?uid=q", headers: []string{"X-User-Id", " \t"}}, want: "q"},
		{name: "spaces around a header ID are trimmed", req: request{headers: []string{"X-User-Id", "\th "}}, want: "h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := identityOf(t, mark.Identity{Header: "X-User-Id", Cookie: "uid", Query: "uid", JWTClaim: "sub"}, tt.req, tt.want); got != tt.want {
				t.Errorf("identity %q, want %q", got, tt.want)
			}
		})
	}
}

// identityOf returns want when the rules see want as the user ID of r, "" when they see no user
// ID, and "(another)" when they see another one: a percent-100 rule with anonymous "none" matches
// exactly the requests that have an identity.
func identityOf(t *testing.T, id mark.Identity, r request, want string) string {
	t.Helper()
	all := 100.0
	rules := []mark.Rule{{Name: "any", Lane: "some", Percent: &all}}
	if want != "" {
		rules = append([]mark.Rule{{Name: "user", Lane: "user", Users: []string{want}}}, rules...)
	}
	cfg := config(rules...)
	cfg.Identity = id
	cfg.Anonymous = "none"
	switch laneOf(newMark(t, cfg), r) {
	case "user":
		return want
	case "some":
		return "(another)"
	}
	return ""
}

func TestJWTClaim(t *testing.T) {
	tests := []struct {
		name  string
		auth  string
		claim string
		want  string
	}{
		{name: "string", auth: bearer(`{"sub":"alice","n":1}`), want: "alice"},
		{name: "lower-case scheme", auth: "bearer " + bearer(`{"sub":"alice"}`)[7:], want: "alice"},
		{name: "padded payload", auth: "Bearer e30." + base64.URLEncoding.EncodeToString([]byte(`{"sub":"ab"}`)) + ".x", want: "ab"},
		{name: "escaped string", auth: bearer(`{"sub":"a\u00e9"}`), want: "aé"},
		{name: "number", claim: "uid", auth: bearer(`{"uid":1001}`), want: "1001"},
		{name: "big number keeps its text", claim: "uid", auth: bearer(`{"uid":12345678901234567890}`), want: "12345678901234567890"},
		{name: "float", claim: "uid", auth: bearer(`{"uid":-1.5e3}`), want: "-1.5e3"},
		{name: "empty signature", auth: strings.TrimSuffix(bearer(`{"sub":"alice"}`), "c2ln"), want: "alice"},
		{name: "no Bearer", auth: strings.TrimPrefix(bearer(`{"sub":"alice"}`), "Bearer "), want: ""},
		{name: "Basic", auth: "Basic YWxpY2U6eA==", want: ""},
		{name: "two parts", auth: "Bearer e30." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"alice"}`)), want: ""},
		{name: "four parts", auth: bearer(`{"sub":"alice"}`) + ".x", want: ""},
		{name: "bad base64", auth: "Bearer e30.!!!.x", want: ""},
		{name: "standard base64 is not base64url", auth: "Bearer e30." + base64.RawStdEncoding.EncodeToString([]byte(`{"sub":"???"}`)) + ".x", want: ""},
		{name: "bad JSON", auth: bearer(`{"sub":`), want: ""},
		{name: "JSON array", auth: bearer(`["sub"]`), want: ""},
		{name: "missing claim", auth: bearer(`{"name":"alice"}`), want: ""},
		{name: "null claim", auth: bearer(`{"sub":null}`), want: ""},
		{name: "bool claim", auth: bearer(`{"sub":true}`), want: ""},
		{name: "object claim", auth: bearer(`{"sub":{"a":"b"}}`), want: ""},
		{name: "empty claim", auth: bearer(`{"sub":""}`), want: ""},
		{name: "oversized claim", auth: bearer(`{"sub":"` + strings.Repeat("a", 257) + `"}`), want: ""},
		{name: "huge token", auth: bearer(`{"sub":"alice","pad":"` + strings.Repeat("a", 8<<10) + `"}`), want: ""},
		{name: "empty token", auth: "Bearer ", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claim := tt.claim
			if claim == "" {
				claim = "sub"
			}
			r := request{headers: []string{"Authorization", tt.auth}}
			if got := identityOf(t, mark.Identity{JWTClaim: claim}, r, tt.want); got != tt.want {
				t.Errorf("identity %q, want %q", got, tt.want)
			}
		})
	}
}

// jwtSeeds are the seed payloads of FuzzJWTClaim, also run by TestJWTSeeds (Yaegi does not run
// fuzz targets).
var jwtSeeds = []string{`{"sub":"alice"}`, `{"sub":1001}`, `{"sub":null}`, `{"sub":"a","sub":"b"}`, `{`, ``, `[]`, `{"sub":"\u0000"}`, `{"sub":-0.5e-3}`, `{"sub":" \t"}`}

// checkJWT verifies that the identity read from a token with payload (and raw, appended to the
// token) is what encoding/json finds as the sub claim, or none.
func checkJWT(t testing.TB, payload, raw string) {
	auth := bearer(payload) + raw
	want := ""
	var claims map[string]json.RawMessage
	token := strings.TrimPrefix(auth, "Bearer ")
	if strings.Count(token, ".") == 2 && len(token) <= 8<<10 && json.Unmarshal([]byte(payload), &claims) == nil {
		var s string
		switch c := claims["sub"]; {
		case len(c) > 0 && c[0] == '"' && json.Unmarshal(c, &s) == nil:
			want = s
		case len(c) > 0 && (c[0] == '-' || c[0] >= '0' && c[0] <= '9'):
			want = string(c)
		}
	}
	// Blanks around it are trimmed: a claim of blanks alone is no identity (README, Identity).
	if len(want) > 256 || strings.Trim(want, " \t\r\n") == "" {
		want = ""
	}
	cfg := config(mark.Rule{Name: "any", Lane: "some", Percent: float(100)})
	cfg.Identity.JWTClaim = "sub"
	cfg.Anonymous = "none"
	// A user ID with spaces around it cannot be listed (New refuses it): the percent rule shows
	// that there is an identity.
	wantLane := "-"
	switch {
	case want != "" && strings.TrimSpace(want) != want:
		wantLane = "some"
	case want != "":
		wantLane = "user"
		cfg.Rules = append([]mark.Rule{{Name: "user", Lane: "user", Users: []string{want}}}, cfg.Rules...)
	}
	got := laneOf(newMark(t, cfg), request{headers: []string{"Authorization", auth}})
	if got != wantLane {
		t.Errorf("payload %q + %q: lane %q, want identity %q", payload, raw, got, want)
	}
}

func FuzzJWTClaim(f *testing.F) {
	for _, s := range jwtSeeds {
		f.Add(s, "")
	}
	f.Add(`{"sub":"x"}`, ".extra")
	f.Fuzz(func(t *testing.T, payload, raw string) {
		if strings.ContainsAny(raw, "\r\n") {
			return
		}
		checkJWT(t, payload, raw)
	})
}

func TestJWTSeeds(t *testing.T) {
	for _, s := range jwtSeeds {
		checkJWT(t, s, "")
	}
	checkJWT(t, `{"sub":"x"}`, ".extra")
}

// cookieSeeds are the seed Cookie headers of FuzzCookieIdentity, also run by TestCookieSeeds.
var cookieSeeds = []string{"uid=1", `uid="1"`, "a=b; uid=2", "uid=; uid=3", `uid="; uid=4`, "uid=a b", " uid = 5 ", "uid=\x7f; uid=6", `uid=\"`, "uid", "uid=caf\xc3\xa9; uid=7", "uid=a\x01b; uid=8", "uid=\x80\xff; uid=_"}

// checkCookie verifies that the identity read from the Cookie header is the value net/http's
// Request.Cookie finds, or none when that is empty (then the query parameter is used).
func checkCookie(t testing.TB, header string) {
	req := request{target: "/?uid=fallback", headers: []string{"Cookie", header}}.build()
	want := "fallback"
	if c, err := req.Cookie("uid"); err == nil {
		// Blanks around a user ID are trimmed; an ID left empty or over 256 bytes is none.
		if v := strings.Trim(c.Value, " \t\r\n"); v != "" && len(v) <= 256 {
			want = v
		}
	}
	if strings.TrimSpace(want) != want {
		return // New refuses a user ID with spaces around it
	}
	cfg := config(mark.Rule{Name: "user", Lane: "user", Users: []string{want}})
	cfg.Identity = mark.Identity{Cookie: "uid", Query: "uid"}
	if got := serve(newMark(t, cfg), req).Header().Get(laneSeen); got != "user" {
		t.Errorf("Cookie %q: identity is not %q", header, want)
	}
}

func FuzzCookieIdentity(f *testing.F) {
	for _, s := range cookieSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) { checkCookie(t, header) })
}

func TestCookieSeeds(t *testing.T) {
	for _, s := range cookieSeeds {
		checkCookie(t, s)
	}
}
