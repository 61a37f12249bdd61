package harness

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// childAttr makes the kernel kill a child when the test process dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// LeftoverProcesses lists the processes StartTraefik and StartBackend started (as
// "pid name") that still exist as children of the test process, zombies included. After the
// tests that started them have finished, it should be empty.
func LeftoverProcesses() []string {
	startedMu.Lock()
	defer startedMu.Unlock()
	alive := map[int]bool{}
	for _, child := range LeftoverChildren() {
		pid, _ := strconv.Atoi(strings.Fields(child)[0])
		alive[pid] = true
	}
	var out []string
	for pid, name := range started {
		if alive[pid] {
			out = append(out, strconv.Itoa(pid)+" "+name)
		}
	}
	return out
}

// LeftoverChildren lists the processes (as "pid command") whose parent is the test process
// and that still exist, zombies included. Call it from TestMain after m.Run: every process
// the harness starts is stopped and reaped by its test's Cleanup, so the list should be empty.
func LeftoverChildren() []string {
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so cut after the last ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == self {
			out = append(out, strconv.Itoa(pid)+" "+s[strings.IndexByte(s, '(')+1:i])
		}
	}
	return out
}
