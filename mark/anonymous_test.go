package mark_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/graylane/graylane/mark"
)

// anonymousConfig returns a configuration whose "half" rule puts half of the keys in lane canary,
// after a "beta" rule on the path /beta.
func anonymousConfig(anonymous string) *mark.Config {
	half := 50.0
	cfg := config(
		mark.Rule{Name: "beta", Lane: "beta", Path: mark.PathMatch{Prefix: "/beta"}},
		mark.Rule{Name: "half", Lane: "canary", Percent: &half, Path: mark.PathMatch{Prefix: "/app"}},
		mark.Rule{Name: "all", Lane: "all", Percent: float(100), Path: mark.PathMatch{Prefix: "/app"}},
	)
	cfg.Identity.Header = "X-User-Id"
	cfg.Anonymous = anonymous
	return cfg
}

// stickyID returns the graylane_id cookie value that rec sets, or "".
func stickyID(t *testing.T, rec http.Header) string {
	t.Helper()
	cookies := rec.Values("Set-Cookie")
	if len(cookies) > 1 {
		t.Fatalf("%d Set-Cookie headers: %q", len(cookies), cookies)
	}
	if len(cookies) == 0 {
		return ""
	}
	value, _, _ := strings.Cut(strings.TrimPrefix(cookies[0], "graylane_id="), ";")
	return value
}

func TestAnonymousCookie(t *testing.T) {
	h := newMark(t, anonymousConfig(""))

	// A first visit gets a new ID, once, even though two percent rules are evaluated.
	first := serve(h, request{target: "/app"}.build())
	id := stickyID(t, first.Header())
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("sticky ID %q is not 32 hex digits", id)
	}
	want := "graylane_id=" + id + "; Path=/; Max-Age=2592000; HttpOnly; Secure; SameSite=Lax"
	if got := first.Header().Get("Set-Cookie"); got != want {
		t.Errorf("Set-Cookie %q, want %q", got, want)
	}
	lane := first.Header().Get(laneSeen)

	// The same visitor, sending the cookie back, stays in the same lane and gets no new cookie.
	for i := 0; i < 5; i++ {
		rec := serve(h, request{target: "/app", headers: []string{"Cookie", "a=b; graylane_id=" + id}}.build())
		if got := rec.Header().Get(laneSeen); got != lane {
			t.Errorf("visit %d: lane %q, want %q", i, got, lane)
		}
		if c := rec.Header().Get("Set-Cookie"); c != "" {
			t.Errorf("visit %d: cookie reissued: %q", i, c)
		}
	}

	// A cookie of the same name that is not an ID mark issued (another path's, a parent domain's)
	// may come first: the valid one after it still counts.
	for _, cookie := range []string{"graylane_id=old; graylane_id=" + id, "graylane_id=; graylane_id=" + id + "; graylane_id=x"} {
		rec := serve(h, request{target: "/app", headers: []string{"Cookie", cookie}}.build())
		if got, c := rec.Header().Get(laneSeen), rec.Header().Get("Set-Cookie"); got != lane || c != "" {
			t.Errorf("Cookie %q: lane %q, Set-Cookie %q; want %q and none", cookie, got, c, lane)
		}
	}

	// Both lanes of the half rule are reached by anonymous visitors.
	lanes := map[string]bool{}
	for i := 0; i < 64 && len(lanes) < 2; i++ {
		lanes[serve(h, request{target: "/app"}.build()).Header().Get(laneSeen)] = true
	}
	if !lanes["canary"] || !lanes["all"] {
		t.Errorf("anonymous visitors reached lanes %v, want canary and all", lanes)
	}
}

// TestAnonymousCookieTwoMarks checks that a second mark middleware after the first (in the same
// chain, or at an inner gateway) uses the ID the first issued instead of issuing another, whose
// cookie would replace the first one's in the browser and move the visitor on the next visit.
func TestAnonymousCookieTwoMarks(t *testing.T) {
	innerCfg := config(mark.Rule{Name: "inner", Lane: "inner", Percent: float(50)})
	innerCfg.Incoming = "keep"
	inner, err := mark.New(context.Background(), http.HandlerFunc(backend), innerCfg, "inner")
	if err != nil {
		t.Fatal(err)
	}
	outer, err := mark.New(context.Background(), inner, config(mark.Rule{Name: "outer", Lane: "outer", Percent: float(50)}), "outer")
	if err != nil {
		t.Fatal(err)
	}
	lanes := map[string]bool{}
	for i := 0; i < 64; i++ { // a visitor reaches lane inner 1 time in 4
		first := serve(outer, request{}.build())
		id := stickyID(t, first.Header()) // fails on two Set-Cookie headers
		lane := first.Header().Get(laneSeen)
		lanes[lane] = true
		again := serve(outer, request{headers: []string{"Cookie", "graylane_id=" + id}}.build())
		if got := again.Header().Get(laneSeen); got != lane || again.Header().Get("Set-Cookie") != "" {
			t.Fatalf("visitor %d: lane %q, then %q with the cookie (Set-Cookie %q)", i, lane, got, again.Header().Get("Set-Cookie"))
		}
	}
	if !lanes["outer"] || !lanes["inner"] {
		t.Errorf("lanes %v, want outer and inner among 64 visitors", lanes)
	}
}

