package dispatch_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/graylane/graylane/dispatch"
)

// cfgFuzzLane is the fuzzed input of one lane. In a URL, {up} stands for the address of a server
// that answers 200, {down} for one that closes every connection, {busy} for one that answers 503
// and {tls} for an HTTPS server whose certificate {tlsca} is.
type cfgFuzzLane struct {
	name, url0, url1 string
	weight0, weight1 int
	fallback         string
	stickyName       string
	stickySameSite   string
	stickyMaxAge     int
	stickyPath       string
	stickyDomain     string
	flags            int // the cfgFuzz* bits below
}

// Bits of cfgFuzzLane.flags.
const (
	cfgFuzzPassHostSet = 1 << iota
	cfgFuzzPassHost
	cfgFuzzSticky
	cfgFuzzSecure
	cfgFuzzHTTPOnly
	cfgFuzzPathSet
	cfgFuzzWeight0Set
	cfgFuzzWeight1Set
	cfgFuzzTwoServers
)

// Bits of cfgFuzzDispatch.flags.
const (
	cfgFuzzMaxFailsSet = 1 << iota
	cfgFuzzInsecure
)

// cfgFuzzDispatch is the fuzzed input of FuzzNewConfig: a whole configuration (up to two
// lanes) and one request.
type cfgFuzzDispatch struct {
	header, unknownLane, servedBy, flush string
	dial, responseHeader, idle           string
	maxFails                             int
	window, cooldown                     string
	rootCA, serverName                   string // rootCA: PEM text, {tlsca}, missing:<file name>, or a file's content; "" for none
	flags                                int
	lanes                                int // number of lanes, taken modulo 3
	l0, l1                               cfgFuzzLane
	reqLane, reqCookie                   string
}

// addDispatchSeed adds in to the seed corpus of f, in the order of the fuzz function's parameters.
func addDispatchSeed(f *testing.F, in cfgFuzzDispatch) {
	l0, l1 := in.l0, in.l1
	f.Add(in.header, in.unknownLane, in.servedBy, in.flush, in.dial, in.responseHeader, in.idle, in.maxFails,
		in.window, in.cooldown, in.rootCA, in.serverName, in.flags, in.lanes,
		l0.name, l0.url0, l0.url1, l0.weight0, l0.weight1, l0.fallback, l0.stickyName, l0.stickySameSite,
		l0.stickyMaxAge, l0.stickyPath, l0.stickyDomain, l0.flags,
		l1.name, l1.url0, l1.url1, l1.weight0, l1.weight1, l1.fallback, l1.stickyName, l1.stickySameSite,
		l1.stickyMaxAge, l1.stickyPath, l1.stickyDomain, l1.flags,
		in.reqLane, in.reqCookie)
}

