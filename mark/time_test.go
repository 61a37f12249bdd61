package mark_test

import (
	"testing"

	"github.com/graylane/graylane/mark"
)

const (
	past   = "2001-01-01T00:00:00Z"
	past2  = "2002-01-01T00:00:00+02:00"
	future = "2999-01-01T00:00:00Z"
	later  = "2999-06-01T00:00:00Z"
)

func TestTimeWindowAndRamp(t *testing.T) {
	tests := []struct {
		name string
		rule mark.Rule
		want bool
	}{
		{name: "from in the past", rule: mark.Rule{From: past}, want: true},
		{name: "from in the future", rule: mark.Rule{From: future}, want: false},
		{name: "until in the future", rule: mark.Rule{Until: future}, want: true},
		{name: "until in the past", rule: mark.Rule{Until: past}, want: false},
		{name: "inside the window", rule: mark.Rule{From: past, Until: future}, want: true},
		{name: "lower-case t and z", rule: mark.Rule{From: "2001-01-01t00:00:00z", Until: "2999-01-01t00:00:00.5z"}, want: true},
		{name: "window over", rule: mark.Rule{From: past, Until: past2}, want: false},
		{name: "window not begun", rule: mark.Rule{From: future, Until: later}, want: false},
		{name: "window and other condition", rule: mark.Rule{From: past, Path: mark.PathMatch{Exact: "/nope"}}, want: false},
		{name: "ramp before its first step is 0 %", rule: mark.Rule{Ramp: []mark.RampStep{{At: future, Percent: 100}}}, want: false},
		{name: "ramp at its last step", rule: mark.Rule{Ramp: []mark.RampStep{{At: past, Percent: 0}, {At: past2, Percent: 100}}}, want: true},
		{name: "ramp between steps", rule: mark.Rule{Ramp: []mark.RampStep{{At: past, Percent: 100}, {At: future, Percent: 0}}}, want: true},
		{name: "ramp falls at its last step", rule: mark.Rule{Ramp: []mark.RampStep{{At: past, Percent: 100}, {At: past2, Percent: 0}}}, want: false},
		{name: "ramp between steps, 0 %", rule: mark.Rule{Ramp: []mark.RampStep{{At: past, Percent: 0}, {At: future, Percent: 100}}}, want: false},
		{name: "ramp replaces percent", rule: mark.Rule{Percent: float(100), Ramp: []mark.RampStep{{At: past, Percent: 0}}}, want: false},
		{name: "ramp replaces percent, up", rule: mark.Rule{Percent: float(0), Ramp: []mark.RampStep{{At: past, Percent: 100}}}, want: true},
		{name: "ramp inside a window", rule: mark.Rule{From: past, Until: future, Ramp: []mark.RampStep{{At: past2, Percent: 100}}}, want: true},
		{name: "percent 0", rule: mark.Rule{Percent: float(0)}, want: false},
		{name: "percent 100", rule: mark.Rule{Percent: float(100)}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.rule
			r.Name, r.Lane = "timed", "canary"
			cfg := config(r)
			cfg.Identity.Header = "X-User-Id"
			want := "-"
			if tt.want {
				want = "canary"
			}
			if got := laneOf(newMark(t, cfg), request{headers: []string{"X-User-Id", "u"}}); got != want {
				t.Errorf("lane %q, want %q", got, want)
			}
		})
	}
}
