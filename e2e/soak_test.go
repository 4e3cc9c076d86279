//go:build e2e && linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSoak runs the e2e setup with the sidecar on a 15 s loop and no
// regression for $E2E_SOAK (default: skipped; hack/bench-soak sets 60m) and
// reports the sidecar's resident memory and CPU over time: the figures a
// deployment is sized by, and a leak shows as a rising RSS.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("E2E_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("set E2E_SOAK (for example 60m) to run the soak; see hack/bench-soak")
	}
	r := newRun(t)
	t.Cleanup(r.saveArtifacts)
	r.build(t)
	r.configure(t)
	cfgPath := filepath.Join(r.dir, "tailguard.yml")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(string(b), "evaluation_interval: 2s", "evaluation_interval: 15s", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	r.startAll(t)
	pid := r.proc("tailguard").Pid()
	start := time.Now()
	cpu0 := cpuSeconds(t, pid)
	marks := []time.Duration{0, time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute, 60 * time.Minute, 120 * time.Minute}
	var rows []string
	for _, m := range marks {
		if m > d {
			break
		}
		if wait := time.Until(start.Add(m)); wait > 0 {
			time.Sleep(wait)
		}
		if done, err := r.proc("tailguard").Exited(); done {
			t.Fatalf("the sidecar exited: %v", err)
		}
		rss := rssMiB(t, pid)
		cpu := cpuSeconds(t, pid) - cpu0
		el := time.Since(start)
		row := fmt.Sprintf("%8s  RSS %6.1f MiB  CPU %6.1f s (%.2f%% of a core)", m, rss, cpu, 100*cpu/max(el.Seconds(), 1))
		rows = append(rows, row)
		r.logf("soak: %s", row)
	}
	fmt.Printf("soak (15 s loop, %s):\n%s\n", d, strings.Join(rows, "\n"))
}

func rssMiB(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// cpuSeconds is the process's user+system CPU time (clock ticks of 1/100 s).
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100
}
