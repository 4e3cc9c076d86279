package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/flags"
)

// FlagStore is the part of *flags.Store the FlagsWriter uses.
type FlagStore interface {
	Load(ctx context.Context) (*flags.Snapshot, error)
	Update(ctx context.Context, expected int64, mutate func(*flags.Document) error, meta flags.ChangeMeta) (flags.Entry, error)
	History(ctx context.Context, filter flags.HistoryFilter) ([]flags.Entry, error)
}

// FlagsWriter applies FlagChanges to a flagd flag file through a
// flags.Store, and reads the FlagState back from it.
//
// The strategy flag is a string flag whose variants are strategy names;
// its rollout is a top-level "fractional" targeting rule. The constants
// flag is an object flag; the object of its default variant is keyed by
// strategy name, each entry in the backoff-constants format:
//
//	"backoff-strategy": {"state": "ENABLED", "defaultVariant": "exponential",
//	  "variants": {"exponential": "exponential", "decorrelated": "decorrelated"},
//	  "targeting": {"fractional": [["decorrelated", 50], ["exponential", 50]]}},
//	"backoff-constants": {"state": "ENABLED", "defaultVariant": "default",
//	  "variants": {"default": {"decorrelated": {"base": "50ms", "cap": "2s", "maxAttempts": 8}}}}
//
// Every write is journaled by the store with actor "controller", the
// incident id, the reason and the idempotency key; the store refuses a key
// it has journaled before, which the writer reports as applied=false.
type FlagsWriter struct {
	store                     FlagStore
	strategyKey, constantsKey string
}

// NewFlagsWriter returns a writer for the service's flags in store.
func NewFlagsWriter(store FlagStore, svc *policy.Service) (*FlagsWriter, error) {
	if store == nil || svc == nil {
		return nil, errors.New("flags writer: store and service policy are required")
	}
	return &FlagsWriter{store: store, strategyKey: svc.Flags.Strategy.Key, constantsKey: svc.Flags.Constants.Key}, nil
}

// Apply implements FlagWriter. A change decided on an older revision of
// the file than the current one fails with an error wrapping ErrConflict
// and flags.ErrConflict, unless its key was already applied.
func (w *FlagsWriter) Apply(ctx context.Context, ch FlagChange) (bool, error) {
	if ch.IdempotencyKey == "" {
		return false, errors.New("apply change: empty idempotency key")
	}
	expected := flags.AnyRevision
	if ch.Revision != 0 {
		expected = ch.Revision
	}
	meta := flags.ChangeMeta{
		Actor:          flags.ActorController,
		Action:         string(ch.Rung),
		Incident:       ch.IncidentID,
		Reason:         ch.Reason,
		IdempotencyKey: ch.IdempotencyKey,
	}
	if ch.Actor != "" {
		meta.Reason += " [" + ch.Actor + "]"
	}
	if ch.Record != nil {
		rec, err := json.Marshal(ch.Record)
		if err != nil {
			return false, fmt.Errorf("apply %s: record: %w", ch.IdempotencyKey, err)
		}
		meta.Record = rec
	}
	_, err := w.store.Update(ctx, expected, func(d *flags.Document) error { return w.mutate(d, ch.Mutation) }, meta)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, flags.ErrDuplicate):
		return false, nil
	case errors.Is(err, flags.ErrNoChange):
		// The file already is in the target state.
		return false, nil
	case errors.Is(err, flags.ErrConflict):
		return false, fmt.Errorf("apply %s: %w: %w", ch.IdempotencyKey, ErrConflict, err)
	}
	return false, fmt.Errorf("apply %s: %w", ch.IdempotencyKey, err)
}

