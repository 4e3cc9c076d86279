package flags

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// history builds a journal: two controller changes for inc-1 on
// backoff-strategy, an operator change to new-checkout, and a controller
// change for inc-2 on new-checkout. It returns the store and the entries.
func rollbackFixture(t *testing.T, operatorTouchesStrategy bool) (*Store, []Entry) {
	t.Helper()
	s := newTestStore(t, baseFile)
	ctx := context.Background()
	steps := []struct {
		mutate func(*Document) error
		meta   ChangeMeta
	}{
		{Rollout("backoff-strategy", "decorrelated", "", 25), controller("inc-1", "shrink exposure")},
		{Rollout("backoff-strategy", "decorrelated", "", 10), controller("inc-1", "shrink further")},
		{SetVariant("new-checkout", "on", false), operator("launch")},
		{SetState("new-checkout", StateDisabled), controller("inc-2", "errors")},
	}
	if operatorTouchesStrategy {
		steps[2] = struct {
			mutate func(*Document) error
			meta   ChangeMeta
		}{SetVariant("backoff-strategy", "full-jitter", false), operator("manual override")}
	}
	var entries []Entry
	for _, st := range steps {
		e, err := s.Update(ctx, AnyRevision, st.mutate, st.meta)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	return s, entries
}

func rev(n int64) *int64 { return &n }

func strategy(t *testing.T, s *Store) string {
	t.Helper()
	f := mustLoad(t, s).Doc.Flags["backoff-strategy"]
	dv, _ := f.Default()
	return dv + " " + f.TargetingSummary()
}

func TestRollbackIncident(t *testing.T) {
	s, _ := rollbackFixture(t, false)
	ctx := context.Background()
	meta := ChangeMeta{Actor: "operator:carol", Reason: "incident closed"}
	res, err := s.Rollback(ctx, RollbackRequest{Incident: "inc-1", Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	if got := strategy(t, s); got != "exponential -" {
		t.Errorf("backoff-strategy after rollback: %s", got)
	}
	if f := mustLoad(t, s).Doc.Flags["new-checkout"]; f.State != StateDisabled || *f.DefaultVariant != "on" {
		t.Errorf("new-checkout was not part of inc-1 but changed: %+v", f)
	}
	e := res.Entry
	if e.Action != ActionRollback || e.Incident != "inc-1" || !slices.Equal(e.RevertOf, []int64{1, 2}) || e.RevisionAfter != 5 || e.Actor != "operator:carol" {
		t.Errorf("rollback entry %+v", e)
	}
	if len(res.Undone) != 2 || res.Undone[0].Seq != 2 || res.Undone[1].Seq != 1 {
		t.Errorf("undone newest first: %+v", res.Undone)
	}
	// Already undone: nothing left.
	if _, err := s.Rollback(ctx, RollbackRequest{Incident: "inc-1", Meta: meta}); !errors.Is(err, ErrNotFound) {
		t.Errorf("second rollback: %v", err)
	}
}

func TestRollbackRefusesToOverwriteOperator(t *testing.T) {
	s, _ := rollbackFixture(t, true)
	ctx := context.Background()
	meta := ChangeMeta{Actor: "operator:carol", Reason: "undo inc-1"}
	before, _ := os.ReadFile(s.Path())
	_, err := s.Rollback(ctx, RollbackRequest{Incident: "inc-1", Meta: meta})
	var rc *RollbackConflictError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &rc) {
		t.Fatalf("rollback over an operator change: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `flag "backoff-strategy" changed by operator:alice in journal entry 3`) || !strings.Contains(msg, "--force") {
		t.Errorf("message %q", msg)
	}
	after, _ := os.ReadFile(s.Path())
	if string(before) != string(after) {
		t.Error("refused rollback changed the file")
	}
	if _, err := s.Rollback(ctx, RollbackRequest{Incident: "inc-1", Force: true, Meta: meta}); err != nil {
		t.Fatal(err)
	}
	if got := strategy(t, s); got != "exponential -" {
		t.Errorf("forced rollback: %s", got)
	}
}

func TestRollbackToRevision(t *testing.T) {
	s, _ := rollbackFixture(t, false)
	ctx := context.Background()
	meta := ChangeMeta{Actor: "operator:carol", Reason: "back to 1"}
	res, err := s.Rollback(ctx, RollbackRequest{ToRevision: rev(1), Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Entry.RevertOf, []int64{2, 3, 4}) {
		t.Errorf("RevertOf %v", res.Entry.RevertOf)
	}
	if got := strategy(t, s); got != "exponential fractional decorrelated=25% exponential=75%" {
		t.Errorf("backoff-strategy at revision 1: %s", got)
	}
	f := mustLoad(t, s).Doc.Flags["new-checkout"]
	if f.State != StateEnabled || *f.DefaultVariant != "off" {
		t.Errorf("new-checkout at revision 1: %+v", f)
	}
	// The rollback itself can be rolled back: back to revision 5.
	if _, err := s.Rollback(ctx, RollbackRequest{ToRevision: rev(4), Meta: meta}); err != nil {
		t.Fatal(err)
	}
	if got := strategy(t, s); got != "exponential fractional decorrelated=10% exponential=90%" {
		t.Errorf("backoff-strategy back at revision 4: %s", got)
	}
	for _, bad := range []int64{9, 6} {
		if _, err := s.Rollback(ctx, RollbackRequest{ToRevision: rev(bad), Meta: meta}); err == nil {
			t.Errorf("rollback to revision %d accepted", bad)
		}
	}
}

func TestRollbackSince(t *testing.T) {
	s, entries := rollbackFixture(t, false)
	ctx := context.Background()
	res, err := s.Rollback(ctx, RollbackRequest{Since: entries[2].Time, Meta: ChangeMeta{Actor: "operator:carol", Reason: "since launch"}})
	if err != nil {
		t.Fatal(err)
	}
	// Only the controller's inc-2 change is after that time; the operator's
	// launch stays.
	if !slices.Equal(res.Entry.RevertOf, []int64{4}) {
		t.Errorf("RevertOf %v", res.Entry.RevertOf)
	}
	if f := mustLoad(t, s).Doc.Flags["new-checkout"]; f.State != StateEnabled || *f.DefaultVariant != "on" {
		t.Errorf("new-checkout %+v", f)
	}
	if _, err := s.Rollback(ctx, RollbackRequest{Since: time.Now().Add(time.Hour * 24 * 365 * 10), Meta: ChangeMeta{Actor: "operator:carol", Reason: "x"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("nothing since the future: %v", err)
	}
}

func TestRollbackDetectsEditsOutsideTheJournal(t *testing.T) {
	s, _ := rollbackFixture(t, false)
	// Someone edits the file by hand and keeps the revision.
	doc := mustLoad(t, s).Doc
	if err := Rollout("backoff-strategy", "decorrelated", "", 15)(doc); err != nil {
		t.Fatal(err)
	}
	edited, err := Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.Path(), edited, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err = s.Rollback(context.Background(), RollbackRequest{Incident: "inc-1", Meta: ChangeMeta{Actor: "operator:carol", Reason: "x"}})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "no longer has the value journal entry 2 wrote") {
		t.Errorf("rollback over a hand edit: %v", err)
	}
}

// TestRollbackOfRollback undoes a rollback (re-applying the controller's
// changes) and then rolls the incident back again.
func TestRollbackOfRollback(t *testing.T) {
	s, _ := rollbackFixture(t, false)
	ctx := context.Background()
	meta := ChangeMeta{Actor: "operator:carol", Reason: "r"}
	first, err := s.Rollback(ctx, RollbackRequest{Incident: "inc-1", Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rollback(ctx, RollbackRequest{ToRevision: rev(first.Entry.RevisionBefore), Meta: meta}); err != nil {
		t.Fatal(err)
	}
	if got := strategy(t, s); got != "exponential fractional decorrelated=10% exponential=90%" {
		t.Fatalf("after undoing the rollback: %s", got)
	}
	res, err := s.Rollback(ctx, RollbackRequest{Incident: "inc-1", Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Entry.RevertOf, []int64{1, 2}) || strategy(t, s) != "exponential -" {
		t.Errorf("second incident rollback: %v, %s", res.Entry.RevertOf, strategy(t, s))
	}
}

func TestRollbackDryRun(t *testing.T) {
	s, _ := rollbackFixture(t, false)
	before, _ := os.ReadFile(s.Path())
	res, err := s.Rollback(context.Background(), RollbackRequest{Incident: "inc-1", DryRun: true, Meta: ChangeMeta{Actor: "operator:carol", Reason: "plan"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Entry.Seq != 0 || len(res.Undone) != 2 || len(res.Entry.Changes) != 1 {
		t.Errorf("dry run %+v", res)
	}
	after, _ := os.ReadFile(s.Path())
	if string(before) != string(after) {
		t.Error("dry run changed the file")
	}
	if h, _ := s.History(context.Background(), HistoryFilter{}); len(h) != 4 {
		t.Errorf("dry run journaled: %d entries", len(h))
	}
}

func TestRollbackRequestValidation(t *testing.T) {
	s := newTestStore(t, baseFile)
	meta := ChangeMeta{Actor: "operator:carol", Reason: "x"}
	for _, req := range []RollbackRequest{
		{Meta: meta},
		{Incident: "a", ToRevision: rev(1), Meta: meta},
		{ToRevision: rev(-1), Meta: meta},
	} {
		if _, err := s.Rollback(context.Background(), req); !errors.Is(err, ErrInvalid) {
			t.Errorf("request %+v: %v", req, err)
		}
	}
}

func TestHistoryFilter(t *testing.T) {
	s, entries := rollbackFixture(t, false)
	ctx := context.Background()
	tests := []struct {
		name   string
		filter HistoryFilter
		want   []int64
	}{
		{"all", HistoryFilter{}, []int64{1, 2, 3, 4}},
		{"by flag", HistoryFilter{Flag: "new-checkout"}, []int64{3, 4}},
		{"by incident", HistoryFilter{Incident: "inc-1"}, []int64{1, 2}},
		{"by actor", HistoryFilter{Actor: "operator:alice"}, []int64{3}},
		{"since", HistoryFilter{Since: entries[1].Time}, []int64{2, 3, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.History(ctx, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []int64
			for _, e := range got {
				seqs = append(seqs, e.Seq)
			}
			if !slices.Equal(seqs, tt.want) {
				t.Errorf("seqs %v, want %v", seqs, tt.want)
			}
		})
	}
}
