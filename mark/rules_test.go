package mark_test

import (
	"strconv"
	"testing"

	"github.com/graylane/graylane/mark"
)

func TestConditions(t *testing.T) {
	tests := []struct {
		name string
		rule mark.Rule
		req  request
		want bool
	}{
		{name: "prefix", rule: mark.Rule{Path: mark.PathMatch{Prefix: "/beta"}}, req: request{target: "/beta/x"}, want: true},
		{name: "prefix miss", rule: mark.Rule{Path: mark.PathMatch{Prefix: "/beta"}}, req: request{target: "/alpha/beta"}, want: false},
		{name: "exact", rule: mark.Rule{Path: mark.PathMatch{Exact: "/a"}}, req: request{target: "/a?x=1"}, want: true},
		{name: "exact miss", rule: mark.Rule{Path: mark.PathMatch{Exact: "/a"}}, req: request{target: "/a/"}, want: false},
		{name: "contains", rule: mark.Rule{Path: mark.PathMatch{Contains: []string{"new", "beta"}}}, req: request{target: "/x/beta/y"}, want: true},
		{name: "contains miss", rule: mark.Rule{Path: mark.PathMatch{Contains: []string{"new", "beta"}}}, req: request{target: "/x/bet/y"}, want: false},
		{name: "contains is on the decoded path", rule: mark.Rule{Path: mark.PathMatch{Contains: []string{"a b"}}}, req: request{target: "/a%20b"}, want: true},
		{name: "regex", rule: mark.Rule{Path: mark.PathMatch{Regex: `^/v[0-9]+/items$`}}, req: request{target: "/v2/items"}, want: true},
		{name: "regex miss", rule: mark.Rule{Path: mark.PathMatch{Regex: `^/v[0-9]+/items$`}}, req: request{target: "/v2/items/1"}, want: false},
		{name: "method", rule: mark.Rule{Methods: []string{"get", "HEAD"}}, req: request{method: "GET"}, want: true},
		{name: "method miss", rule: mark.Rule{Methods: []string{"get", "HEAD"}}, req: request{method: "POST"}, want: false},
		{name: "header", rule: mark.Rule{Headers: map[string]string{"x-region": "cn-east"}}, req: request{headers: []string{"X-Region", "cn-east"}}, want: true},
		{name: "header other value", rule: mark.Rule{Headers: map[string]string{"X-Region": "cn-east"}}, req: request{headers: []string{"X-Region", "cn-west"}}, want: false},
		{name: "header absent", rule: mark.Rule{Headers: map[string]string{"X-Region": "cn-east"}}, want: false},
		{name: "header any", rule: mark.Rule{Headers: map[string]string{"X-Region": "*"}}, req: request{headers: []string{"X-Region", ""}}, want: true},
		{name: "header any absent", rule: mark.Rule{Headers: map[string]string{"X-Region": "*"}}, want: false},
		{name: "header empty value", rule: mark.Rule{Headers: map[string]string{"X-Flag": ""}}, req: request{headers: []string{"X-Flag", ""}}, want: true},
		{name: "header empty value absent", rule: mark.Rule{Headers: map[string]string{"X-Flag": ""}}, want: false},
		{name: "header empty value other", rule: mark.Rule{Headers: map[string]string{"X-Flag": ""}}, req: request{headers: []string{"X-Flag", "1"}}, want: false},
		{name: "headers all", rule: mark.Rule{Headers: map[string]string{"A": "1", "B": "2"}}, req: request{headers: []string{"A", "1"}}, want: false},
		{name: "cookie", rule: mark.Rule{Cookies: map[string]string{"beta": "1"}}, req: request{headers: []string{"Cookie", "a=b; beta=1"}}, want: true},
		{name: "cookie quoted", rule: mark.Rule{Cookies: map[string]string{"beta": "1"}}, req: request{headers: []string{"Cookie", `beta="1"`}}, want: true},
		{name: "cookie second header", rule: mark.Rule{Cookies: map[string]string{"beta": "1"}}, req: request{headers: []string{"Cookie", "a=b", "Cookie", "beta=1"}}, want: true},
		{name: "cookie other value", rule: mark.Rule{Cookies: map[string]string{"beta": "1"}}, req: request{headers: []string{"Cookie", "beta=2"}}, want: false},
		{name: "cookie any", rule: mark.Rule{Cookies: map[string]string{"beta": "*"}}, req: request{headers: []string{"Cookie", "beta="}}, want: true},
		{name: "cookie absent", rule: mark.Rule{Cookies: map[string]string{"beta": "*"}}, req: request{headers: []string{"Cookie", "betax=1"}}, want: false},
		{name: "query", rule: mark.Rule{Query: map[string]string{"preview": "true"}}, req: request{target: "/?a=1&preview=true"}, want: true},
		{name: "query escaped", rule: mark.Rule{Query: map[string]string{"pre view": "a b"}}, req: request{target: "/?pre%20view=a+b"}, want: true},
		{name: "query first value", rule: mark.Rule{Query: map[string]string{"preview": "true"}}, req: request{target: "/?preview=false&preview=true"}, want: false},
		{name: "query any", rule: mark.Rule{Query: map[string]string{"preview": "*"}}, req: request{target: "/?preview"}, want: true},
		{name: "query empty value", rule: mark.Rule{Query: map[string]string{"flag": ""}}, req: request{target: "/?flag="}, want: true},
		{name: "query empty value absent", rule: mark.Rule{Query: map[string]string{"flag": ""}}, req: request{target: "/?other=1"}, want: false},
		{name: "cookie empty value absent", rule: mark.Rule{Cookies: map[string]string{"flag": ""}}, req: request{headers: []string{"Cookie", "other=1"}}, want: false},
		{name: "query absent", rule: mark.Rule{Query: map[string]string{"preview": "*"}}, req: request{target: "/?previews=1"}, want: false},
		{name: "query semicolon pair skipped", rule: mark.Rule{Query: map[string]string{"preview": "*"}}, req: request{target: "/?preview=1;x=2"}, want: false},
		{name: "sourceIPs", rule: mark.Rule{SourceIPs: []string{"192.168.0.0/16", "10.0.0.1"}}, req: request{remote: "192.168.3.4:80"}, want: true},
		{name: "sourceIPs single", rule: mark.Rule{SourceIPs: []string{"192.168.0.0/16", "10.0.0.1"}}, req: request{remote: "10.0.0.1:80"}, want: true},
		{name: "sourceIPs mapped", rule: mark.Rule{SourceIPs: []string{"10.0.0.0/8"}}, req: request{remote: "[::ffff:10.0.0.1]:80"}, want: true},
		{name: "sourceIPs v6", rule: mark.Rule{SourceIPs: []string{"2001:db8::/32"}}, req: request{remote: "[2001:db8::5]:80"}, want: true},
		{name: "sourceIPs miss", rule: mark.Rule{SourceIPs: []string{"192.168.0.0/16", "10.0.0.1"}}, req: request{remote: "10.0.0.2:80"}, want: false},
		{name: "sourceIPs ignore X-Forwarded-For", rule: mark.Rule{SourceIPs: []string{"10.0.0.1"}}, req: request{remote: "10.0.0.2:80", headers: []string{"X-Forwarded-For", "10.0.0.1", "X-Real-Ip", "10.0.0.1"}}, want: false},
		{name: "users", rule: mark.Rule{Users: []string{"1001", "1002"}}, req: request{headers: []string{"X-User-Id", "1002"}}, want: true},
		{name: "users miss", rule: mark.Rule{Users: []string{"1001", "1002"}}, req: request{headers: []string{"X-User-Id", "10021"}}, want: false},
		{name: "users no identity", rule: mark.Rule{Users: []string{"1001"}}, want: false},
		{name: "all conditions", rule: mark.Rule{
			Users: []string{"u"}, Path: mark.PathMatch{Prefix: "/p"}, Methods: []string{"PUT"},
			Headers: map[string]string{"H": "h"}, Cookies: map[string]string{"c": "*"}, Query: map[string]string{"q": "1"},
			SourceIPs: []string{"192.0.2.0/24"},
		}, req: request{method: "PUT", target: "/p?q=1", headers: []string{"X-User-Id", "u", "H", "h", "Cookie", "c=x"}}, want: true},
		{name: "all conditions but one", rule: mark.Rule{
			Users: []string{"u"}, Path: mark.PathMatch{Prefix: "/p"}, Methods: []string{"PUT"},
			Headers: map[string]string{"H": "h"}, Cookies: map[string]string{"c": "*"}, Query: map[string]string{"q": "1"},
			SourceIPs: []string{"192.0.2.0/24"},
		}, req: request{method: "PUT", target: "/p?q=1", headers: []string{"X-User-Id", "u", "H", "h", "Cookie", "d=x"}}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.rule
			r.Name, r.Lane = "r", "canary"
			cfg := config(r)
			cfg.Identity.Header = "X-User-Id"
			want := "-"
			if tt.want {
				want = "canary"
			}
			if got := laneOf(newMark(t, cfg), tt.req); got != want {
				t.Errorf("lane %q, want %q", got, want)
			}
		})
	}
}