// TestAnonymousCookieKeepsCookieLines checks that the ID mark adds to the request for later mark
// middlewares keeps every Cookie line the client sent.
func TestAnonymousCookieKeepsCookieLines(t *testing.T) {
	var seen []string
	h, err := mark.New(context.Background(), http.HandlerFunc(func(_ http.ResponseWriter, req *http.Request) {
		seen = req.Header.Values("Cookie")
	}), config(mark.Rule{Name: "all", Lane: "canary", Percent: float(100)}), "test")
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(h, request{headers: []string{"Cookie", "a=1", "Cookie", "session=secret"}}.build())
	id := stickyID(t, rec.Header())
	if want := []string{"a=1", "session=secret; graylane_id=" + id}; strings.Join(seen, "|") != strings.Join(want, "|") {
		t.Errorf("Cookie lines %q, want %q", seen, want)
	}
}

func TestAnonymousCookieIssue(t *testing.T) {
	h := newMark(t, anonymousConfig("cookie"))
	tests := []struct {
		name  string
		req   request
		issue bool
	}{
		{name: "no percent rule evaluated", req: request{target: "/other"}, issue: false},
		{name: "an earlier rule matched", req: request{target: "/beta"}, issue: false},
		{name: "identity is the key", req: request{target: "/app", headers: []string{"X-User-Id", "u1"}}, issue: false},
		{name: "percent rule evaluated", req: request{target: "/app"}, issue: true},
		{name: "invalid sticky ID is replaced", req: request{target: "/app", headers: []string{"Cookie", "graylane_id=chosen-by-client"}}, issue: true},
		{name: "upper-case ID is replaced", req: request{target: "/app", headers: []string{"Cookie", "graylane_id=0123456789ABCDEF0123456789ABCDEF"}}, issue: true},
		{name: "valid sticky ID is reused", req: request{target: "/app", headers: []string{"Cookie", "graylane_id=0123456789abcdef0123456789abcdef"}}, issue: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := stickyID(t, serve(h, tt.req.build()).Header())
			if (id != "") != tt.issue {
				t.Errorf("issued %q, want issue %v", id, tt.issue)
			}
		})
	}
}

func TestStickyCookieAttributes(t *testing.T) {
	tests := []struct {
		name   string
		cookie mark.StickyCookie
		want   string
	}{
		{name: "seconds, strict", cookie: mark.StickyCookie{Name: "gid", MaxAge: "3600", SameSite: "strict"},
			want: "; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Strict"},
		{name: "session, no flags, default", cookie: mark.StickyCookie{MaxAge: "0", Secure: boolPtr(false), HTTPOnly: boolPtr(false), SameSite: "Default"},
			want: "; Path=/"},
		{name: "none", cookie: mark.StickyCookie{MaxAge: "90m", SameSite: "None"},
			want: "; Path=/; Max-Age=5400; HttpOnly; Secure; SameSite=None"},
		{name: "defaults", want: "; Path=/; Max-Age=2592000; HttpOnly; Secure; SameSite=Lax"},
		{name: "secure alone", cookie: mark.StickyCookie{HTTPOnly: boolPtr(false)},
			want: "; Path=/; Max-Age=2592000; Secure; SameSite=Lax"},
		{name: "httpOnly alone", cookie: mark.StickyCookie{Secure: boolPtr(false), SameSite: "LAX"},
			want: "; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := anonymousConfig("cookie")
			cfg.StickyCookie = tt.cookie
			c := serve(newMark(t, cfg), request{target: "/app"}.build()).Header().Get("Set-Cookie")
			name := tt.cookie.Name
			if name == "" {
				name = "graylane_id"
			}
			if !strings.HasPrefix(c, name+"=") || !strings.HasSuffix(c, tt.want) || len(c) != len(name)+1+32+len(tt.want) {
				t.Errorf("Set-Cookie %q, want %s=<id>%s", c, name, tt.want)
			}
		})
	}
}

func TestAnonymousModes(t *testing.T) {
	tests := []struct {
		anonymous string
		remote    string
		want      []string // lanes that must all be seen over 64 requests
	}{
		{anonymous: "none", want: []string{"-"}},
		{anonymous: "random", want: []string{"canary", "all"}},
		{anonymous: "ip", remote: "192.0.2.1:1", want: []string{"all"}},    // bucket 7975 under salt "half"
		{anonymous: "IP", remote: "192.0.2.2:1", want: []string{"canary"}}, // bucket 147
		{anonymous: "ip", remote: "not-an-address", want: []string{"-"}},
	}
	for _, tt := range tests {
		t.Run(tt.anonymous+tt.remote, func(t *testing.T) {
			h := newMark(t, anonymousConfig(tt.anonymous))
			seen := map[string]bool{}
			for i := 0; i < 64; i++ {
				rec := serve(h, request{target: "/app", remote: tt.remote}.build())
				if c := rec.Header().Get("Set-Cookie"); c != "" {
					t.Fatalf("cookie issued: %q", c)
				}
				seen[rec.Header().Get(laneSeen)] = true
			}
			for _, lane := range tt.want {
				if !seen[lane] {
					t.Errorf("lane %q never seen; saw %v", lane, seen)
				}
			}
			if len(seen) != len(tt.want) {
				t.Errorf("saw lanes %v, want only %v", seen, tt.want)
			}
		})
	}
}
