package mark_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/graylane/graylane/mark"
)

// bucketVectors were computed outside Go, with
//
//	python3 -c 'import hashlib,sys; d=hashlib.sha256((sys.argv[1]+":"+sys.argv[2]).encode()).digest(); print(int.from_bytes(d[:8],"big")%10000)' SALT KEY
//
// (and checked with printf 'ten-percent:1001' | sha256sum: 1d90d934d4c2015c… → 0x1d90d934d4c2015c % 10000 = 5516).
var bucketVectors = []struct {
	salt, key string
	bucket    int
}{
	{"ten-percent", "1001", 5516},
	{"ten-percent", "1002", 2497},
	{"checkout-v2", "alice", 2815},
	{"checkout-v2", "0123456789abcdef0123456789abcdef", 1384},
	{"new-app", "192.0.2.1", 2003},
	{"灰度", "用户42", 2500},
}

// percentLane returns a middleware with one percent rule that reads the identity from X-User-Id.
func percentLane(t testing.TB, salt string, percent float64) http.Handler {
	cfg := config(mark.Rule{Name: "p", Lane: "canary", Percent: &percent, Salt: salt})
	cfg.Identity.Header = "X-User-Id"
	return newMark(t, cfg)
}

func TestBucketVectors(t *testing.T) {
	for _, v := range bucketVectors {
		// A key matches exactly when its bucket is below percent × 100.
		above := percentLane(t, v.salt, float64(v.bucket+1)/100)
		at := percentLane(t, v.salt, float64(v.bucket)/100)
		r := request{headers: []string{"X-User-Id", v.key}}
		if got := laneOf(above, r); got != "canary" {
			t.Errorf("salt %q key %q: not in the first %d buckets", v.salt, v.key, v.bucket+1)
		}
		if got := laneOf(at, r); got != "-" {
			t.Errorf("salt %q key %q: in the first %d buckets", v.salt, v.key, v.bucket)
		}
	}
}

// TestBucketVectorsBesideOtherConditions checks the threshold of a percentage that is checked
// with other conditions (the index checks a rule whose only condition is a fixed percentage on
// a path of its own): a ramp, and a percentage beside a sourceIPs condition.
func TestBucketVectorsBesideOtherConditions(t *testing.T) {
	everyone := []string{"0.0.0.0/0", "::/0"}
	for _, v := range bucketVectors {
		for _, shape := range []string{"ramp", "sourceIPs"} {
			for _, tt := range []struct {
				buckets int
				want    string
			}{{v.bucket + 1, "canary"}, {v.bucket, "-"}} {
				percent := float64(tt.buckets) / 100
				r := mark.Rule{Name: "p", Lane: "canary", Salt: v.salt}
				if shape == "ramp" {
					r.Ramp = []mark.RampStep{{At: past, Percent: percent}}
				} else {
					r.Percent, r.SourceIPs = &percent, everyone
				}
				cfg := config(r)
				cfg.Identity.Header = "X-User-Id"
				if got := laneOf(newMark(t, cfg), request{headers: []string{"X-User-Id", v.key}}); got != tt.want {
					t.Errorf("%s, salt %q key %q, first %d buckets: lane %q, want %q", shape, v.salt, v.key, tt.buckets, got, tt.want)
				}
			}
		}
	}
}

func TestSaltDefaultsToRuleName(t *testing.T) {
	// Bucket of "1002" under salt "ten-percent" is 2497: in at 24.98 %, out at 24.97 %.
	for _, tt := range []struct {
		percent float64
		want    string
	}{{24.98, "canary"}, {24.97, "-"}} {
		percent := tt.percent
		cfg := config(mark.Rule{Name: "ten-percent", Lane: "canary", Percent: &percent})
		cfg.Identity.Header = "X-User-Id"
		if got := laneOf(newMark(t, cfg), request{headers: []string{"X-User-Id", "1002"}}); got != tt.want {
			t.Errorf("percent %v: lane %q, want %q", tt.percent, got, tt.want)
		}
	}
}

func TestAnonymousIPBucket(t *testing.T) {
	// Bucket of 192.0.2.1 under salt "new-app" is 2003.
	for _, tt := range []struct {
		percent float64
		remote  string
		want    string
	}{{20.04, "192.0.2.1:1", "canary"}, {20.03, "192.0.2.1:1", "-"}, {20.04, "[::ffff:192.0.2.1]:2", "canary"}} {
		percent := tt.percent
		cfg := config(mark.Rule{Name: "new-app", Lane: "canary", Percent: &percent})
		cfg.Anonymous = "ip"
		rec := serve(newMark(t, cfg), request{remote: tt.remote}.build())
		if got := rec.Header().Get(laneSeen); got != tt.want {
			t.Errorf("percent %v from %s: lane %q, want %q", tt.percent, tt.remote, got, tt.want)
		}
		if c := rec.Header().Get("Set-Cookie"); c != "" {
			t.Errorf("anonymous ip set a cookie: %q", c)
		}
	}
}

// TestRaisingPercentOnlyAddsKeys checks, for 2,000 keys and every whole percent, that a key in
// the lane at one percentage stays in at every higher one, and that the shares are about right.
func TestRaisingPercentOnlyAddsKeys(t *testing.T) {
	const keys = 2000
	handlers := make([]http.Handler, 101)
	for p := 0; p <= 100; p++ {
		percent := float64(p)
		cfg := config(mark.Rule{Name: "p", Lane: "canary", Percent: &percent, Salt: "monotonic"})
		cfg.Identity.Header = "X-User-Id"
		h, err := mark.New(context.Background(), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), cfg, "p")
		if err != nil {
			t.Fatal(err)
		}
		handlers[p] = h
	}
	counts := make([]int, 101)
	rw := &discard{header: http.Header{}}
	req := request{}.build()
	for k := 0; k < keys; k++ {
		req.Header["X-User-Id"] = []string{"user-" + strconv.Itoa(k)}
		in := false
		for p := 0; p <= 100; p++ {
			handlers[p].ServeHTTP(rw, req)
			got := req.Header.Get("X-Gray-Lane") == "canary"
			if in && !got {
				t.Fatalf("key %d left the lane when the percentage rose to %d", k, p)
			}
			if got {
				counts[p]++
			}
			in = got
		}
	}
	if counts[0] != 0 || counts[100] != keys {
		t.Errorf("0 %% holds %d keys, 100 %% holds %d of %d", counts[0], counts[100], keys)
	}
	if counts[10] < 140 || counts[10] > 260 || counts[50] < 900 || counts[50] > 1100 {
		t.Errorf("10 %% holds %d and 50 %% holds %d of %d keys", counts[10], counts[50], keys)
	}
}

func TestEveryTwoDecimalPercentIsAccepted(t *testing.T) {
	// Every percentage with at most two decimals, as YAML or a label gives it (the float64 nearest
	// to the decimal), is accepted; a step of 0.07 keeps the interpreted run short.
	for hundredths := 0; hundredths <= 10000; hundredths += 7 {
		p, err := strconv.ParseFloat(strconv.Itoa(hundredths/100)+"."+strconv.Itoa(100 + hundredths%100)[1:], 64)
		if err != nil {
			t.Fatal(err)
		}
		cfg := mark.CreateConfig()
		cfg.Rules = []mark.Rule{{Name: "p", Lane: "canary", Percent: &p}}
		if _, err := mark.New(context.Background(), http.NotFoundHandler(), cfg, "t"); err != nil {
			t.Fatalf("percent %v: %v", p, err)
		}
	}
}
