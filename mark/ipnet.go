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
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, errors.New("not a CIDR such as 10.0.0.0/8 or an IP address")
	}
	a = a.Unmap().WithZone("")
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
// X-Forwarded-For are deliberately not read: they are set by the client unless a proxy in front
// overwrites them, and Traefik already reports the connection's peer in RemoteAddr.
func peerIP(req *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		host = req.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}
