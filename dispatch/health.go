package dispatch

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// defaultMaxFails is Health.MaxFails when it is not set.
const defaultMaxFails = 3

// maxHealthRecords bounds the package-level health table.
const maxHealthRecords = 4096

// maxMaxFails bounds Health.MaxFails, and with it the failure times a health record keeps.
const maxMaxFails = 100

// healthPolicy is one middleware's passive health checking: a server that fails maxFails times
// within window is down for cooldown. The state it reads and writes is the package-level
// healthRecords, keyed by server URL, so it outlives configuration reloads and is shared by every
// middleware that sends to the same server.
type healthPolicy struct {
	maxFails int // 0 turns passive health checking off
	window   time.Duration
	cooldown time.Duration
}

// parseHealth parses the health configuration (with its defaults filled in).
func parseHealth(cfg *Health) (healthPolicy, error) {
	p := healthPolicy{maxFails: *cfg.MaxFails}
	var err error
	if p.window, err = parseDuration(cfg.Window); err != nil {
		return p, fmt.Errorf("window: %w", err)
	}
	if p.cooldown, err = parseDuration(cfg.Cooldown); err != nil {
		return p, fmt.Errorf("cooldown: %w", err)
	}
	if p.maxFails > 0 && p.window == 0 {
		return p, fmt.Errorf("window: %q: must be more than 0 when maxFails is not 0", cfg.Window)
	}
	if p.maxFails > 0 && p.cooldown == 0 {
		return p, fmt.Errorf("cooldown: %q: must be more than 0 when maxFails is not 0", cfg.Cooldown)
	}
	return p, nil
}

// fail counts a failure of s under its middleware's health policy.
func fail(s *server) {
	if s.health.maxFails == 0 {
		return
	}
	countFailure(healthRecords, s.key, s.health, time.Now())
}

// healthRecord holds the recent failures of one server URL.
type healthRecord struct {
	fails     []time.Time // times of the failures within the window, oldest first
	downUntil time.Time   // end of the cooldown; zero when the server was never down
	expires   time.Time   // when the window and the cooldown are both over and the record says nothing
}

// healthTable is the passive health state of every server that failed recently. The functions
// that read and write it are plain functions, not methods, like every function of the request
// path: under Yaegi, each call of a method of an interpreted type wraps the method into a new
// function value (reflect.MakeFunc), and concurrent calls race on the interpreter's cache of the
// receiver's type (the race detector saw it in the plugin as Traefik loads it).
type healthTable struct {
	mu      sync.Mutex
	records map[string]*healthRecord
	size    int64 // len(records), read without mu so that a healthy table costs no lock
	// expiry is when every record has expired at the latest.
	expiry time.Time
	// lookups counts the lookups of records, so that every sweepEvery-th one sweeps the table.
	lookups uint64
}

// sweepEvery is how many lookups of the health table, at most, pass between two sweeps.
const sweepEvery = 1024

// healthRecords is the health state shared by every middleware instance, across reloads.
var healthRecords = &healthTable{records: make(map[string]*healthRecord)}

// healthSize points to healthRecords.size, which the request path reads: one value fewer to
// compute for Yaegi than &healthRecords.size. healthLock is &healthRecords.mu, for the same reason,
// and as a sync.Locker: under Yaegi a call through the interface costs one allocation less than
// one of the pointer's method.
var (
	healthSize             = &healthRecords.size
	healthLock sync.Locker = &healthRecords.mu
)

// sweepExpired empties t, whose lock is held, once all its records have expired. A record is
// removed when its server is looked up after it expired; the record of a server that no lane
// asks about any more (removed from the configuration, or its lane idle) would otherwise keep
// every lane on the path that checks health for good. The lookups call it every sweepEvery-th
// time: a clock reading on every lookup would cost the request path more than the sweep saves.
func sweepExpired(t *healthTable) {
	if time.Now().After(t.expiry) {
		t.records = make(map[string]*healthRecord)
		atomic.StoreInt64(&t.size, 0)
	}
}

// isDown reports whether the server with the given key is in its cooldown. (It and anyRecord
// count their lookups inline rather than through a shared function: a call costs allocations
// under Yaegi on every lane request while the table holds records.) Like the other
// functions of the request path, it is a plain function rather than a method of healthTable. A
// server without a record, the usual case while other servers failed, costs only the lookup:
// the time checks of a record are left to recordDown. (down is a named result, not a variable
// declared here: Yaegi allocates a declared variable anew each time its declaration runs.)
func isDown(key string) (down bool) {
	healthLock.Lock()
	down = healthRecords.records[key] != nil
	healthRecords.lookups++
	if healthRecords.lookups%sweepEvery == 0 {
		sweepExpired(healthRecords)
	}
	healthLock.Unlock()
	return down && recordDown(healthRecords, key)
}

// anyRecord reports whether the health table holds a record of one of servers.
func anyRecord(servers []*server) (found bool) {
	healthLock.Lock()
	for _, s := range servers {
		if healthRecords.records[s.key] != nil {
			found = true
			break
		}
	}
	healthRecords.lookups++
	if healthRecords.lookups%sweepEvery == 0 {
		sweepExpired(healthRecords)
	}
	healthLock.Unlock()
	return found
}

// recordDown reports whether the server with the given key, which had a record, is in its
// cooldown, and removes its record once it expired.
func recordDown(t *healthTable, key string) bool {
	now := time.Now()
	t.mu.Lock()
	down := false
	if r := t.records[key]; r != nil && now.After(r.expires) {
		removeRecord(t, key)
	} else if r != nil {
		down = now.Before(r.downUntil)
	}
	t.mu.Unlock()
	return down
}

// countFailure counts a failure at now of the server with the given key in t, under policy p.
func countFailure(t *healthTable, key string, p *healthPolicy, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.records[key]
	if r != nil && now.Before(r.downUntil) {
		return // requests that were in flight when it went down do not extend the cooldown
	}
	if r == nil {
		if len(t.records) >= maxHealthRecords {
			evictRecords(t, now)
		}
		r = &healthRecord{}
		t.records[key] = r
		atomic.StoreInt64(&t.size, int64(len(t.records)))
	}
	// A sliding window: the failures older than window no longer count.
	for len(r.fails) > 0 && now.Sub(r.fails[0]) > p.window {
		r.fails = r.fails[1:]
	}
	r.fails = append(r.fails, now)
	r.expires = now.Add(p.window)
	if len(r.fails) >= p.maxFails {
		// Down for the cooldown; afterwards it takes its share again and counting starts afresh.
		r.fails = nil
		r.downUntil = now.Add(p.cooldown)
		r.expires = r.downUntil
	}
	if r.expires.After(t.expiry) {
		t.expiry = r.expires
	}
}

// evictRecords makes room in a full table: it drops the records that have expired and, if none
// had, the one that expires first.
func evictRecords(t *healthTable, now time.Time) {
	oldest := ""
	for key, r := range t.records {
		if now.After(r.expires) {
			delete(t.records, key)
		} else if oldest == "" || r.expires.Before(t.records[oldest].expires) {
			oldest = key
		}
	}
	if len(t.records) >= maxHealthRecords {
		delete(t.records, oldest)
	}
	atomic.StoreInt64(&t.size, int64(len(t.records)))
}

// removeRecord drops the record of key from t.
func removeRecord(t *healthTable, key string) {
	delete(t.records, key)
	atomic.StoreInt64(&t.size, int64(len(t.records)))
}