// cfgFuzzDispatchSeeds are realistic configurations, the README's among them, and a few bad ones.
var cfgFuzzDispatchSeeds = []cfgFuzzDispatch{
	{header: "X-Gray-Lane", unknownLane: "next", dial: "5s", responseHeader: "60s", idle: "90s",
		maxFails: 3, window: "10s", cooldown: "15s", servedBy: "X-Gray-Upstream", flush: "100ms",
		flags: cfgFuzzMaxFailsSet, lanes: 1,
		l0: cfgFuzzLane{name: "canary", url0: "http://{up}", url1: "http://{down}", weight0: 3,
			fallback: "next", flags: cfgFuzzPassHostSet | cfgFuzzPassHost | cfgFuzzWeight0Set | cfgFuzzTwoServers},
		reqLane: "canary"},
	{unknownLane: "reject", lanes: 2,
		l0: cfgFuzzLane{name: "Canary", url0: "http://{down}/base/", fallback: "beta", flags: cfgFuzzPassHostSet},
		l1: cfgFuzzLane{name: "beta", url0: "http://{busy}", url1: "http://{up}", fallback: "none",
			weight1: 0, flags: cfgFuzzWeight1Set | cfgFuzzTwoServers},
		reqLane: " CANARY "},
	{lanes: 1, maxFails: 0, window: "0", cooldown: "0", flags: cfgFuzzMaxFailsSet, flush: "-1",
		l0: cfgFuzzLane{name: "sticky", url0: "http://{up}", url1: "http://{up}/other", stickyName: "srv",
			stickySameSite: "None", stickyMaxAge: 3600, stickyPath: "/app", stickyDomain: "example.com",
			flags: cfgFuzzSticky | cfgFuzzSecure | cfgFuzzHTTPOnly | cfgFuzzPathSet | cfgFuzzTwoServers},
		reqLane: "sticky", reqCookie: "srv=0123456789abcdef"},
	{lanes: 1, rootCA: "{tlsca}", serverName: "example.com", dial: "3", responseHeader: "0", idle: "1m30s",
		l0: cfgFuzzLane{name: "secure", url0: "https://{tls}", fallback: "none"}, reqLane: "secure"},
	{lanes: 1, flags: cfgFuzzInsecure, l0: cfgFuzzLane{name: "secure", url0: "https://{tls}/x"}, reqLane: "secure"},
	{lanes: 2, l0: cfgFuzzLane{name: "a", url0: "http://{up}", fallback: "b"},
		l1: cfgFuzzLane{name: "b", url0: "http://{up}", fallback: "A"}, reqLane: "a"},
	{lanes: 1, l0: cfgFuzzLane{name: "canary", url0: "ftp://10.0.0.6"}},
	{lanes: 1, l0: cfgFuzzLane{name: "canary", url0: "http://10.0.0.5:8080", weight0: 1001, flags: cfgFuzzWeight0Set}},
	{lanes: 1, l0: cfgFuzzLane{name: "canary", url0: "http://10.0.0.5:8080", fallback: "blue"}},
	{lanes: 1, l0: cfgFuzzLane{name: "-x", url0: "http://10.0.0.5:8080"}},
	{lanes: 1, l0: cfgFuzzLane{name: "canary", url0: "http://h:99999", stickySameSite: "none", stickyMaxAge: -1,
		stickyPath: "x;y", stickyDomain: "bad domain", flags: cfgFuzzSticky | cfgFuzzPathSet}},
	{dial: "5 s", window: "0s", maxFails: 3, flags: cfgFuzzMaxFailsSet, flush: "-2", unknownLane: "drop"},
	{rootCA: "missing:ca.pem", lanes: 1, l0: cfgFuzzLane{name: "secure", url0: "https://{tls}"}},
	{rootCA: "not a certificate", header: "Host", servedBy: "bad header", maxFails: 101, flags: cfgFuzzMaxFailsSet},
}

// cfgFuzzAddrs are the addresses the URL placeholders stand for.
type cfgFuzzAddrs struct {
	up, down, busy, tls string
	caPEM               string
	dir                 string
}

// expand replaces the placeholders of s.
func (a *cfgFuzzAddrs) expand(s string) string {
	return strings.NewReplacer("{up}", a.up, "{down}", a.down, "{busy}", a.busy, "{tls}", a.tls).Replace(s)
}

// local reports whether raw, expanded, is a URL of one of the test servers (or no URL New
// accepts), so that a request sent to it stays on this machine.
func (a *cfgFuzzAddrs) local(raw string) bool {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return true
	}
	switch u.Host {
	case a.up, a.down, a.busy, a.tls:
		return true
	}
	return u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == ""
}

// startCfgFuzzServers starts the servers the URL placeholders stand for.
func startCfgFuzzServers(t testing.TB) *cfgFuzzAddrs {
	ok := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(rw, "up")
	}))
	busy := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.WriteHeader(http.StatusServiceUnavailable)
	}))
	secure := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(rw, "tls")
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	closeAndHold(t, ok)
	closeAndHold(t, busy)
	closeAndHold(t, secure)
	t.Cleanup(func() {
		_ = ln.Close()
		holdPort(ln.Addr().String())
	})
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secure.Certificate().Raw})
	return &cfgFuzzAddrs{up: ok.Listener.Addr().String(), down: ln.Addr().String(),
		busy: busy.Listener.Addr().String(), tls: secure.Listener.Addr().String(), caPEM: string(caPEM), dir: t.TempDir()}
}

