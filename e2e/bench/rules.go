package bench

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
)

// RuleSet is a realistic mark configuration for the benchmarks together with the requests
// that exercise it.
type RuleSet struct {
	// Rules are mark rules in the dynamic configuration's shape (ready to marshal as YAML).
	Rules []map[string]any
	// Lanes are the lanes the rules use.
	Lanes []string
	// LaneUser is a user ID listed in the last users rule, so the rules before it are tried
	// and fail first; LaneName is its lane.
	LaneUser, LaneName string
	// MissUser is a user ID that no rule matches: it is in no users list and its bucket is
	// above the percent rule's share, so every rule, the percent rule's hash included, is
	// evaluated.
	MissUser string
	// Path is the request path of every benchmark request; no path rule matches it.
	Path string
	// Users is the number of distinct users listed.
	Users int
}

// Sizes of the realistic rule set.
const (
	ruleCount     = 100
	userCount     = 10000
	pathRuleEvery = 5 // every fifth rule is a path rule
	percentShare  = 10.0
	percentSalt   = "bench-rollout"
	firstUserID   = 200000
)

// Realistic returns a set of 100 rules: 80 users rules sharing 10,000 users, 19 path rules
// (prefix, exact, contains and regex, in turn) between them, and a 10 % sticky percent rule
// last.
func Realistic() RuleSet {
	rs := RuleSet{Lanes: []string{"canary", "beta"}, Path: "/api/orders", Users: userCount}
	pathRules := (ruleCount - 1) / pathRuleEvery
	userRules := ruleCount - 1 - pathRules
	perRule := userCount / userRules
	next := firstUserID
	u := 0
	for i := 0; i < ruleCount-1; i++ {
		lane := rs.Lanes[i%len(rs.Lanes)]
		name := fmt.Sprintf("rule-%02d", i)
		if i%pathRuleEvery == pathRuleEvery-1 {
			rs.Rules = append(rs.Rules, map[string]any{"name": name, "lane": lane, "path": pathMatch(i)})
			continue
		}
		n := perRule
		if u == userRules-1 {
			n = firstUserID + userCount - next // the last users rule takes the remainder
		}
		users := make([]string, n)
		for j := range users {
			users[j] = strconv.Itoa(next)
			next++
		}
		rs.Rules = append(rs.Rules, map[string]any{"name": name, "lane": lane, "users": users})
		rs.LaneUser, rs.LaneName = users[n/2], lane
		u++
	}
	rs.Rules = append(rs.Rules, map[string]any{
		"name": "rollout", "lane": "canary", "percent": percentShare, "salt": percentSalt,
	})
	for k := 0; ; k++ {
		id := "guest-" + strconv.Itoa(k)
		if !InPercent(percentSalt, id, percentShare) {
			rs.MissUser = id
			break
		}
	}
	return rs
}

// pathMatch returns the path condition of rule i, none of which matches RuleSet.Path.
func pathMatch(i int) map[string]any {
	switch (i / pathRuleEvery) % 4 {
	case 0:
		return map[string]any{"prefix": fmt.Sprintf("/beta/feature-%d", i)}
	case 1:
		return map[string]any{"exact": fmt.Sprintf("/preview/feature-%d", i)}
	case 2:
		return map[string]any{"contains": []string{fmt.Sprintf("/exp-%d/", i)}}
	default:
		return map[string]any{"regex": fmt.Sprintf(`^/labs/f%d/[a-z]+$`, i)}
	}
}

// Bucket is the spec's percentage bucket of a key: the first 8 bytes of
// SHA-256(salt + ":" + key), big-endian, modulo 10000.
func Bucket(salt, key string) uint64 {
	sum := sha256.Sum256([]byte(salt + ":" + key))
	return binary.BigEndian.Uint64(sum[:8]) % 10000
}

// InPercent reports whether a key falls in a percent rule's share.
func InPercent(salt, key string, percent float64) bool {
	return float64(Bucket(salt, key)) < percent*100
}
