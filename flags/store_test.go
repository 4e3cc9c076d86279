package flags

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const baseFile = `{
  "metadata": {"flagSetId": "shop"},
  "flags": {
    "backoff-strategy": {
      "state": "ENABLED",
      "defaultVariant": "exponential",
      "variants": {"exponential": "exponential", "decorrelated": "decorrelated", "full-jitter": "full-jitter"}
    },
    "new-checkout": {
      "state": "ENABLED",
      "defaultVariant": "off",
      "variants": {"on": true, "off": false}
    }
  }
}
`

// clock is a deterministic time source for journal entries.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Minute)
	return c.t
}

func newTestStore(t testing.TB, content string) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flags.json")
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s, err := NewStore(StoreConfig{Path: path, Validator: newValidator(t), Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func operator(reason string) ChangeMeta {
	return ChangeMeta{Actor: "operator:alice", Action: ActionSet, Reason: reason}
}

func controller(incident, reason string) ChangeMeta {
	return ChangeMeta{Actor: ActorController, Action: ActionRollout, Incident: incident, Reason: reason}
}

func mustLoad(t testing.TB, s *Store) *Snapshot {
	t.Helper()
	snap, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestUpdate(t *testing.T) {
	s := newTestStore(t, baseFile)
	ctx := context.Background()
	snap := mustLoad(t, s)
	if snap.Revision != 0 {
		t.Fatalf("hand-written file revision %d, want 0", snap.Revision)
	}
	e, err := s.Update(ctx, 0, SetVariant("backoff-strategy", "decorrelated", false), operator("new strategy"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 1 || e.RevisionBefore != 0 || e.RevisionAfter != 1 || e.Actor != "operator:alice" || len(e.Changes) != 1 ||
		e.Changes[0].Key != "backoff-strategy" || e.Flags[0] != "backoff-strategy" {
		t.Errorf("entry %+v", e)
	}
	var before, after map[string]any
	if err := json.Unmarshal(e.Changes[0].Before, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(e.Changes[0].After, &after); err != nil {
		t.Fatal(err)
	}
	if before["defaultVariant"] != "exponential" || after["defaultVariant"] != "decorrelated" {
		t.Errorf("before %v after %v", before, after)
	}

	snap = mustLoad(t, s)
	if snap.Revision != 1 || *snap.Doc.Flags["backoff-strategy"].DefaultVariant != "decorrelated" {
		t.Errorf("after update: revision %d, %+v", snap.Revision, snap.Doc.Flags["backoff-strategy"])
	}
	if snap.Doc.Metadata["flagSetId"] != "shop" {
		t.Errorf("flag-set metadata lost: %v", snap.Doc.Metadata)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("file mode %v, want 0640 kept", fi.Mode().Perm())
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(s.Path()), ".flags.json.tmp-*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	// Stale revision: conflict, nothing written.
	_, err = s.Update(ctx, 0, SetState("new-checkout", StateDisabled), operator("late"))
	var ce *ConflictError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &ce) || ce.Expected != 0 || ce.Actual != 1 {
		t.Errorf("stale update: %v", err)
	}
	// No change: ErrNoChange, nothing journaled.
	if _, err := s.Update(ctx, 1, SetVariant("backoff-strategy", "decorrelated", false), operator("again")); !errors.Is(err, ErrNoChange) {
		t.Errorf("no-op update: %v", err)
	}
	// Invalid result: rejected, file unchanged.
	_, err = s.Update(ctx, 1, func(d *Document) error {
		d.Flags["new-checkout"].Variants["maybe"] = json.RawMessage(`"maybe"`)
		return nil
	}, operator("break it"))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `flag "new-checkout": variants must all have one type`) {
		t.Errorf("invalid update: %v", err)
	}
	// Unknown flag and variant.
	if _, err := s.Update(ctx, 1, SetVariant("nope", "a", false), operator("x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown flag: %v", err)
	}
	if _, err := s.Update(ctx, 1, SetVariant("new-checkout", "maybe", false), operator("x")); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown variant: %v", err)
	}
	entries, err := s.file.journal.Entries()
	if err != nil || len(entries) != 1 {
		t.Errorf("journal has %d entries (%v), want only the one change", len(entries), err)
	}
}

func TestUpdateRequiresActorAndReason(t *testing.T) {
	s := newTestStore(t, baseFile)
	for _, meta := range []ChangeMeta{
		{Actor: "alice", Action: ActionSet, Reason: "r"},
		{Actor: "operator:", Action: ActionSet, Reason: "r"},
		{Actor: "operator:alice", Action: ActionSet},
		{Actor: ActorController, Reason: "r"},
	} {
		if _, err := s.Update(context.Background(), AnyRevision, SetState("new-checkout", StateDisabled), meta); !errors.Is(err, ErrInvalid) {
			t.Errorf("meta %+v accepted: %v", meta, err)
		}
	}
}

func TestIdempotencyKey(t *testing.T) {
	s := newTestStore(t, baseFile)
	ctx := context.Background()
	meta := controller("inc-1", "p99 regression")
	meta.IdempotencyKey = "inc-1/rung-2"
	first, err := s.Update(ctx, AnyRevision, Rollout("backoff-strategy", "decorrelated", "", 10), meta)
	if err != nil {
		t.Fatal(err)
	}
	// A second replica tries the same step.
	_, err = s.Update(ctx, AnyRevision, Rollout("backoff-strategy", "decorrelated", "", 20), meta)
	var de *DuplicateError
	if !errors.Is(err, ErrDuplicate) || !errors.As(err, &de) || de.Entry.Seq != first.Seq {
		t.Fatalf("duplicate: %v", err)
	}
	if got := mustLoad(t, s).Doc.Flags["backoff-strategy"].TargetingSummary(); got != "fractional decorrelated=10% exponential=90%" {
		t.Errorf("targeting %s, want the first change only", got)
	}
}

// TestConcurrentWritersOneWinnerPerRevision races writers that all read
// the same revision: exactly one wins, the others get a conflict.
func TestConcurrentWritersOneWinnerPerRevision(t *testing.T) {
	s := newTestStore(t, baseFile)
	ctx := context.Background()
	for round := range 5 {
		rev := mustLoad(t, s).Revision
		var wins, conflicts atomic.Int32
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Update(ctx, rev, func(d *Document) error {
					d.Metadata["writer"] = fmt.Sprintf("%d/%d", round, w)
					return nil
				}, operator("race"))
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, ErrConflict):
					conflicts.Add(1)
				default:
					t.Errorf("writer %d: %v", w, err)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 || conflicts.Load() != 7 {
			t.Fatalf("round %d: %d winners, %d conflicts", round, wins.Load(), conflicts.Load())
		}
	}
	checkJournal(t, s, 5)
}

// incrementCounter adds one to the "counter" flag-set metadata with
// compare-and-swap, retrying on conflict: a lost update would show up as a
// final count below the number of increments.
func incrementCounter(ctx context.Context, s *Store, who string) error {
	for {
		snap, err := s.Load(ctx)
		if err != nil {
			return err
		}
		_, err = s.Update(ctx, snap.Revision, func(d *Document) error {
			n, _ := d.Metadata["counter"].(int64)
			d.Metadata["counter"] = n + 1
			return nil
		}, ChangeMeta{Actor: "operator:" + who, Action: ActionUpdate, Reason: "increment"})
		if errors.Is(err, ErrConflict) {
			continue
		}
		return err
	}
}

func TestConcurrentWritersNoLostUpdate(t *testing.T) {
	s := newTestStore(t, baseFile)
	ctx := context.Background()
	const writers, each = 6, 15
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate Store values behave like separate processes: they
			// share nothing but the files.
			mine, err := NewStore(StoreConfig{Path: s.Path(), Validator: s.validator})
			if err != nil {
				t.Error(err)
				return
			}
			for range each {
				if err := incrementCounter(ctx, mine, "w"+strconv.Itoa(w)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	snap := mustLoad(t, s)
	if got := snap.Doc.Metadata["counter"]; got != int64(writers*each) {
		t.Errorf("counter %v, want %d", got, writers*each)
	}
	checkJournal(t, s, writers*each)
}

const helperEnv = "TAILGUARD_FLAGS_TEST_WRITER"

// TestWriterProcess is the body of the child processes started by
// TestConcurrentProcesses; on its own it does nothing.
func TestWriterProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process")
	}
	path, n, _ := strings.Cut(spec, "|")
	count, err := strconv.Atoi(n)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for range count {
		if err := incrementCounter(context.Background(), s, "pid"+strconv.Itoa(os.Getpid())); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	s := newTestStore(t, baseFile)
	const procs, each = 3, 15
	var cmds []*exec.Cmd
	for range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWriterProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+s.Path()+"|"+strconv.Itoa(each))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("child output:\n%s", out.String())
			}
		})
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("writer process: %v", err)
		}
	}
	if got := mustLoad(t, s).Doc.Metadata["counter"]; got != int64(procs*each) {
		t.Errorf("counter %v, want %d", got, procs*each)
	}
	checkJournal(t, s, procs*each)
}