// toLane returns the Lane l describes.
func (l cfgFuzzLane) toLane(a *cfgFuzzAddrs) dispatch.Lane {
	out := dispatch.Lane{Fallback: l.fallback}
	out.Servers = append(out.Servers, dispatch.Server{URL: a.expand(l.url0)})
	if l.flags&cfgFuzzWeight0Set != 0 {
		w := l.weight0
		out.Servers[0].Weight = &w
	}
	if l.flags&cfgFuzzTwoServers != 0 {
		out.Servers = append(out.Servers, dispatch.Server{URL: a.expand(l.url1)})
		if l.flags&cfgFuzzWeight1Set != 0 {
			w := l.weight1
			out.Servers[1].Weight = &w
		}
	}
	if l.flags&cfgFuzzPassHostSet != 0 {
		b := l.flags&cfgFuzzPassHost != 0
		out.PassHostHeader = &b
	}
	if l.flags&cfgFuzzSticky != 0 {
		out.Sticky = &dispatch.Sticky{Cookie: dispatch.StickyCookie{Name: l.stickyName, Secure: l.flags&cfgFuzzSecure != 0,
			HTTPOnly: l.flags&cfgFuzzHTTPOnly != 0, SameSite: l.stickySameSite, MaxAge: l.stickyMaxAge, Domain: l.stickyDomain}}
		if l.flags&cfgFuzzPathSet != 0 {
			p := l.stickyPath
			out.Sticky.Cookie.Path = &p
		}
	}
	return out
}

