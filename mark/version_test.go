package mark_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/graylane/graylane/mark"
)

// versionMatches reports whether a request with version v (sent in X-App-Version, or not at all
// when v is "-") is put in the lane of a rule with the given constraint.
func versionMatches(t testing.TB, constraint, v string) bool {
	t.Helper()
	cfg := config(mark.Rule{Name: "v", Lane: "canary", Versions: constraint})
	cfg.Version = mark.VersionSource{Header: "X-App-Version", Query: "appVersion"}
	r := request{}
	if v != "-" {
		r.headers = []string{"X-App-Version", v}
	}
	return laneOf(newMark(t, cfg), r) == "canary"
}

func TestVersions(t *testing.T) {
	tests := []struct {
		constraint string
		version    string
		want       bool
	}{
		{">=2.3.0, <3.0.0 || 3.1.x", "2.3.0", true},
		{">=2.3.0, <3.0.0 || 3.1.x", "2.9.99", true},
		{">=2.3.0, <3.0.0 || 3.1.x", "3.0.0", false},
		{">=2.3.0, <3.0.0 || 3.1.x", "3.1.7", true},
		{">=2.3.0, <3.0.0 || 3.1.x", "3.2.0", false},
		{">=2.3.0, <3.0.0 || 3.1.x", "2.2.9", false},
		{">=2.3.0, <3.0.0 || 3.1.x", "-", false},
		{">=2.3.0, <3.0.0 || 3.1.x", "garbage", false},
		{">=2.3.0, <3.0.0 || 3.1.x", "", false},
		{"2.3", "2.3.0", true},
		{"=2.3", "v2.3", true},
		{"=2.3.0", "2.3.1", false},
		{"2.3.0", "2.3.0+build.5", true},
		{"!=2.3.0", "2.3.1", true},
		{"!=2.3.0", "2.3", false},
		{">2.3.0", "2.3.1", true},
		{">2.3.0", "2.3.0", false},
		{">=v2", "2.0.0", true},
		{"<2", "1.99.99", true},
		{"<2", "2.0.0", false},
		{"<=2.1", "2.1.0", true},
		{"<=2.1", "2.1.1", false},
		{">= 1.0 , < 2", "1.5", true},
		{"~1.2", "1.2.0", true},
		{"~1.2", "1.2.9", true},
		{"~1.2", "1.3.0", false},
		{"~1.2", "1.1.9", false},
		{"~1.2.3", "1.2.2", false},
		{"~1.2.3", "1.2.4", true},
		{"~1", "1.9.0", true},
		{"~1", "2.0.0", false},
		{"^1.2", "1.2.0", true},
		{"^1.2", "1.99.0", true},
		{"^1.2", "2.0.0", false},
		{"^1.2", "1.1.0", false},
		{"^0.2.3", "0.2.9", true},
		{"^0.2.3", "0.3.0", false},
		{"^0.0.3", "0.0.3", true},
		{"^0.0.3", "0.0.4", false},
		{"1.2.x", "1.2.7", true},
		{"1.2.X", "1.3.0", false},
		{"1.2.*", "1.1.9", false},
		{"1.x", "1.9.9", true},
		{"1.x", "2.0.0", false},
		{"1.x", "2.0.0-rc.1", true}, // the spec's bounds: <2.0.0, and 2.0.0-rc.1 sorts before 2.0.0
		{"*", "0.0.1", true},
		{"*", "-", false},
		{"*", "1.2.3.4", false},
		{"x", "99", true},
		{">1.2.x", "1.2.9", false},
		{">1.2.x", "1.3.0", true},
		{"<1.2.x", "1.1.9", true},
		{"<1.2.x", "1.2.0", false},
		{"<=1.2.x", "1.2.99", true},
		{">=1.2.x", "1.2.0", true},
		{"!=1.2.x", "1.2.5", false},
		{"!=1.2.x", "1.3.0", true},
		{"!=*", "1.0.0", false},
		{">*", "1.0.0", false},
		{"<*", "1.0.0", false},
		{"<=*", "1.0.0", true},
		{"~*", "1.0.0", true},
		{"^*", "1.0.0", true},
		// Pre-releases sort before their release.
		{">=2.3.0", "2.3.0-beta.1", false},
		{"<2.3.0", "2.3.0-beta.1", true},
		{">2.3.0-beta.1", "2.3.0-beta.2", true},
		{">2.3.0-beta.2", "2.3.0-beta.10", true},
		{">2.3.0-beta", "2.3.0-beta.1", true},
		{">2.3.0-1", "2.3.0-alpha", true},
		{">2.3.0-alpha", "2.3.0-1", false},
		{">2.3.0-rc.1", "2.3.0", true},
		{"=2.3.0-rc.1", "v2.3.0-rc.1+exp.sha", true},
		{"=2.3.0-rc.01", "2.3.0-rc.1", true},
		{"~1.2", "1.3.0-alpha", true}, // the spec's ~1.2: >=1.2.0 <1.3.0
		{"~1.2, <1.3.0-0", "1.3.0-alpha", false},
		{"^1.2", "2.0.0-rc.1", true},
		{"^1.2", "1.2.0-alpha", false},
		{"1.2.x", "1.3.0-rc.1", true},
		{">1.2.x", "1.3.0-rc.1", false},
		{"<=1.2.x", "1.3.0-rc.1", true},
		{"!=1.2.x", "1.3.0-rc.1", false},
		// Malformed client versions never match.
		{"*", "1..2", false},
		{"*", "1.", false},
		{"*", "1.2.3-", false},
		{"*", "1.2.3-a..b", false},
		{"*", "1.2.3+", false},
		{"*", "1.2.x", false},
		{"*", " 1.2.3", false},
		{"*", "1234567890123456789", false},
		{"*", "123456789012345678", true},
		{"*", "v", false},
	}
	for _, tt := range tests {
		if got := versionMatches(t, tt.constraint, tt.version); got != tt.want {
			t.Errorf("%q with version %q: match %v, want %v", tt.constraint, tt.version, got, tt.want)
		}
	}
}

