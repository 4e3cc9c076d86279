package controller

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// MemoryFlags is an in-memory FlagWriter holding one service's strategy
// and constants flags. It applies each idempotency key at most once,
// checks the revision a change was decided on (compare-and-swap), counts
// revisions up by one per change, is safe for concurrent use, and is meant
// for tests, simulations and dry runs.
type MemoryFlags struct {
	strategyKey, constantsKey string

	mu      sync.Mutex
	state   FlagState
	applied map[string]bool
	changes []FlagChange
}

// NewMemoryFlags returns a store for the given flag keys starting at
// initial.
func NewMemoryFlags(strategyKey, constantsKey string, initial FlagState) *MemoryFlags {
	return &MemoryFlags{strategyKey: strategyKey, constantsKey: constantsKey, state: initial.Clone(), applied: map[string]bool{}}
}

// Apply implements FlagWriter.
func (m *MemoryFlags) Apply(ctx context.Context, ch FlagChange) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if ch.IdempotencyKey == "" {
		return false, fmt.Errorf("apply change: empty idempotency key")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.applied[ch.IdempotencyKey] {
		return false, nil
	}
	if ch.Revision != 0 && ch.Revision != m.state.Revision {
		return false, fmt.Errorf("apply %s: %w: decided on revision %d, flags at %d", ch.IdempotencyKey, ErrConflict, ch.Revision, m.state.Revision)
	}
	next, err := ch.Mutation.Apply(m.state, m.strategyKey, m.constantsKey)
	if err != nil {
		return false, fmt.Errorf("apply %s: %w", ch.IdempotencyKey, err)
	}
	next.Revision = m.state.Revision + 1
	m.state = next
	m.applied[ch.IdempotencyKey] = true
	m.changes = append(m.changes, ch)
	return true, nil
}

// Set replaces the flag state, as an operator or a deployment would,
// without journaling a change. The revision advances.
func (m *MemoryFlags) Set(f FlagState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rev := m.state.Revision + 1
	m.state = f.Clone()
	m.state.Revision = rev
}

// State returns a copy of the current flag state.
func (m *MemoryFlags) State() FlagState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Clone()
}

// Changes returns the changes applied, oldest first.
func (m *MemoryFlags) Changes() []FlagChange {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.changes)
}

// Journaled implements JournalReader from the changes applied with a
// record, at the time their records carry.
func (m *MemoryFlags) Journaled(ctx context.Context, service string) ([]JournaledAction, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []JournaledAction
	for _, ch := range m.changes {
		if ch.Record == nil || (service != "" && ch.Service != "" && ch.Service != service) {
			continue
		}
		out = append(out, JournaledAction{Record: *ch.Record, At: ch.Record.Action.At, Actor: ch.Record.Action.Actor})
	}
	return out, nil
}
