package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// MutationKind says how a FlagChange changes a flag.
type MutationKind string

// The mutations.
const (
	// MutationSetConstants replaces the constants of one strategy in the
	// constants object flag.
	MutationSetConstants MutationKind = "set-constants"
	// MutationSetRollout sets the fractional rollout of the strategy flag
	// (and, when Variant is set, its default variant).
	MutationSetRollout MutationKind = "set-rollout"
	// MutationSetDefaultVariant sets the strategy flag's default variant
	// and removes its fractional rollout: every caller gets Variant.
	MutationSetDefaultVariant MutationKind = "set-default-variant"
)

// Mutation is one change to one flag.
type Mutation struct {
	Kind MutationKind `json:"kind"`
	// FlagKey is the flag changed.
	FlagKey string `json:"flagKey"`
	// Strategy and Constants: the complete new constants of Strategy
	// (set-constants).
	Strategy  string     `json:"strategy,omitempty"`
	Constants *Constants `json:"constants,omitempty"`
	// Rollout is the new fractional rollout (set-rollout).
	Rollout []VariantWeight `json:"rollout,omitempty"`
	// Variant is the new default variant (set-default-variant, and
	// optionally set-rollout).
	Variant string `json:"variant,omitempty"`
}

// String describes m, for example
// "backoff-strategy: rollout decorrelated=50% exponential=50%".
func (m Mutation) String() string {
	switch m.Kind {
	case MutationSetConstants:
		if m.Constants == nil {
			return fmt.Sprintf("%s: constants of %s unset", m.FlagKey, m.Strategy)
		}
		return fmt.Sprintf("%s: %s %s", m.FlagKey, m.Strategy, m.Constants)
	case MutationSetRollout:
		parts := make([]string, len(m.Rollout))
		for i, vw := range m.Rollout {
			parts[i] = fmt.Sprintf("%s=%d%%", vw.Variant, vw.Weight)
		}
		s := fmt.Sprintf("%s: rollout %s", m.FlagKey, strings.Join(parts, " "))
		if m.Variant != "" {
			s += " default " + m.Variant
		}
		return s
	case MutationSetDefaultVariant:
		return fmt.Sprintf("%s: default %s, no rollout", m.FlagKey, m.Variant)
	}
	return fmt.Sprintf("%s: %s", m.FlagKey, m.Kind)
}

// Apply returns f with m applied. Mutations of other flags than the given
// keys are errors.
func (m Mutation) Apply(f FlagState, strategyKey, constantsKey string) (FlagState, error) {
	g := f.Clone()
	switch m.Kind {
	case MutationSetConstants:
		if m.FlagKey != constantsKey {
			return f, fmt.Errorf("set-constants: flag %q is not the constants flag %q", m.FlagKey, constantsKey)
		}
		if g.Constants == nil {
			g.Constants = map[string]Constants{}
		}
		if m.Constants == nil {
			delete(g.Constants, m.Strategy)
		} else {
			g.Constants[m.Strategy] = *m.Constants
		}
	case MutationSetRollout:
		if m.FlagKey != strategyKey {
			return f, fmt.Errorf("set-rollout: flag %q is not the strategy flag %q", m.FlagKey, strategyKey)
		}
		g.Rollout = slices.Clone(m.Rollout)
		if m.Variant != "" {
			g.DefaultVariant = m.Variant
		}
	case MutationSetDefaultVariant:
		if m.FlagKey != strategyKey {
			return f, fmt.Errorf("set-default-variant: flag %q is not the strategy flag %q", m.FlagKey, strategyKey)
		}
		g.DefaultVariant = m.Variant
		g.Rollout = nil
	default:
		return f, fmt.Errorf("unknown mutation %q", m.Kind)
	}
	return g, nil
}

// FlagChange is one write the controller asks for.
type FlagChange struct {
	Service    string `json:"service"`
	IncidentID string `json:"incidentId"`
	// IdempotencyKey is the step (incident id, rung, the action's ordinal
	// on the rung) and a digest of the change, for example
	// "inc-42/shrink/2#1c9e4f07" (StepOf). A writer applies a key at most
	// once: replicas deciding the same change produce one write.
	IdempotencyKey string `json:"idempotencyKey"`
	Rung           Rung   `json:"rung"`
	Reason         string `json:"reason"`
	// Actor identifies the writer, for example "tailguard/shop-7f9c".
	Actor    string   `json:"actor"`
	Mutation Mutation `json:"mutation"`
	// Undo is the mutation that restores the state the decision saw.
	Undo Mutation `json:"undo"`
	// Revision is the flag file revision the decision saw (0: unknown). A
	// writer must not apply the change over a later revision: it returns
	// an error wrapping ErrConflict and the next cycle decides again.
	Revision int64 `json:"revision,omitempty"`
	// Record is the controller's account of the change (a Record), which
	// a writer journals with it so that the journal alone rebuilds the
	// incident (JournalReader).
	Record *Record `json:"record,omitempty"`
}

// Record is what the controller journals with each flag change: the
// action as decided and the incident it belongs to.
type Record struct {
	Incident string    `json:"incident"`
	Cause    Cause     `json:"cause"`
	OpenedAt time.Time `json:"openedAt"`
	Action   Action    `json:"action"`
}

// JournaledAction is a flag change the journal holds for a service: the
// record the controller wrote with it and when the write happened.
type JournaledAction struct {
	Record
	// At is the time of the write; Actor the replica that made it.
	At    time.Time `json:"at"`
	Actor string    `json:"actor,omitempty"`
}

// JournalReader is implemented by writers whose journal outlives the
// process: Journaled returns the service's journaled controller actions,
// oldest first. Before every decision the controller hands them to Decide,
// which adopts those its state lacks: a restarted replica, or one that
// lost a race to another, resumes the incident instead of repeating an
// action.
type JournalReader interface {
	Journaled(ctx context.Context, service string) ([]JournaledAction, error)
}

// FlagWriter applies flag changes. Implementations write with
// compare-and-swap and journal each change with its incident, reason and
// before/after. Apply returns applied=false without error when a change with
// the same idempotency key was already applied (by this or another
// replica).
type FlagWriter interface {
	Apply(ctx context.Context, ch FlagChange) (applied bool, err error)
}

// ErrConflict is returned (wrapped) by writers when the flag no longer is
// in the state the change was decided on and the change was not applied.
var ErrConflict = errors.New("flag changed concurrently")
