package mark

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ipSet is a list of networks. Single addresses are kept as /32 or /128 networks.
type ipSet []netip.Prefix

// parseIPSet parses the CIDRs or plain addresses of the field called field.
func parseIPSet(field string, list []string) (ipSet, error) {
	if len(list) == 0 {
		return nil, nil
	}
	set := make(ipSet, len(list))
	for i := 0; i < len(list); i++ {
		p, err := parsePrefix(list[i])
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %q: %w", field, i, list[i], err)
		}
		set[i] = p
	}
	return set, nil
}

// parsePrefix parses a CIDR, or a plain address as a one-address network.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, errors.New("not a CIDR such as 10.0.0.0/8 or an IP address")
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, ok := parseClientIP(s)
	if !ok {
		return netip.Prefix{}, errors.New("not a CIDR such as 10.0.0.0/8 or an IP address")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// inIPSet reports whether ip is in one of the networks of s.
func inIPSet(s ipSet, ip netip.Addr) bool {
	for i := 0; i < len(s); i++ {
		if s[i].Contains(ip) {
			return true
		}
	}
	return false
}

// peerIP returns the address of the direct peer, from req.RemoteAddr. Forwarding headers such as
// X-Forwarded-For are not read here: they are set by the client unless a proxy in front
// overwrites them, and Traefik already reports the connection's peer in RemoteAddr.
func peerIP(req *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		host = req.RemoteAddr
	}
	return parseClientIP(host)
}

// parseClientIP parses an address, IPv4-mapped IPv6 addresses unmapped and zones dropped.
func parseClientIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// clientIPStrategy is a parsed IPStrategy.
type clientIPStrategy struct {
	depth      int
	excluded   ipSet
	ipv6Subnet int
}

// maxIPStrategyDepth bounds IPStrategy.Depth.
const maxIPStrategyDepth = 64

// parseIPStrategy parses cfg; an unset strategy (the direct peer) is nil.
func parseIPStrategy(cfg IPStrategy) (*clientIPStrategy, error) {
	if cfg.Depth < 0 || cfg.Depth > maxIPStrategyDepth {
		return nil, fmt.Errorf("ipStrategy.depth: %d: must be 0 (off) to %d", cfg.Depth, maxIPStrategyDepth)
	}
	if cfg.IPv6Subnet < 0 || cfg.IPv6Subnet > 128 {
		return nil, fmt.Errorf("ipStrategy.ipv6Subnet: %d: must be 0 (off) to 128", cfg.IPv6Subnet)
	}
	excluded, err := parseIPSet("ipStrategy.excludedIPs", cfg.ExcludedIPs)
	if err != nil {
		return nil, err
	}
	if cfg.Depth > 0 && len(excluded) > 0 {
		return nil, fmt.Errorf("ipStrategy.excludedIPs: %q: set either depth (%d) or excludedIPs", cfg.ExcludedIPs, cfg.Depth)
	}
	if cfg.Depth == 0 && len(excluded) == 0 && cfg.IPv6Subnet == 0 {
		return nil, nil
	}
	return &clientIPStrategy{depth: cfg.Depth, excluded: excluded, ipv6Subnet: cfg.IPv6Subnet}, nil
}

// clientIP returns the client IP of req under s: the direct peer when s is nil.
func clientIP(s *clientIPStrategy, req *http.Request) (netip.Addr, bool) {
	if s == nil {
		return peerIP(req)
	}
	var a netip.Addr
	var ok bool
	switch {
	case s.depth > 0:
		a, ok = forwardedIPAt(req, s.depth)
	case len(s.excluded) > 0:
		a, ok = lastForwardedIPNotIn(req, s.excluded)
	default:
		a, ok = peerIP(req)
	}
	if ok && s.ipv6Subnet > 0 && a.Is6() {
		p, _ := a.Prefix(s.ipv6Subnet) // cannot fail: an IPv6 address and at most 128 bits
		a = p.Addr()
	}
	return a, ok
}

// forwardedFor returns the entries of the X-Forwarded-For header lines of req, in order.
func forwardedFor(req *http.Request) []string {
	return strings.Split(strings.Join(req.Header.Values("X-Forwarded-For"), ","), ",")
}

// forwardedIPAt returns the X-Forwarded-For entry of req at position depth from the right.
func forwardedIPAt(req *http.Request, depth int) (netip.Addr, bool) {
	entries := forwardedFor(req)
	if len(entries) < depth {
		return netip.Addr{}, false
	}
	return forwardedEntryIP(entries[len(entries)-depth])
}

// lastForwardedIPNotIn returns the rightmost X-Forwarded-For entry of req that is not in
// excluded; empty entries are skipped, and one that is not an address (with or without a port)
// ends the search.
func lastForwardedIPNotIn(req *http.Request, excluded ipSet) (netip.Addr, bool) {
	entries := forwardedFor(req)
	for i := len(entries) - 1; i >= 0; i-- {
		if strings.TrimSpace(entries[i]) == "" {
			continue
		}
		a, ok := forwardedEntryIP(entries[i])
		if !ok || !inIPSet(excluded, a) {
			return a, ok
		}
	}
	return netip.Addr{}, false
}

// forwardedEntryIP parses an X-Forwarded-For entry, which some proxies write with a port
// ("203.0.113.7:51234", "[2001:db8::1]:443"); Traefik's ipAllowList accepts those too.
func forwardedEntryIP(entry string) (netip.Addr, bool) {
	if a, ok := parseClientIP(entry); ok {
		return a, true
	}
	ap, err := netip.ParseAddrPort(strings.TrimSpace(entry))
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap().WithZone(""), true
}
