package mark_test

import (
	"encoding/base64"
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
		{name: "256 bytes is fine", req: request{headers: []string{"X-User-Id", long[1:]}}, want: long[1:]},
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