// checkJournal verifies one journal entry per revision 1..n, in order.
func checkJournal(t *testing.T, s *Store, n int) {
	t.Helper()
	entries, err := s.History(context.Background(), HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Fatalf("journal has %d entries, want %d", len(entries), n)
	}
	for i, e := range entries {
		if e.Seq != int64(i+1) || e.RevisionBefore != int64(i) || e.RevisionAfter != int64(i+1) {
			t.Fatalf("entry %d: seq %d revisions %d->%d", i, e.Seq, e.RevisionBefore, e.RevisionAfter)
		}
	}
}

// TestCrashBeforeRename interrupts a write after the new file is written
// and journaled but before it replaces the old one.
func TestCrashBeforeRename(t *testing.T) {
	s := newTestStore(t, baseFile)
	ctx := context.Background()
	if _, err := s.Update(ctx, 0, SetState("new-checkout", StateDisabled), operator("first")); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	crash := errors.New("power cut")
	var tmpSeen string
	s.file.beforeRename = func(tmp string) error {
		tmpSeen = tmp
		if _, err := os.Stat(tmp); err != nil {
			t.Errorf("temporary file missing before rename: %v", err)
		}
		return crash
	}
	_, err = s.Update(ctx, 1, SetVariant("backoff-strategy", "full-jitter", false), operator("interrupted"))
	if !errors.Is(err, crash) {
		t.Fatalf("interrupted update: %v", err)
	}
	s.file.beforeRename = nil
	now, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if string(now) != string(good) {
		t.Errorf("flag file changed by an interrupted write:\n%s", now)
	}
	if _, err := os.Stat(tmpSeen); !os.IsNotExist(err) {
		t.Errorf("temporary file %s left behind: %v", tmpSeen, err)
	}
	// The journaled-but-never-applied entry is hidden from history; the
	// next writer records the abort (if the failing writer could not).
	hist, _ := s.History(ctx, HistoryFilter{})
	if len(hist) != 1 || hist[0].Reason != "first" {
		t.Errorf("history after crash: %+v", hist)
	}
	e, err := s.Update(ctx, 1, SetVariant("backoff-strategy", "full-jitter", false), operator("retry"))
	if err != nil {
		t.Fatal(err)
	}
	if e.RevisionAfter != 2 {
		t.Errorf("retry revision %d, want 2", e.RevisionAfter)
	}
	all, _ := s.History(ctx, HistoryFilter{IncludeAborted: true})
	var actions []string
	for _, e := range all {
		a := e.Action
		if e.Aborted {
			a += "(aborted)"
		}
		actions = append(actions, a)
	}
	if got := strings.Join(actions, ","); got != "set,set(aborted),abort,set" {
		t.Errorf("journal actions %s", got)
	}
}

