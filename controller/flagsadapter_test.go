package controller

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tailguard/tailguard/flags"
)

// upgradedFile is the flag file right after the upgrade, in flagd format.
const upgradedFile = `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "metadata": {"flagSetId": "shop"},
  "flags": {
    "backoff-strategy": {
      "state": "ENABLED",
      "defaultVariant": "decorrelated",
      "variants": {"exponential": "exponential", "decorrelated": "decorrelated"}
    },
    "backoff-constants": {
      "state": "ENABLED",
      "defaultVariant": "default",
      "variants": {
        "default": {
          "decorrelated": {"base": "100ms", "cap": "2s", "maxAttempts": 6},
          "exponential": {"base": "50ms", "cap": "500ms", "maxAttempts": 3}
        }
      }
    },
    "new-checkout": {"state": "ENABLED", "defaultVariant": "off", "variants": {"on": true, "off": false}}
  }
}
`

func flagFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flags.json")
	if err := os.WriteFile(path, []byte(upgradedFile), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func newFlagsWriter(t *testing.T, path string, v *flags.Validator) (*FlagsWriter, *flags.Store) {
	t.Helper()
	store, err := flags.NewStore(flags.StoreConfig{Path: path, Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewFlagsWriter(store, shop(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	return w, store
}

func TestFlagsWriterRoundTrip(t *testing.T) {
	v, err := flags.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	w, store := newFlagsWriter(t, flagFile(t), v)
	ctx := context.Background()
	fs, err := w.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := upgraded()
	if fs.Revision != 0 || fs.DefaultVariant != want.DefaultVariant || len(fs.Rollout) != 0 || !reflect.DeepEqual(fs.Constants, want.Constants) {
		t.Fatalf("read %+v, want %+v", fs, want)
	}
	k := Constants{Base: ms(50), Cap: 2 * time.Second, MaxAttempts: 8}
	steps := []struct {
		m     Mutation
		check func(FlagState) bool
	}{
		{Mutation{Kind: MutationSetConstants, FlagKey: "backoff-constants", Strategy: "decorrelated", Constants: &k},
			func(f FlagState) bool {
				return f.Constants["decorrelated"] == k && f.Constants["exponential"] == legacyConstants
			}},
		{Mutation{Kind: MutationSetRollout, FlagKey: "backoff-strategy", Rollout: []VariantWeight{{"decorrelated", 50}, {"exponential", 50}}},
			func(f FlagState) bool { return f.Percent("decorrelated") == 50 && f.DefaultVariant == "decorrelated" }},
		{Mutation{Kind: MutationSetRollout, FlagKey: "backoff-strategy", Rollout: []VariantWeight{{"decorrelated", 0}, {"exponential", 100}}},
			func(f FlagState) bool { return f.Percent("decorrelated") == 0 }},
		{Mutation{Kind: MutationSetDefaultVariant, FlagKey: "backoff-strategy", Variant: "exponential"},
			func(f FlagState) bool { return f.DefaultVariant == "exponential" && len(f.Rollout) == 0 }},
		{Mutation{Kind: MutationSetRollout, FlagKey: "backoff-strategy", Rollout: []VariantWeight{{"decorrelated", 25}, {"exponential", 75}}, Variant: "decorrelated"},
			func(f FlagState) bool { return f.Percent("decorrelated") == 25 && f.DefaultVariant == "decorrelated" }},
	}
	for i, s := range steps {
		fs, err := w.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		applied, err := w.Apply(ctx, FlagChange{IncidentID: "inc-1", IdempotencyKey: "inc-1/step/" + string(rune('a'+i)), Rung: RungTune,
			Reason: "test", Actor: "tailguard/a", Mutation: s.m, Revision: fs.Revision})
		if err != nil || !applied {
			t.Fatalf("step %d (%s): applied=%v err=%v", i, s.m, applied, err)
		}
		got, err := w.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !s.check(got) || got.Revision != fs.Revision+1 {
			t.Errorf("step %d (%s): state %+v", i, s.m, got)
		}
		// The in-memory application agrees with the file.
		mem, _ := s.m.Apply(fs, "backoff-strategy", "backoff-constants")
		if mem.Percent("decorrelated") != got.Percent("decorrelated") || mem.DefaultVariant != got.DefaultVariant ||
			!reflect.DeepEqual(mem.Constants, got.Constants) {
			t.Errorf("step %d: memory %+v, file %+v", i, mem, got)
		}
	}
	// A stale revision is a conflict; a used key is not applied again.
	_, err = w.Apply(ctx, FlagChange{IncidentID: "inc-1", IdempotencyKey: "inc-1/stale", Rung: RungShrink, Reason: "test",
		Mutation: Mutation{Kind: MutationSetDefaultVariant, FlagKey: "backoff-strategy", Variant: "exponential"}, Revision: 1})
	if !errors.Is(err, ErrConflict) || !errors.Is(err, flags.ErrConflict) {
		t.Errorf("stale write: %v", err)
	}
	applied, err := w.Apply(ctx, FlagChange{IncidentID: "inc-1", IdempotencyKey: "inc-1/step/a", Rung: RungTune, Reason: "test",
		Mutation: Mutation{Kind: MutationSetDefaultVariant, FlagKey: "backoff-strategy", Variant: "exponential"}})
	if applied || err != nil {
		t.Errorf("duplicate key: applied=%v err=%v", applied, err)
	}
	_, err = w.Apply(ctx, FlagChange{IncidentID: "inc-1", IdempotencyKey: "inc-1/bad", Rung: RungShrink, Reason: "test",
		Mutation: Mutation{Kind: MutationSetRollout, FlagKey: "backoff-strategy", Rollout: []VariantWeight{{"fibonacci", 100}}}})
	if err == nil {
		t.Error("unknown variant accepted")
	}
	hist, err := store.History(ctx, flags.HistoryFilter{Incident: "inc-1"})
	if err != nil || len(hist) != len(steps) {
		t.Fatalf("journal: %d entries, %v", len(hist), err)
	}
	if e := hist[0]; e.Actor != flags.ActorController || e.Action != "tune" || e.Reason != "test [tailguard/a]" || e.IdempotencyKey != "inc-1/step/a" {
		t.Errorf("journal entry %+v", e)
	}
}

// TestReplicasOnOneFile runs three controllers, each with its own store on
// the same flag file, concurrently, cycle after cycle: every rung is
// written exactly once, and rolling back the incident restores the file.
func TestReplicasOnOneFile(t *testing.T) {
	v, err := flags.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	path := flagFile(t)
	pol := loadPolicy(t, nil)
	type replica struct {
		w   *FlagsWriter
		ctl *Controller
	}
	var rs []replica
	for _, name := range []string{"a", "b", "c"} {
		w, _ := newFlagsWriter(t, path, v)
		rs = append(rs, replica{w: w, ctl: newController(t, pol, w, "tailguard/shop-"+name, nil)})
	}
	ctx := context.Background()
	now := t0
	for range 45 {
		var wg sync.WaitGroup
		errs := make([]error, len(rs))
		for i, r := range rs {
			wg.Go(func() {
				fs, err := r.w.Read(ctx)
				if err != nil {
					errs[i] = err
					return
				}
				_, errs[i] = r.ctl.Step(ctx, observe(0.51, fs), now)
			})
		}
		wg.Wait()
		for _, err := range errs {
			// A replica that read before another's write loses the
			// compare-and-swap and decides again next cycle.
			if err != nil && !errors.Is(err, ErrConflict) {
				t.Fatal(err)
			}
		}
		now = now.Add(time.Minute)
	}
	_, store := newFlagsWriter(t, path, v)
	hist, err := store.History(ctx, flags.HistoryFilter{Incident: "inc-1"})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range hist {
		keys = append(keys, StepOf(e.IdempotencyKey))
	}
	want := []string{"inc-1/tune/1", "inc-1/undo/1", "inc-1/shrink/1", "inc-1/undo/2"}
	if !slices.Equal(keys, want) {
		t.Fatalf("journal keys %v, want %v", keys, want)
	}
	for _, r := range rs {
		var got []string
		for _, a := range r.ctl.State("shop").Active.Actions {
			if a.Mutation != nil {
				got = append(got, StepOf(a.IdempotencyKey))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("replica recorded %v", got)
		}
	}
	// The undos put the flags back as the upgrade left them: a rollback
	// of the incident has nothing left to do.
	if _, err := store.Rollback(ctx, flags.RollbackRequest{Incident: "inc-1", Meta: flags.ChangeMeta{Actor: "operator:alice", Reason: "undo inc-1"}}); !errors.Is(err, flags.ErrNoChange) {
		t.Fatalf("rollback after the undos: %v, want %v", err, flags.ErrNoChange)
	}
	fs, err := rs[0].w.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	orig := upgraded()
	if fs.DefaultVariant != orig.DefaultVariant || len(fs.Rollout) != 0 || !reflect.DeepEqual(fs.Constants, orig.Constants) {
		t.Errorf("after the undos %+v", fs)
	}
}