func TestVersionSources(t *testing.T) {
	cfg := config(mark.Rule{Name: "v", Lane: "canary", Versions: ">=2"})
	cfg.Version = mark.VersionSource{Header: "X-App-Version", Query: "appVersion"}
	h := newMark(t, cfg)
	tests := []struct {
		name string
		req  request
		want string
	}{
		{"header", request{headers: []string{"X-App-Version", "2.1"}}, "canary"},
		{"query", request{target: "/?appVersion=" + url.QueryEscape("2.0.0-rc.1+b")}, "-"},
		{"query release", request{target: "/?appVersion=2.0.1"}, "canary"},
		{"header before query", request{target: "/?appVersion=2.0.1", headers: []string{"X-App-Version", "1.0"}}, "-"},
		{"empty header falls back to query", request{target: "/?appVersion=2.0.1", headers: []string{"X-App-Version", ""}}, "canary"},
	}
	for _, tt := range tests {
		if got := laneOf(h, tt.req); got != tt.want {
			t.Errorf("%s: lane %q, want %q", tt.name, got, tt.want)
		}
	}
}

// versionSeeds are the seed corpus of FuzzParseVersion, also run by TestVersionSeeds (Yaegi
// does not run fuzz targets).
var versionSeeds = []string{"1.2.3", "v1", "1.2.3-rc.1+b", "1..2", "", "x", "1.2.3-", "99999999999999999999", "1.2.3-0a.00", "1.2.3+", "V0.0.0-0"}

// versionOracle holds two middlewares: split puts a version in lane ge (>=1.2.3) or lt (<1.2.3),
// star in lane any when it parses.
type versionOracle struct {
	split, star http.Handler
}

// newVersionOracle builds a versionOracle.
func newVersionOracle(t testing.TB) versionOracle {
	cfg := config(
		mark.Rule{Name: "ge", Lane: "ge", Versions: ">=1.2.3"},
		mark.Rule{Name: "lt", Lane: "lt", Versions: "<1.2.3"},
		mark.Rule{Name: "any", Lane: "any", Versions: "*"},
	)
	cfg.Version.Header = "X-App-Version"
	split := newMark(t, cfg)
	cfg.Rules = cfg.Rules[2:]
	return versionOracle{split: split, star: newMark(t, cfg)}
}