// TestCrashedWriterRecovery simulates a writer killed between journaling
// and renaming (no chance to record the abort itself).
func TestCrashedWriterRecovery(t *testing.T) {
	s := newTestStore(t, baseFile)
	ctx := context.Background()
	ghost := Entry{Seq: 1, Time: time.Now(), Actor: ActorController, Action: ActionRollout, Reason: "ghost",
		Flags: []string{"backoff-strategy"}, RevisionBefore: 0, RevisionAfter: 1}
	if err := s.file.journal.append(&ghost, 0, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, 0, SetState("new-checkout", StateDisabled), operator("after the crash")); err != nil {
		t.Fatal(err)
	}
	all, err := s.History(ctx, HistoryFilter{IncludeAborted: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || !all[0].Aborted || all[1].Action != ActionAbort || all[1].Aborts != 1 || all[2].Seq != 3 || all[2].RevisionAfter != 1 {
		t.Errorf("journal after recovery: %+v", all)
	}
}

func TestJournalTornTail(t *testing.T) {
	s := newTestStore(t, baseFile)
	ctx := context.Background()
	if _, err := s.Update(ctx, 0, SetState("new-checkout", StateDisabled), operator("one")); err != nil {
		t.Fatal(err)
	}
	// A crash mid-append leaves half a line.
	f, err := os.OpenFile(s.file.journal.Path(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"seq":2,"time":"2026-03-01T12:05:00Z","actor":"contr`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r, err := s.file.journal.Read()
	if err != nil || !r.TornTail || len(r.Entries) != 1 {
		t.Fatalf("read torn journal: %d entries, torn %v, %v", len(r.Entries), r.TornTail, err)
	}
	if _, err := s.Update(ctx, 1, SetState("new-checkout", StateEnabled), operator("two")); err != nil {
		t.Fatal(err)
	}
	r, err = s.file.journal.Read()
	if err != nil || r.TornTail || len(r.Entries) != 2 || r.Entries[1].Reason != "two" {
		t.Fatalf("after the next append: %+v, torn %v, %v", r.Entries, r.TornTail, err)
	}
}

func TestJournalCorruptMiddleLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.jsonl")
	content := `{"seq":1,"actor":"controller","action":"set","flags":[],"revisionBefore":0,"revisionAfter":1}` + "\n" +
		"garbage\n" +
		`{"seq":2,"actor":"controller","action":"set","flags":[],"revisionBefore":1,"revisionAfter":2}` + "\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewJournal(path).Entries(); err == nil || !strings.Contains(err.Error(), "journal line 2") {
		t.Errorf("corrupt middle line: %v", err)
	}
}

func TestLoadInvalidFile(t *testing.T) {
	s := newTestStore(t, `{"flags": {"backoff-strategy": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "x"}}}`)
	_, err := s.Load(context.Background())
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `flag "backoff-strategy": defaultVariant "x" is not a variant`) {
		t.Errorf("Load: %v", err)
	}
	_, err = s.Update(context.Background(), AnyRevision, SetState("backoff-strategy", StateDisabled), operator("x"))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "current flag file is invalid") {
		t.Errorf("Update on an invalid file: %v", err)
	}
}

