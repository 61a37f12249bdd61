package mark

import (
	"errors"
	"fmt"
	"time"
)

// window is the time a rule applies in; a zero bound is open.
type window struct {
	from, until time.Time
}

// rampStep is a compiled RampStep.
type rampStep struct {
	at        time.Time
	threshold uint64
}

// errBadTime explains the time syntax.
var errBadTime = errors.New("must be an RFC 3339 time such as 2026-12-01T08:00:00Z")

// newWindow compiles From and Until; at is the rule's field path for errors.
func newWindow(at string, cfg *Rule) (window, error) {
	var w window
	var err error
	if cfg.From != "" {
		if w.from, err = time.Parse(time.RFC3339, cfg.From); err != nil {
			return w, fmt.Errorf("%s.from: %q: %w", at, cfg.From, errBadTime)
		}
	}
	if cfg.Until != "" {
		if w.until, err = time.Parse(time.RFC3339, cfg.Until); err != nil {
			return w, fmt.Errorf("%s.until: %q: %w", at, cfg.Until, errBadTime)
		}
		if !w.from.IsZero() && !w.until.After(w.from) {
			return w, fmt.Errorf("%s.until: %q: must be after from", at, cfg.Until)
		}
	}
	return w, nil
}

// inWindow reports whether now is in [from, until).
func inWindow(w *window, now time.Time) bool {
	return (w.from.IsZero() || !now.Before(w.from)) && (w.until.IsZero() || now.Before(w.until))
}

// newRamp compiles the Ramp steps, which must be in strictly increasing time order.
func newRamp(at string, steps []RampStep) ([]rampStep, error) {
	if len(steps) == 0 {
		return nil, nil
	}
	ramp := make([]rampStep, len(steps))
	for i := 0; i < len(steps); i++ {
		t, err := time.Parse(time.RFC3339, steps[i].At)
		if err != nil {
			return nil, fmt.Errorf("%s.ramp[%d].at: %q: %w", at, i, steps[i].At, errBadTime)
		}
		if i > 0 && !t.After(ramp[i-1].at) {
			return nil, fmt.Errorf("%s.ramp[%d].at: %q: must be after ramp[%d].at, steps are in time order", at, i, steps[i].At, i-1)
		}
		threshold, err := parsePercent(steps[i].Percent)
		if err != nil {
			return nil, fmt.Errorf("%s.ramp[%d].percent: %v: %w", at, i, steps[i].Percent, err)
		}
		ramp[i] = rampStep{at: t, threshold: threshold}
	}
	return ramp, nil
}

// rampThreshold returns the threshold of the last step at or before now, 0 before the first one.
func rampThreshold(ramp []rampStep, now time.Time) uint64 {
	threshold := uint64(0)
	for i := 0; i < len(ramp) && !now.Before(ramp[i].at); i++ {
		threshold = ramp[i].threshold
	}
	return threshold
}