// Journaled implements JournalReader: the controller's changes of this
// writer's flags that reached the file, with the records written with
// them. Entries without a record (written before records were kept, or by
// hand) are skipped. The service argument is informational: a writer serves
// one service's flags.
func (w *FlagsWriter) Journaled(ctx context.Context, _ string) ([]JournaledAction, error) {
	es, err := w.store.History(ctx, flags.HistoryFilter{Actor: flags.ActorController})
	if err != nil {
		return nil, err
	}
	var out []JournaledAction
	for _, e := range es {
		if len(e.Record) == 0 || !(e.TouchesFlag(w.strategyKey) || e.TouchesFlag(w.constantsKey)) {
			continue
		}
		var rec Record
		if err := json.Unmarshal(e.Record, &rec); err != nil {
			return nil, fmt.Errorf("journal entry %d: record: %w", e.Seq, err)
		}
		// The decision's time, which the controller's clock (and its
		// cooldowns and verification windows) are on; the entry's time
		// when the record has none.
		at := rec.Action.At
		if at.IsZero() {
			at = e.Time
		}
		out = append(out, JournaledAction{Record: rec, At: at, Actor: rec.Action.Actor})
	}
	return out, nil
}

func (w *FlagsWriter) mutate(d *flags.Document, m Mutation) error {
	switch m.Kind {
	case MutationSetConstants:
		if m.FlagKey != w.constantsKey {
			return fmt.Errorf("set-constants: flag %q is not the constants flag %q", m.FlagKey, w.constantsKey)
		}
		f, err := d.Flag(m.FlagKey)
		if err != nil {
			return err
		}
		dv, ok := f.Default()
		if !ok {
			return fmt.Errorf("flag %q: no default variant holding the constants", m.FlagKey)
		}
		obj := map[string]json.RawMessage{}
		if raw := f.Variants[dv]; len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &obj); err != nil {
				return fmt.Errorf("flag %q variant %q: not an object: %w", m.FlagKey, dv, err)
			}
		}
		if m.Constants == nil {
			delete(obj, m.Strategy)
		} else {
			b, err := json.Marshal(*m.Constants)
			if err != nil {
				return err
			}
			obj[m.Strategy] = b
		}
		b, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		f.Variants[dv] = b
		return nil
	case MutationSetRollout:
		if m.FlagKey != w.strategyKey {
			return fmt.Errorf("set-rollout: flag %q is not the strategy flag %q", m.FlagKey, w.strategyKey)
		}
		f, err := d.Flag(m.FlagKey)
		if err != nil {
			return err
		}
		var buckets []flags.Bucket
		for _, vw := range m.Rollout {
			if _, ok := f.Variants[vw.Variant]; !ok {
				return fmt.Errorf("flag %q: %q is not a variant (have %q)", m.FlagKey, vw.Variant, f.VariantNames())
			}
			buckets = append(buckets, flags.Bucket{Variant: vw.Variant, Weight: int64(vw.Weight)})
		}
		if len(buckets) == 0 {
			f.Targeting = nil
		} else {
			rule, err := flags.FractionalRule(buckets...)
			if err != nil {
				return err
			}
			f.Targeting = rule
		}
		if m.Variant != "" {
			if err := f.SetDefault(m.Variant); err != nil {
				return fmt.Errorf("flag %q: %w", m.FlagKey, err)
			}
		}
		return nil
	case MutationSetDefaultVariant:
		if m.FlagKey != w.strategyKey {
			return fmt.Errorf("set-default-variant: flag %q is not the strategy flag %q", m.FlagKey, w.strategyKey)
		}
		return flags.SetVariant(m.FlagKey, m.Variant, false)(d)
	}
	return fmt.Errorf("unknown mutation %q", m.Kind)
}

// Read loads the flag file and returns the service's FlagState with the
// file's revision. A strategy flag whose targeting is not a plain
// fractional split of its variants is an error: the controller does not
// act on rules it does not understand.
func (w *FlagsWriter) Read(ctx context.Context) (FlagState, error) {
	snap, err := w.store.Load(ctx)
	if err != nil {
		return FlagState{}, err
	}
	return FlagStateOf(snap.Doc, w.strategyKey, w.constantsKey, snap.Revision)
}

