package mark

import (
	"testing"
	"time"
)

// TestWindowAndRampBounds checks the instants where a time window and a ramp step begin and end,
// which a black-box test cannot reach (the clock is read when the request arrives): from and a
// step's at are inclusive, until is exclusive. An internal test, like dispatch's TestServerKey.
func TestWindowAndRampBounds(t *testing.T) {
	from := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	until := from.Add(time.Hour)
	w := window{from: from, until: until}
	ramp := []rampStep{{at: from, threshold: 100}, {at: until, threshold: 5000}}
	tests := []struct {
		name      string
		now       time.Time
		in        bool
		threshold uint64
	}{
		{name: "before from", now: from.Add(-time.Nanosecond), in: false, threshold: 0},
		{name: "at from", now: from, in: true, threshold: 100},
		{name: "inside", now: from.Add(time.Minute), in: true, threshold: 100},
		{name: "just before until", now: until.Add(-time.Nanosecond), in: true, threshold: 100},
		{name: "at until", now: until, in: false, threshold: 5000},
		{name: "after until", now: until.Add(time.Hour), in: false, threshold: 5000},
	}
	for _, tt := range tests {
		if got := inWindow(&w, tt.now); got != tt.in {
			t.Errorf("%s: in window %v, want %v", tt.name, got, tt.in)
		}
		if got := rampThreshold(ramp, tt.now); got != tt.threshold {
			t.Errorf("%s: ramp threshold %d, want %d", tt.name, got, tt.threshold)
		}
	}
	open := window{}
	if !inWindow(&open, from) {
		t.Error("a window without bounds does not hold")
	}
}
