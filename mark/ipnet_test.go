package mark_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/graylane/graylane/mark"
)

func TestIPStrategy(t *testing.T) {
	// A rule for clients in 203.0.113.0/24 (or 2001:db8:1::/48), under several IP strategies.
	tests := []struct {
		name     string
		strategy mark.IPStrategy
		remote   string
		xff      []string // X-Forwarded-For lines
		want     bool
	}{
		{name: "peer by default", remote: "203.0.113.7:1", xff: []string{"198.51.100.1"}, want: true},
		{name: "peer by default ignores X-Forwarded-For", remote: "10.0.0.1:1", xff: []string{"203.0.113.7"}, want: false},
		{name: "depth 1 is the last entry", strategy: mark.IPStrategy{Depth: 1}, remote: "10.0.0.1:1", xff: []string{"198.51.100.1, 203.0.113.7"}, want: true},
		{name: "depth 2", strategy: mark.IPStrategy{Depth: 2}, remote: "10.0.0.1:1", xff: []string{"203.0.113.7, 10.0.0.2"}, want: true},
		{name: "depth 2 over two lines", strategy: mark.IPStrategy{Depth: 2}, remote: "10.0.0.1:1", xff: []string{"203.0.113.7", "10.0.0.2"}, want: true},
		{name: "depth beyond the entries", strategy: mark.IPStrategy{Depth: 3}, remote: "203.0.113.7:1", xff: []string{"203.0.113.7, 10.0.0.2"}, want: false},
		{name: "depth without the header", strategy: mark.IPStrategy{Depth: 1}, remote: "203.0.113.7:1", want: false},
		{name: "depth entry not an address", strategy: mark.IPStrategy{Depth: 1}, remote: "203.0.113.7:1", xff: []string{"203.0.113.7, unknown"}, want: false},
		{name: "depth entry mapped", strategy: mark.IPStrategy{Depth: 1}, remote: "10.0.0.1:1", xff: []string{" ::ffff:203.0.113.7 "}, want: true},
		{name: "excluded proxies skipped", strategy: mark.IPStrategy{ExcludedIPs: []string{"10.0.0.0/8"}}, remote: "10.0.0.1:1", xff: []string{"198.51.100.1, 203.0.113.7, 10.0.0.3, 10.0.0.2"}, want: true},
		{name: "excluded skips empty entries", strategy: mark.IPStrategy{ExcludedIPs: []string{"10.0.0.0/8"}}, remote: "10.0.0.1:1", xff: []string{"203.0.113.7, , 10.0.0.2,"}, want: true},
		{name: "excluded takes the first not excluded", strategy: mark.IPStrategy{ExcludedIPs: []string{"10.0.0.0/8"}}, remote: "10.0.0.1:1", xff: []string{"203.0.113.7, 198.51.100.1, 10.0.0.2"}, want: false},
		{name: "excluded all", strategy: mark.IPStrategy{ExcludedIPs: []string{"10.0.0.0/8", "203.0.113.0/24"}}, remote: "203.0.113.7:1", xff: []string{"203.0.113.7, 10.0.0.2"}, want: false},
		{name: "excluded meets garbage", strategy: mark.IPStrategy{ExcludedIPs: []string{"10.0.0.0/8"}}, remote: "10.0.0.1:1", xff: []string{"203.0.113.7, garbage, 10.0.0.2"}, want: false},
		{name: "ipv6 subnet", strategy: mark.IPStrategy{IPv6Subnet: 48}, remote: "[2001:db8:1:2::5]:1", want: true},
		{name: "ipv6 subnet leaves IPv4", strategy: mark.IPStrategy{IPv6Subnet: 48}, remote: "203.0.113.7:1", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config(mark.Rule{Name: "r", Lane: "canary", SourceIPs: []string{"203.0.113.0/24", "2001:db8:1::/48"}})
			cfg.IPStrategy = tt.strategy
			req := request{remote: tt.remote}
			for _, line := range tt.xff {
				req.headers = append(req.headers, "X-Forwarded-For", line)
			}
			want := "-"
			if tt.want {
				want = "canary"
			}
			if got := laneOf(newMark(t, cfg), req); got != want {
				t.Errorf("lane %q, want %q", got, want)
			}
		})
	}
}