// check verifies that v either parses (then "*" matches it and exactly one of ">=1.2.3" and
// "<1.2.3" does) or matches nothing at all.
func (o versionOracle) check(t testing.TB, v string) {
	r := request{}.build()
	r.Header["X-App-Version"] = []string{v}
	parses := serve(o.star, r).Header().Get(laneSeen) == "any"
	r.Header["X-App-Version"] = []string{v}
	got := serve(o.split, r).Header().Get(laneSeen)
	if parses && got != "ge" && got != "lt" {
		t.Errorf("%q parses but is neither >=1.2.3 nor <1.2.3 (lane %q)", v, got)
	}
	if !parses && got != "-" {
		t.Errorf("%q does not parse but got lane %q", v, got)
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range versionSeeds {
		f.Add(s)
	}
	o := newVersionOracle(f)
	f.Fuzz(func(t *testing.T, v string) { o.check(t, v) })
}

func TestVersionSeeds(t *testing.T) {
	o := newVersionOracle(t)
	for _, s := range versionSeeds {
		o.check(t, s)
	}
}

// constraintSeeds are the seed corpus of FuzzParseConstraint, also run by TestConstraintSeeds.
var constraintSeeds = []string{">=2.3.0, <3.0.0 || 3.1.x", "~1.2", "^0.0", "*", "=>1", "||", ",", "!=1.x", "<=v1.2.3-rc.1+b", "~", "^", ">=", "1.2.3.4", "1 || 2 || 3", ""}

// checkConstraint verifies that constraint is either rejected by New or compiled into a rule
// that handles a request with version v.
func checkConstraint(t testing.TB, constraint, v string) {
	cfg := config(mark.Rule{Name: "v", Lane: "canary", Versions: constraint})
	cfg.Version.Header = "X-App-Version"
	h, err := mark.New(context.Background(), http.HandlerFunc(backend), cfg, "fuzz")
	if err != nil {
		if constraint != "" && !strings.HasPrefix(err.Error(), "rules[0].versions: ") {
			t.Errorf("error %q does not name the field", err)
		}
		return
	}
	r := request{}.build()
	r.Header["X-App-Version"] = []string{v}
	if got := serve(h, r).Header().Get(laneSeen); got != "canary" && got != "-" {
		t.Errorf("lane %q", got)
	}
}

func FuzzParseConstraint(f *testing.F) {
	for _, s := range constraintSeeds {
		f.Add(s, "2.3.4")
	}
	f.Fuzz(func(t *testing.T, constraint, v string) { checkConstraint(t, constraint, v) })
}

func TestConstraintSeeds(t *testing.T) {
	for _, s := range constraintSeeds {
		checkConstraint(t, s, "2.3.4")
	}
}

// TestVersionCache sends more distinct versions than the handler caches, each twice, then texts
// that are too long to be cached or do not parse: the decisions do not depend on the cache.
func TestVersionCache(t *testing.T) {
	cfg := config(mark.Rule{Name: "new", Lane: "new", Versions: ">=2.0.0-0"})
	cfg.Version.Header = "X-App-Version"
	h := newMark(t, cfg)
	versions := []string{"2.0.0-" + strings.Repeat("a", 100), "x", "2.0.0-" + strings.Repeat("b", 100), "y"}
	for i := 0; i < 1030; i++ {
		versions = append(versions, strconv.Itoa(1+i%2)+".0."+strconv.Itoa(i))
	}
	for i := len(versions) - 1; i >= 0; i-- {
		v := versions[i]
		want := "-"
		if v[0] == '2' {
			want = "new"
		}
		for k := 0; k < 2; k++ {
			if got := laneOf(h, request{headers: []string{"X-App-Version", v}}); got != want {
				t.Fatalf("version %q, request %d: lane %q, want %q", v, k, got, want)
			}
		}
	}
}