func TestFirstMatchWins(t *testing.T) {
	cfg := config(
		mark.Rule{Name: "testers", Lane: "lane-a", Users: []string{"7"}},
		mark.Rule{Name: "beta", Lane: "lane-b", Path: mark.PathMatch{Prefix: "/beta"}},
		mark.Rule{Name: "all", Lane: "lane-c", Path: mark.PathMatch{Prefix: "/"}},
	)
	cfg.Identity.Query = "uid"
	h := newMark(t, cfg)
	tests := []struct {
		target string
		want   string
	}{
		{"/beta?uid=7", "lane-a"},
		{"/beta?uid=8", "lane-b"},
		{"/x?uid=7", "lane-a"},
		{"/x", "lane-c"},
	}
	for _, tt := range tests {
		if got := laneOf(h, request{target: tt.target}); got != tt.want {
			t.Errorf("%s: lane %q, want %q", tt.target, got, tt.want)
		}
	}
}

func TestManyUsers(t *testing.T) {
	users := make([]string, 10000)
	for i := 0; i < len(users); i++ {
		users[i] = "user-" + strconv.Itoa(i)
	}
	cfg := config(mark.Rule{Name: "many", Lane: "canary", Users: users})
	cfg.Identity.Header = "X-User-Id"
	h := newMark(t, cfg)
	if got := laneOf(h, request{headers: []string{"X-User-Id", "user-9999"}}); got != "canary" {
		t.Errorf("lane %q, want canary", got)
	}
	if got := laneOf(h, request{headers: []string{"X-User-Id", "user-10000"}}); got != "-" {
		t.Errorf("lane %q, want none", got)
	}
}