// toConfig returns the Config in describes, its root CA written to a file in a.dir unless it is
// PEM text.
func (in cfgFuzzDispatch) toConfig(t testing.TB, a *cfgFuzzAddrs) *dispatch.Config {
	cfg := &dispatch.Config{Header: in.header, UnknownLane: in.unknownLane, ServedByHeader: in.servedBy,
		FlushInterval: in.flush, Timeouts: dispatch.Timeouts{Dial: in.dial, ResponseHeader: in.responseHeader, Idle: in.idle},
		Health: dispatch.Health{Window: in.window, Cooldown: in.cooldown},
		TLS:    dispatch.TLS{ServerName: in.serverName, InsecureSkipVerify: in.flags&cfgFuzzInsecure != 0}}
	if in.flags&cfgFuzzMaxFailsSet != 0 {
		n := in.maxFails
		cfg.Health.MaxFails = &n
	}
	switch {
	case in.rootCA == "":
	case in.rootCA == "{tlsca}":
		cfg.TLS.RootCAs = []string{a.caPEM}
	case strings.Contains(in.rootCA, "-----BEGIN"):
		cfg.TLS.RootCAs = []string{in.rootCA}
	case strings.HasPrefix(in.rootCA, "missing:"): // a file name in a directory that does not exist
		name := strings.ReplaceAll(strings.TrimPrefix(in.rootCA, "missing:"), "/", "_")
		cfg.TLS.RootCAs = []string{filepath.Join(a.dir, "missing", name)}
	default: // a file path, never one the fuzzer names: it could be /dev/zero
		path := filepath.Join(a.dir, "ca.pem")
		if err := os.WriteFile(path, []byte(in.rootCA), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.TLS.RootCAs = []string{path}
	}
	n := in.lanes % 3
	if n < 0 {
		n = -n
	}
	if n > 0 {
		cfg.Lanes = map[string]dispatch.Lane{in.l0.name: in.l0.toLane(a)}
	}
	if n > 1 {
		cfg.Lanes[in.l1.name] = in.l1.toLane(a)
	}
	return cfg
}

// cfgFuzzDispatchFields are the top-level fields a dispatch configuration error starts with
// (lanes. errors are checked against the lane names).
var cfgFuzzDispatchFields = []string{"header: ", "servedByHeader: ", "unknownLane: ", "health.", "timeouts.",
	"tls.", "flushInterval: "}

// checkDispatchErrorText fails t unless msg, an error of New for cfg, is one line that starts
// with a field path (input is the fuzz input, as text: a "%!" in it is no formatting error of
// the message).
func checkDispatchErrorText(t testing.TB, msg string, cfg *dispatch.Config, input string) {
	t.Helper()
	if msg == "" || strings.Contains(msg, "%!") && !strings.Contains(input, "%!") ||
		strings.IndexFunc(msg, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		t.Fatalf("error %q: empty, badly formatted or not one line", msg)
	}
	for _, field := range cfgFuzzDispatchFields {
		if strings.HasPrefix(msg, field) {
			return
		}
	}
	for name := range cfg.Lanes {
		if strings.HasPrefix(msg, "lanes."+name+".") || strings.HasPrefix(msg, "lanes."+name+": ") ||
			strings.HasPrefix(msg, "lanes: "+strconv.Quote(name)+": ") {
			return
		}
	}
	t.Fatalf("error %q does not start with a field path", msg)
}

// checkDispatchConfig builds the configuration of in; it fails t on a panic (the fuzzer's), on
// an error that does not start with a field path, or when the handler it returns does not pass a
// request without a lane to unknownLane, or panics on a request with a lane header (sent only
// when every server URL is one of the test servers').
func checkDispatchConfig(t testing.TB, a *cfgFuzzAddrs, in cfgFuzzDispatch) {
	t.Helper()
	cfg := in.toConfig(t, a)
	h, err := dispatch.New(context.Background(), nextHandler, cfg, "fuzz")
	if err != nil {
		checkDispatchErrorText(t, err.Error(), cfg, fmt.Sprintf("%+v", in))
		return
	}
	header := cfg.Header
	if header == "" {
		header = "X-Gray-Lane"
	}
	req := httptest.NewRequest(http.MethodGet, "http://front.example/some/path?q=1", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	want := http.StatusOK
	if strings.EqualFold(in.unknownLane, "reject") {
		want = http.StatusBadRequest
	}
	if rec.Code != want || want == http.StatusOK && rec.Body.String() != "next" {
		t.Fatalf("no lane header: status %d %q, want %d", rec.Code, rec.Body.String(), want)
	}
	for _, l := range cfg.Lanes {
		for _, s := range l.Servers {
			if !a.local(s.URL) {
				return
			}
		}
	}
	req = httptest.NewRequest(http.MethodGet, "http://front.example/some/path?q=1", nil)
	req.Header[http.CanonicalHeaderKey(header)] = []string{in.reqLane}
	req.Header.Set("Cookie", in.reqCookie)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code == 0 {
		t.Fatalf("lane %q: no status", in.reqLane)
	}
}

func FuzzNewConfig(f *testing.F) {
	a := startCfgFuzzServers(f)
	for _, in := range cfgFuzzDispatchSeeds {
		addDispatchSeed(f, in)
	}
	f.Fuzz(func(t *testing.T, header, unknownLane, servedBy, flush, dial, responseHeader, idle string, maxFails int,
		window, cooldown, rootCA, serverName string, flags, lanes int,
		name0, url00, url01 string, weight00, weight01 int, fallback0, stickyName0, stickySameSite0 string,
		stickyMaxAge0 int, stickyPath0, stickyDomain0 string, flags0 int,
		name1, url10, url11 string, weight10, weight11 int, fallback1, stickyName1, stickySameSite1 string,
		stickyMaxAge1 int, stickyPath1, stickyDomain1 string, flags1 int,
		reqLane, reqCookie string) {
		checkDispatchConfig(t, a, cfgFuzzDispatch{header: header, unknownLane: unknownLane, servedBy: servedBy, flush: flush,
			dial: dial, responseHeader: responseHeader, idle: idle, maxFails: maxFails, window: window, cooldown: cooldown,
			rootCA: rootCA, serverName: serverName, flags: flags, lanes: lanes,
			l0: cfgFuzzLane{name: name0, url0: url00, url1: url01, weight0: weight00, weight1: weight01, fallback: fallback0,
				stickyName: stickyName0, stickySameSite: stickySameSite0, stickyMaxAge: stickyMaxAge0, stickyPath: stickyPath0,
				stickyDomain: stickyDomain0, flags: flags0},
			l1: cfgFuzzLane{name: name1, url0: url10, url1: url11, weight0: weight10, weight1: weight11, fallback: fallback1,
				stickyName: stickyName1, stickySameSite: stickySameSite1, stickyMaxAge: stickyMaxAge1, stickyPath: stickyPath1,
				stickyDomain: stickyDomain1, flags: flags1},
			reqLane: reqLane, reqCookie: reqCookie})
	})
}

func TestNewConfigSeeds(t *testing.T) {
	a := startCfgFuzzServers(t)
	for _, in := range cfgFuzzDispatchSeeds {
		checkDispatchConfig(t, a, in)
	}
}