func TestIPStrategyAnonymousKey(t *testing.T) {
	// anonymous ip takes the key from the strategy: the bucket of 192.0.2.1 under salt
	// "new-app" is 2003, and IPv6 addresses of one /64 share the key of its first address.
	tests := []struct {
		name     string
		strategy mark.IPStrategy
		percent  float64
		remote   string
		xff      string
		want     string
	}{
		{name: "depth in", strategy: mark.IPStrategy{Depth: 1}, percent: 20.04, remote: "10.0.0.1:1", xff: "192.0.2.1", want: "canary"},
		{name: "depth out", strategy: mark.IPStrategy{Depth: 1}, percent: 20.03, remote: "10.0.0.1:1", xff: "192.0.2.1", want: "-"},
		{name: "no client IP, no key", strategy: mark.IPStrategy{Depth: 2}, percent: 100, remote: "10.0.0.1:1", xff: "192.0.2.1", want: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			percent := tt.percent
			cfg := config(mark.Rule{Name: "new-app", Lane: "canary", Percent: &percent})
			cfg.Anonymous = "ip"
			cfg.IPStrategy = tt.strategy
			if got := laneOf(newMark(t, cfg), request{remote: tt.remote, headers: []string{"X-Forwarded-For", tt.xff}}); got != tt.want {
				t.Errorf("lane %q, want %q", got, tt.want)
			}
		})
	}
	// Two addresses of one /64 fall in the same bucket with ipv6Subnet 64, for every percent.
	for p := 1; p <= 100; p += 3 {
		percent := float64(p)
		cfg := config(mark.Rule{Name: "v6", Lane: "canary", Percent: &percent})
		cfg.Anonymous = "ip"
		cfg.IPStrategy = mark.IPStrategy{IPv6Subnet: 64}
		h := newMark(t, cfg)
		a := laneOf(h, request{remote: "[2001:db8:7:8::1]:1"})
		b := laneOf(h, request{remote: "[2001:db8:7:8:aaaa:bbbb:cccc:dddd]:1"})
		if a != b {
			t.Fatalf("percent %d: lanes %q and %q for one /64", p, a, b)
		}
	}
}

// ipStrategySeeds are the seeds of FuzzIPStrategy, also run by TestIPStrategySeeds (Yaegi does
// not run fuzz targets): X-Forwarded-For values.
var ipStrategySeeds = []string{"", "203.0.113.7", "a, 10.0.0.1", " ,, ", "::ffff:10.1.2.3, 2001:db8::1%eth0", "10.0.0.1,10.0.0.2,10.0.0.3", "1.2.3.4:80", "[2001:db8::1]:443, 10.0.0.1:80", "10.0.0.1:x", strings.Repeat("10.0.0.1,", 50)}

// checkIPStrategy verifies that, under depth (0: excludedIPs 10.0.0.0/8), a rule matching every
// address matches exactly when the X-Forwarded-For value xff has a client IP, as found here by
// a plain reading of the README's rules.
func checkIPStrategy(t testing.TB, xff string, depth int) {
	entries := strings.Split(xff, ",")
	want := false
	if depth > 0 {
		if len(entries) >= depth {
			_, err := entryAddr(entries[len(entries)-depth])
			want = err == nil
		}
	} else {
		private := netip.MustParsePrefix("10.0.0.0/8")
		for i := len(entries) - 1; i >= 0; i-- {
			entry := strings.TrimSpace(entries[i])
			if entry == "" {
				continue
			}
			a, err := entryAddr(entry)
			if err != nil || !private.Contains(a.Unmap()) {
				want = err == nil
				break
			}
		}
	}
	cfg := config(mark.Rule{Name: "any", Lane: "canary", SourceIPs: []string{"0.0.0.0/0", "::/0"}})
	cfg.IPStrategy = mark.IPStrategy{Depth: depth, IPv6Subnet: 56}
	if depth == 0 {
		cfg.IPStrategy.ExcludedIPs = []string{"10.0.0.0/8"}
	}
	got := laneOf(newMark(t, cfg), request{remote: "10.9.9.9:1", headers: []string{"X-Forwarded-For", xff}})
	if want && got != "canary" || !want && got != "-" {
		t.Fatalf("X-Forwarded-For %q, depth %d: lane %q, want a client IP: %v", xff, depth, got, want)
	}
}

// entryAddr parses an X-Forwarded-For entry: an address, or an address and a port.
func entryAddr(entry string) (netip.Addr, error) {
	entry = strings.TrimSpace(entry)
	if ap, err := netip.ParseAddrPort(entry); err == nil {
		return ap.Addr(), nil
	}
	return netip.ParseAddr(entry)
}

func FuzzIPStrategy(f *testing.F) {
	for _, s := range ipStrategySeeds {
		f.Add(s, uint8(1))
		f.Add(s, uint8(0))
	}
	f.Fuzz(func(t *testing.T, xff string, depth uint8) {
		if strings.ContainsAny(xff, "\r\n") {
			return
		}
		checkIPStrategy(t, xff, int(depth%4))
	})
}

func TestIPStrategySeeds(t *testing.T) {
	for _, s := range ipStrategySeeds {
		for depth := 0; depth < 4; depth++ {
			checkIPStrategy(t, s, depth)
		}
	}
}