func TestLockHonoursContext(t *testing.T) {
	s := newTestStore(t, baseFile)
	held, err := acquireLock(context.Background(), s.file.lockPath, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer held.release()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Update(ctx, AnyRevision, SetState("new-checkout", StateDisabled), operator("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Update with the lock held and a cancelled context: %v", err)
	}
}

func TestLastGood(t *testing.T) {
	s := newTestStore(t, baseFile)
	ctx := context.Background()
	lg := NewLastGood(s)
	snap, err := lg.Load(ctx)
	if err != nil || snap.Doc.Flags["backoff-strategy"] == nil {
		t.Fatalf("first load: %v", err)
	}
	if err := os.WriteFile(s.Path(), []byte(`{"flags": {"backoff-strategy": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "b"}}}`), 0o640); err != nil {
		t.Fatal(err)
	}
	stale, err := lg.Load(ctx)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `flag "backoff-strategy": defaultVariant "b" is not a variant`) {
		t.Errorf("invalid file error: %v", err)
	}
	if stale != snap {
		t.Error("invalid file did not keep serving the last good snapshot")
	}
	if err := os.Remove(s.Path()); err != nil {
		t.Fatal(err)
	}
	if got, err := lg.Load(ctx); got != snap || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, %v", got, err)
	}
	if err := os.WriteFile(s.Path(), []byte(baseFile), 0o640); err != nil {
		t.Fatal(err)
	}
	fresh, err := lg.Load(ctx)
	if err != nil || fresh == nil || fresh == snap {
		t.Errorf("recovery: %v, %v", fresh, err)
	}
	again, err := lg.Load(ctx)
	if err != nil || again != fresh {
		t.Errorf("unchanged file was re-parsed or failed: %v", err)
	}

	never := NewLastGood(newTestStore(t, `{}`))
	if snap, err := never.Load(ctx); snap != nil || !errors.Is(err, ErrInvalid) {
		t.Errorf("never valid: %v, %v", snap, err)
	}
}
