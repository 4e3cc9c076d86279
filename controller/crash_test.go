package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tailguard/tailguard/flags"
)

// crashP99 is the /checkout p99 of a deterministic service model: the
// legacy tail plus the new strategy's retry waits, in proportion to its
// share of traffic, its base delay and its attempts. Any monotone model
// serves here: the tests are about what a restart keeps, not the tuning.
func crashP99(f FlagState) float64 {
	k, ok := f.ConstantsFor("decorrelated")
	if !ok {
		return 0.25
	}
	return 0.25 + f.Share("decorrelated")*0.25*(0.6+0.4*(k.Base.Seconds()/0.1)*(float64(max(k.MaxAttempts, 1))/6))
}

// crashRun is one replica's life on a flag file: a controller that starts
// with empty memory, as after a restart, and steps through minutes
// [from, to) of virtual time.
func crashRun(ctx context.Context, t testing.TB, path string, v *flags.Validator, statePath string, from, to int, afterStep func(minute int)) *Controller {
	t.Helper()
	st, err := flags.NewStore(flags.StoreConfig{Path: path, Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	pol := loadPolicy(t, nil)
	w, err := NewFlagsWriter(st, &pol.Services[0])
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Policy: pol, Writer: w, Actor: "tailguard/shop-" + strconv.Itoa(os.Getpid())}
	if statePath != "" {
		if cfg.States, err = NewFileStates(statePath); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for m := from; m < to; m++ {
		fs, err := w.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Step(ctx, observe(crashP99(fs), fs), t0.Add(time.Duration(m)*time.Minute)); err != nil && !errors.Is(err, ErrConflict) {
			t.Fatal(err)
		}
		if afterStep != nil {
			afterStep(m)
		}
	}
	return c
}

// journalSteps returns the steps (StepOf) of the controller's journaled
// writes, oldest first, and checks that the flag file is at the revision
// the last of them left it at.
func journalSteps(t testing.TB, path string, v *flags.Validator) []string {
	t.Helper()
	st, err := flags.NewStore(flags.StoreConfig{Path: path, Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hist, err := st.History(ctx, flags.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := st.Load(ctx)
	if err != nil {
		t.Fatalf("flag file after the crashes: %v", err)
	}
	var steps []string
	for _, e := range hist {
		if e.Actor == flags.ActorController {
			steps = append(steps, StepOf(e.IdempotencyKey))
		}
	}
	if n := len(hist); n > 0 && hist[n-1].RevisionAfter != snap.Revision {
		t.Errorf("flag file at revision %d, journal's last entry left it at %d", snap.Revision, hist[n-1].RevisionAfter)
	}
	return steps
}

const crashMinutes = 90

// referenceSteps runs the scenario on a fresh flag file without restarts
// and returns its writes.
func referenceSteps(t *testing.T, v *flags.Validator) []string {
	t.Helper()
	ref := flagFile(t)
	crashRun(context.Background(), t, ref, v, "", 0, crashMinutes, nil)
	want := journalSteps(t, ref, v)
	if len(want) < 4 {
		t.Fatalf("the reference run wrote %v: the scenario needs a ladder and a restore", want)
	}
	return want
}

// TestRestartResumesIncident stops a replica after every minute and starts
// a new one on the same flag file and state file: the writes are exactly
// those of one replica that never stopped.
func TestRestartResumesIncident(t *testing.T) {
	v, err := flags.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := referenceSteps(t, v)

	path := flagFile(t)
	statePath := filepath.Join(filepath.Dir(path), "state.json")
	// The newest incident a restarted replica held: the incident is over
	// (resolved, nothing left to verify) by the end, so a replica started
	// then rightly resumes nothing.
	var inc *Incident
	for m := range crashMinutes {
		c := crashRun(ctx, t, path, v, statePath, m, m+1, nil)
		if a := c.State("shop").Active; a != nil {
			inc = a
		}
	}
	if got := journalSteps(t, path, v); !slices.Equal(got, want) {
		t.Fatalf("restarted every minute, the writes were %v; without restarts %v", got, want)
	}
	if inc == nil {
		t.Fatal("no restarted replica resumed the incident")
	}
	var steps []string
	for _, a := range inc.Actions {
		if a.Mutation != nil {
			steps = append(steps, StepOf(a.IdempotencyKey))
		}
	}
	if !slices.Equal(steps, want) {
		t.Errorf("the last replica's incident records %v, want %v", steps, want)
	}
	t.Logf("%d restarts; writes %v", crashMinutes, want)
}

// TestRestartFromJournalOnly restarts without the state file: the journal
// still keeps every write from being repeated or lost, and the incident
// goes on; only its clocks (hold time, verification) start again, so a
// restore may come later than without restarts.
func TestRestartFromJournalOnly(t *testing.T) {
	v, err := flags.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := referenceSteps(t, v)
	path := flagFile(t)
	for m := 0; m < crashMinutes; m += 3 {
		crashRun(ctx, t, path, v, "", m, min(m+3, crashMinutes), nil)
	}
	got := journalSteps(t, path, v)
	if n := len(got) - len(slices.Compact(slices.Clone(got))); n > 0 {
		t.Errorf("steps repeated: %v", got)
	}
	// Every mitigation of the reference is made; the restore path may
	// come later or not within the scenario.
	for _, s := range want {
		if r := StepOf(s); !slices.Contains(got, s) && (strings.Contains(r, "/tune/") || strings.Contains(r, "/shrink/") || strings.Contains(r, "/flip/")) {
			t.Errorf("mitigation %s of the reference run not made after restarts: %v", s, got)
		}
	}
	t.Logf("restarted every 3 minutes without a state file: writes %v (without restarts %v)", got, want)
}

// The kill -9 loop: the test binary runs itself as a replica process
// (crashWorkerEnv names its directory), which steps minute by minute and
// records the next minute in a file after each step; the parent kills it
// at random moments, wherever it is (deciding, writing the journal,
// renaming the flag file, between minutes), and starts it again.
const crashWorkerEnv = "TAILGUARD_CRASH_WORKER_DIR"

func TestCrashWorker(t *testing.T) {
	dir := os.Getenv(crashWorkerEnv)
	if dir == "" {
		t.Skip("run by TestKillNineLoop")
	}
	v, err := flags.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	minuteFile := filepath.Join(dir, "minute")
	from := 0
	if b, err := os.ReadFile(minuteFile); err == nil {
		from, _ = strconv.Atoi(string(b))
	}
	crashRun(context.Background(), t, filepath.Join(dir, "flags.json"), v, filepath.Join(dir, "state.json"), from, crashMinutes, func(m int) {
		tmp := minuteFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(m+1)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, minuteFile); err != nil {
			t.Fatal(err)
		}
	})
}

func TestKillNineLoop(t *testing.T) {
	if os.Getenv(crashWorkerEnv) != "" {
		t.Skip("inside a worker")
	}
	if testing.Short() {
		t.Skip("kill -9 loop: not in -short")
	}
	v, err := flags.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	want := referenceSteps(t, v)

	dir := t.TempDir()
	data, err := os.ReadFile(flagFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "flags.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	worker := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWorker$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashWorkerEnv+"="+dir)
		return cmd
	}
	// Each worker is killed once it reaches a minute drawn at random
	// ahead of where the last one died, a few hundred microseconds to a few
	// milliseconds after the minute file moved: the kill lands while it
	// decides, journals, renames the flag file or saves its state. Seeded
	// so that a failure can be replayed.
	rng := rand.New(rand.NewPCG(20261204, 15))
	const kills = 80
	killed, finished := 0, 0
	at := map[string]int{}
	minuteFile := filepath.Join(dir, "minute")
	minute := func() int {
		b, _ := os.ReadFile(minuteFile)
		n, _ := strconv.Atoi(string(b))
		return n
	}
	for killed < kills {
		target := minute() + rng.IntN(2)
		cmd := worker()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		exited := false
		for deadline := time.Now().Add(30 * time.Second); !exited && minute() < target; {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("worker failed: %v", err)
				}
				exited = true
			case <-time.After(100 * time.Microsecond):
			}
			if time.Now().After(deadline) {
				t.Fatal("the worker made no progress in 30s")
			}
		}
		if !exited {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("worker failed: %v", err)
				}
				exited = true
			case <-time.After(time.Duration(rng.IntN(3000)) * time.Microsecond):
			}
		}
		if exited {
			// It finished the scenario before the kill: start over.
			finished++
			if finished > 3 {
				t.Fatalf("the worker finished %d times before %d kills", finished, kills)
			}
			_ = os.WriteFile(minuteFile, []byte("0"), 0o600)
			continue
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		killed++
		at[killPoint(t, filepath.Join(dir, "flags.json"), v)]++
		if minute() >= crashMinutes-1 {
			break
		}
	}
	// Let the last worker finish the scenario.
	if out, err := worker().CombinedOutput(); err != nil {
		t.Fatalf("final worker: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "minute"))
	if string(b) != strconv.Itoa(crashMinutes) {
		t.Fatalf("the scenario ended at minute %s, want %d", b, crashMinutes)
	}
	got := journalSteps(t, filepath.Join(dir, "flags.json"), v)
	repeated := len(got) - len(slices.Compact(slices.Clone(got)))
	lost := 0
	for _, s := range want {
		if !slices.Contains(got, s) {
			lost++
		}
	}
	t.Logf("kill -9 loop: %d kills (%d runs finished the scenario before their kill); writes %v (without kills %v); repeated %d, lost %d",
		killed, finished, got, want, repeated, lost)
	t.Logf("where the kills landed: %v", at)
	if killed < 50 {
		t.Errorf("only %d kills before the scenario ended, want at least 50", killed)
	}
	fmt.Printf("kill -9 loop: %d kills, actions repeated: %d, lost: %d\n", killed, repeated, lost)
	if !slices.Equal(got, want) {
		t.Errorf("with %d kills the writes were %v; without kills %v", killed, got, want)
	}
	// The journal's records decode: what a restarted replica reads back.
	st, _ := flags.NewStore(flags.StoreConfig{Path: filepath.Join(dir, "flags.json"), Validator: v})
	hist, _ := st.History(context.Background(), flags.HistoryFilter{Actor: flags.ActorController})
	for _, e := range hist {
		var rec Record
		if err := json.Unmarshal(e.Record, &rec); err != nil || rec.Action.IdempotencyKey != e.IdempotencyKey {
			t.Errorf("journal entry %d: record %s (%v)", e.Seq, e.Record, err)
		}
	}
}

// killPoint says where a killed worker stood: in a write (journaled, the
// flag file not yet renamed) or after how many writes of the ladder.
func killPoint(t *testing.T, path string, v *flags.Validator) string {
	t.Helper()
	st, err := flags.NewStore(flags.StoreConfig{Path: path, Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	hist, err := st.History(context.Background(), flags.HistoryFilter{IncludeAborted: true})
	if err != nil {
		t.Fatal(err)
	}
	done := 0
	for _, e := range hist {
		if e.Actor == flags.ActorController && !e.Aborted {
			done++
		}
	}
	if n := len(hist); n > 0 && hist[n-1].Aborted {
		return fmt.Sprintf("in write %d (journaled, file not renamed)", done+1)
	}
	return fmt.Sprintf("after %d writes", done)
}
