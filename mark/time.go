package mark

import (
	"errors"
	"fmt"
	"strings"
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

// parseTime parses an RFC 3339 time. RFC 3339 allows a lower-case t and z, which Go's parser
// does not; Go's parser allows an offset of 24 hours and offset minutes of 60, which RFC 3339
// does not.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, strings.ToUpper(s))
	if err != nil {
		return t, errBadTime
	}
	if _, offset := t.Zone(); offset <= -24*3600 || offset >= 24*3600 {
		return t, errBadTime
	}
	if n := len(s); s[n-3] == ':' && s[n-2] >= '6' { // the offset's minutes (a time ending in Z has none)
		return t, errBadTime
	}
	return t, nil
}

// newWindow compiles From and Until; at is the rule's field path for errors.
func newWindow(at string, cfg *Rule) (window, error) {
	var w window
	var err error
	if cfg.From != "" {
		if w.from, err = parseTime(cfg.From); err != nil {
			return w, fmt.Errorf("%s.from: %q: %w", at, cfg.From, errBadTime)
		}
	}
	if cfg.Until != "" {
		if w.until, err = parseTime(cfg.Until); err != nil {
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
		t, err := parseTime(steps[i].At)
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
