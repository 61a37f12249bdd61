package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Tool is an HTTP load generator found on the PATH: wrk, or hey when wrk is absent.
type Tool struct {
	// Name is "wrk" or "hey".
	Name string
	// Path is the executable.
	Path string
}

// FindTool returns wrk, or hey when there is no wrk.
func FindTool() (Tool, error) {
	for _, name := range []string{"wrk", "hey"} {
		if p, err := exec.LookPath(name); err == nil {
			return Tool{Name: name, Path: p}, nil
		}
	}
	return Tool{}, errors.New("neither wrk nor hey is on the PATH (scripts/bench.sh installs wrk)")
}

// Version returns the tool's version line, or its name when it has none.
func (t Tool) Version() string {
	if t.Name != "wrk" {
		return t.Name
	}
	out, _ := exec.Command(t.Path, "-v").CombinedOutput() // wrk -v prints its version and exits 1
	line, _, _ := strings.Cut(string(out), "\n")
	line, _, _ = strings.Cut(line, " Copyright")
	if line = strings.TrimSpace(line); line != "" {
		return line
	}
	return t.Name
}

// Load describes one load run: keep-alive connections sending the same GET for a fixed time.
type Load struct {
	URL         string
	Headers     map[string]string
	Duration    time.Duration
	Connections int
	// Threads is the number of wrk threads (hey has none).
	Threads int
}

// Result is what one load run measured.
type Result struct {
	// RPS is requests per second.
	RPS float64
	// P50 and P99 are latency percentiles.
	P50, P99 time.Duration
	// Requests is the number of requests completed.
	Requests int64
	// Errors counts socket errors and responses that are not 2xx or 3xx.
	Errors int64
	// CPUPerRequest is the CPU time (user and system) Traefik used per request during the run;
	// 0 when not measured. Other work on the machine changes it less than requests/s.
	CPUPerRequest time.Duration
}

// Command returns the command line of a load run.
func (t Tool) Command(l Load) []string {
	var args []string
	switch t.Name {
	case "hey":
		args = []string{t.Path, "-z", l.Duration.String(), "-c", strconv.Itoa(l.Connections)}
	default:
		args = []string{t.Path, "-t" + strconv.Itoa(l.Threads), "-c" + strconv.Itoa(l.Connections),
			"-d" + wrkDuration(l.Duration), "--latency"}
	}
	keys := make([]string, 0, len(l.Headers))
	for k := range l.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-H", k+": "+l.Headers[k])
	}
	return append(args, l.URL)
}

// wrkDuration writes a duration in whole seconds, as wrk reads it.
func wrkDuration(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.Itoa(s) + "s"
}

// Run runs the load and parses the tool's report.
func (t Tool) Run(ctx context.Context, l Load) (Result, string, error) {
	args := t.Command(l)
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return Result{}, string(out), fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	var r Result
	if t.Name == "hey" {
		r, err = ParseHey(string(out))
	} else {
		r, err = ParseWrk(string(out))
	}
	return r, string(out), err
}

var (
	wrkPercentile = regexp.MustCompile(`^\s*(50|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m|h)\s*$`)
	wrkRequests   = regexp.MustCompile(`^\s*(\d+) requests in`)
	wrkRPS        = regexp.MustCompile(`^Requests/sec:\s+([0-9.]+)`)
	wrkNon2xx     = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSocket     = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// ParseWrk reads the report of `wrk --latency`.
func ParseWrk(out string) (Result, error) {
	var r Result
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := wrkPercentile.FindStringSubmatch(line); m != nil {
			d, err := wrkLatency(m[2], m[3])
			if err != nil {
				return r, err
			}
			if m[1] == "50" {
				r.P50 = d
			} else {
				r.P99 = d
			}
		}
		if m := wrkRequests.FindStringSubmatch(line); m != nil {
			r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
		}
		if m := wrkRPS.FindStringSubmatch(line); m != nil {
			r.RPS, _ = strconv.ParseFloat(m[1], 64)
		}
		if m := wrkNon2xx.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			r.Errors += n
		}
		if m := wrkSocket.FindStringSubmatch(line); m != nil {
			for _, s := range m[1:] {
				n, _ := strconv.ParseInt(s, 10, 64)
				r.Errors += n
			}
		}
	}
	if r.RPS == 0 || r.P50 == 0 || r.P99 == 0 {
		return r, fmt.Errorf("wrk report without requests/s or latency percentiles:\n%s", out)
	}
	return r, nil
}

func wrkLatency(value, unit string) (time.Duration, error) {
	f, err := strconv.ParseFloat(value, 64)
	if err != nil {
		return 0, err
	}
	scale := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	return time.Duration(f * float64(scale)), nil
}

var (
	heyPercentile = regexp.MustCompile(`^\s*(50|99)%{1,2} in ([0-9.]+) secs`)
	heyRPS        = regexp.MustCompile(`^\s*Requests/sec:\s+([0-9.]+)`)
	heyStatus     = regexp.MustCompile(`^\s*\[(\d+)\]\s+(\d+) responses`)
	heyError      = regexp.MustCompile(`^\s*\[(\d+)\]\s+.*`)
)

// ParseHey reads the default report of hey.
func ParseHey(out string) (Result, error) {
	var r Result
	inErrors := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "Error distribution:") {
			inErrors = true
			continue
		}
		if m := heyPercentile.FindStringSubmatch(line); m != nil {
			f, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				return r, err
			}
			d := time.Duration(f * float64(time.Second))
			if m[1] == "50" {
				r.P50 = d
			} else {
				r.P99 = d
			}
		}
		if m := heyRPS.FindStringSubmatch(line); m != nil {
			r.RPS, _ = strconv.ParseFloat(m[1], 64)
		}
		if m := heyStatus.FindStringSubmatch(line); m != nil && !inErrors {
			code, _ := strconv.Atoi(m[1])
			n, _ := strconv.ParseInt(m[2], 10, 64)
			r.Requests += n
			if code >= 400 {
				r.Errors += n
			}
			continue
		}
		if m := heyError.FindStringSubmatch(line); m != nil && inErrors {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			r.Errors += n
		}
	}
	if r.RPS == 0 || r.P50 == 0 || r.P99 == 0 {
		return r, fmt.Errorf("hey report without requests/s or latency percentiles:\n%s", out)
	}
	return r, nil
}