// FlagStateOf extracts a FlagState from a flag document.
func FlagStateOf(d *flags.Document, strategyKey, constantsKey string, revision int64) (FlagState, error) {
	fs := FlagState{Revision: revision}
	sf, err := d.Flag(strategyKey)
	if err != nil {
		return fs, err
	}
	if sf.State == flags.StateDisabled {
		return fs, fmt.Errorf("flag %q is disabled: services fall back to their code defaults", strategyKey)
	}
	dv, ok := sf.Default()
	if !ok {
		return fs, fmt.Errorf("flag %q: no default variant", strategyKey)
	}
	fs.DefaultVariant = dv
	if sf.HasTargeting() {
		if fs.Rollout, err = fractional(sf.Targeting); err != nil {
			return fs, fmt.Errorf("flag %q targeting: %w", strategyKey, err)
		}
		for _, vw := range fs.Rollout {
			if _, ok := sf.Variants[vw.Variant]; !ok {
				return fs, fmt.Errorf("flag %q targeting: %q is not a variant", strategyKey, vw.Variant)
			}
		}
	}
	if constantsKey == "" {
		return fs, nil
	}
	cf, err := d.Flag(constantsKey)
	if err != nil {
		if errors.Is(err, flags.ErrNotFound) {
			return fs, nil
		}
		return fs, err
	}
	cdv, ok := cf.Default()
	if !ok || cf.State == flags.StateDisabled {
		return fs, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(cf.Variants[cdv], &obj); err != nil {
		return fs, fmt.Errorf("flag %q variant %q: not an object: %w", constantsKey, cdv, err)
	}
	fs.Constants = map[string]Constants{}
	flat := true
	for k, raw := range obj {
		if !strategyKnown(k) {
			continue
		}
		flat = false
		var c Constants
		if err := json.Unmarshal(raw, &c); err != nil {
			return fs, fmt.Errorf("flag %q: constants of %s: %w", constantsKey, k, err)
		}
		fs.Constants[k] = c
	}
	if flat && len(obj) > 0 {
		var c Constants
		if err := json.Unmarshal(cf.Variants[cdv], &c); err != nil {
			return fs, fmt.Errorf("flag %q: constants: %w", constantsKey, err)
		}
		fs.Constants[""] = c
	}
	return fs, nil
}

// fractional parses a top-level fractional rule with literal variants and
// weights, optionally preceded by a bucketing expression.
func fractional(rule json.RawMessage) ([]VariantWeight, error) {
	var top map[string][]json.RawMessage
	if err := json.Unmarshal(rule, &top); err != nil || len(top) != 1 || top["fractional"] == nil {
		return nil, fmt.Errorf("not a fractional split: %s", rule)
	}
	var out []VariantWeight
	for i, raw := range top["fractional"] {
		var bucket []json.RawMessage
		if err := json.Unmarshal(raw, &bucket); err != nil {
			if i == 0 {
				continue // the bucketing expression
			}
			return nil, fmt.Errorf("bucket %d: %s", i, raw)
		}
		if len(bucket) == 0 || len(bucket) > 2 {
			return nil, fmt.Errorf("bucket %d: want [variant, weight], got %s", i, raw)
		}
		var vw VariantWeight
		if err := json.Unmarshal(bucket[0], &vw.Variant); err != nil {
			return nil, fmt.Errorf("bucket %d: variant is not a string: %s", i, bucket[0])
		}
		vw.Weight = 1
		if len(bucket) == 2 {
			if err := json.Unmarshal(bucket[1], &vw.Weight); err != nil || vw.Weight < 0 {
				return nil, fmt.Errorf("bucket %d: weight is not a non-negative integer: %s", i, bucket[1])
			}
		}
		out = append(out, vw)
	}
	if len(out) == 0 || !slices.ContainsFunc(out, func(vw VariantWeight) bool { return vw.Weight > 0 }) {
		return nil, fmt.Errorf("fractional split without weight: %s", rule)
	}
	return out, nil
}
