package flags

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// RollbackRequest selects journaled changes to undo. Exactly one of
// ToRevision, Incident and Since must be set.
type RollbackRequest struct {
	// ToRevision restores the file to this revision by undoing every
	// journaled change after it, whoever made it.
	ToRevision *int64
	// Incident undoes every change the controller made for this incident.
	Incident string
	// Since undoes every change the controller made at or after this time.
	Since time.Time
	// Force undoes the changes even when a later change (by an operator,
	// or outside the journal) touched the same flag, overwriting it.
	Force bool
	// DryRun plans the rollback without writing anything.
	DryRun bool
	// Meta describes the rollback itself; Action defaults to "rollback".
	Meta ChangeMeta
}

// RollbackResult describes a rollback.
type RollbackResult struct {
	// Entry is the rollback's own journal entry (with Seq 0 on a dry run).
	Entry Entry
	// Undone are the entries undone, newest first (the order applied).
	Undone []Entry
}

// RollbackConflictError lists the later changes that a rollback would
// overwrite; it wraps ErrConflict.
type RollbackConflictError struct {
	Conflicts []string
}

func (e *RollbackConflictError) Error() string {
	return "rollback refused, it would overwrite later changes (use --force to overwrite them): " + strings.Join(e.Conflicts, "; ")
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *RollbackConflictError) Is(target error) bool { return target == ErrConflict }

func (r RollbackRequest) validate() error {
	n := 0
	if r.ToRevision != nil {
		n++
		if *r.ToRevision < 0 {
			return invalidf("rollback: revision must not be negative")
		}
	}
	if r.Incident != "" {
		n++
	}
	if !r.Since.IsZero() {
		n++
	}
	if n != 1 {
		return invalidf("rollback: choose exactly one of a revision, an incident or a start time")
	}
	return nil
}

// Rollback undoes journaled changes as one new, journaled change. Changes
// are undone newest first; each undo checks that the item still has the
// value the undone change wrote. For Incident and Since, only the
// controller's changes are undone (not those already undone by a
// rollback), and the rollback fails with a *RollbackConflictError, unless
// Force is set, when a later change to the same item (by an operator or
// for another incident) is still in effect or the item no longer has the
// value the controller wrote.
func (s *Store) Rollback(ctx context.Context, req RollbackRequest) (RollbackResult, error) {
	if err := req.validate(); err != nil {
		return RollbackResult{}, err
	}
	meta := req.Meta
	if meta.Action == "" {
		meta.Action = ActionRollback
	}
	if meta.Incident == "" {
		meta.Incident = req.Incident
	}
	var undone []Entry
	entry, err := s.commit(ctx, meta, req.DryRun, func(tx *txn) (*Document, error) {
		doc, plan, err := planRollback(tx.entries, tx.doc, tx.rev, req)
		if err != nil {
			return nil, err
		}
		undone = plan
		seqs := make([]int64, len(plan))
		for i, e := range plan {
			seqs[i] = e.Seq
		}
		slices.Sort(seqs)
		tx.meta.RevertOf = seqs
		return doc, nil
	})
	if err != nil {
		return RollbackResult{Undone: undone}, err
	}
	if req.DryRun {
		entry.Seq = 0
	}
	return RollbackResult{Entry: entry, Undone: undone}, nil
}

// planRollback computes the document after undoing the selected entries
// and returns them in the order undone (newest first).
func planRollback(entries []Entry, current *Document, rev int64, req RollbackRequest) (*Document, []Entry, error) {
	live := make([]Entry, 0, len(entries))
	for _, e := range entries {
		if !e.Aborted && e.Action != ActionAbort {
			live = append(live, e)
		}
	}
	reverted := revertedEntries(live)

	var selected []Entry
	switch {
	case req.ToRevision != nil:
		to := *req.ToRevision
		if to > rev {
			return nil, nil, invalidf("rollback: revision %d is newer than the file (revision %d)", to, rev)
		}
		if to == rev {
			return nil, nil, fmt.Errorf("rollback: the file is already at revision %d: %w", rev, ErrNoChange)
		}
		known := false
		for _, e := range live {
			if e.RevisionBefore == to || e.RevisionAfter == to {
				known = true
			}
			if e.RevisionAfter > to {
				selected = append(selected, e)
			}
		}
		if !known {
			return nil, nil, fmt.Errorf("rollback: revision %d is not in the journal: %w", to, ErrNotFound)
		}
	default:
		for _, e := range live {
			if e.Actor != ActorController || reverted[e.Seq] || e.Action == ActionRollback {
				continue
			}
			if req.Incident != "" && e.Incident == req.Incident ||
				!req.Since.IsZero() && !e.Time.Before(req.Since) {
				selected = append(selected, e)
			}
		}
		if len(selected) == 0 {
			what := fmt.Sprintf("for incident %q", req.Incident)
			if req.Incident == "" {
				what = "since " + req.Since.UTC().Format(time.RFC3339)
			}
			return nil, nil, fmt.Errorf("rollback: no controller changes left to undo %s: %w", what, ErrNotFound)
		}
	}

	var conflicts []string
	if req.ToRevision == nil {
		chosen := map[int64]bool{}
		for _, e := range selected {
			chosen[e.Seq] = true
		}
		for _, e := range selected {
			for _, c := range e.Changes {
				for _, later := range live {
					// Rollbacks and undone changes are judged by the
					// value they left, checked below.
					if later.Seq <= e.Seq || chosen[later.Seq] || reverted[later.Seq] ||
						later.Action == ActionRollback || !touches(later, c.Kind, c.Key) {
						continue
					}
					conflicts = append(conflicts, fmt.Sprintf("%s changed by %s in journal entry %d at %s (%q) after controller entry %d",
						itemName(c.Kind, c.Key), later.Actor, later.Seq, later.Time.UTC().Format(time.RFC3339), later.Reason, e.Seq))
				}
			}
		}
	}

	doc := current.Clone()
	slices.Reverse(selected)
	for _, e := range selected {
		for _, c := range e.Changes {
			cur, err := itemJSON(doc, c.Kind, c.Key)
			if err != nil {
				return nil, nil, err
			}
			if !bytes.Equal(cur, compact(c.After)) && len(conflicts) == 0 {
				conflicts = append(conflicts, fmt.Sprintf("%s no longer has the value journal entry %d wrote (changed by a later rollback or outside the journal)",
					itemName(c.Kind, c.Key), e.Seq))
			}
			if err := restoreItem(doc, c); err != nil {
				return nil, nil, fmt.Errorf("rollback of journal entry %d: %w", e.Seq, err)
			}
		}
	}
	if len(conflicts) > 0 && !req.Force {
		return nil, selected, &RollbackConflictError{Conflicts: slices.Compact(conflicts)}
	}
	return doc, selected, nil
}

// revertedEntries returns the entries whose effect a later rollback
// undid. Rolling back a rollback re-applies what it had undone.
func revertedEntries(entries []Entry) map[int64]bool {
	bySeq := make(map[int64]*Entry, len(entries))
	for i := range entries {
		bySeq[entries[i].Seq] = &entries[i]
	}
	reverted := map[int64]bool{}
	for _, e := range entries {
		for _, s := range e.RevertOf {
			reverted[s] = true
			if undone, ok := bySeq[s]; ok {
				for _, t := range undone.RevertOf {
					reverted[t] = false
				}
			}
		}
	}
	return reverted
}

func touches(e Entry, kind ChangeKind, key string) bool {
	for _, c := range e.Changes {
		if c.Kind == kind && c.Key == key {
			return true
		}
	}
	return false
}

func itemName(kind ChangeKind, key string) string {
	switch kind {
	case KindFlag:
		return fmt.Sprintf("flag %q", key)
	case KindEvaluator:
		return fmt.Sprintf("evaluator %q", key)
	default:
		return "flag-set metadata"
	}
}

func itemJSON(d *Document, kind ChangeKind, key string) (json.RawMessage, error) {
	switch kind {
	case KindFlag:
		return flagJSON(d.Flags[key])
	case KindEvaluator:
		return rawOrNull(d.Evaluators[key]), nil
	case KindMetadata:
		return metadataJSON(d.Metadata)
	default:
		return nil, fmt.Errorf("unknown change kind %q", kind)
	}
}

// restoreItem sets the item c is about to c.Before.
func restoreItem(d *Document, c Change) error {
	isNull := bytes.Equal(bytes.TrimSpace(c.Before), jsonNull) || len(c.Before) == 0
	switch c.Kind {
	case KindFlag:
		if isNull {
			delete(d.Flags, c.Key)
			return nil
		}
		obj, err := decodeObject(c.Before)
		if err != nil {
			return fmt.Errorf("flag %q: journaled value: %w", c.Key, err)
		}
		var ps problems
		f := decodeFlag(c.Key, obj, &ps)
		if err := ps.err(); err != nil {
			return err
		}
		if d.Flags == nil {
			d.Flags = map[string]*Flag{}
		}
		d.Flags[c.Key] = f
	case KindEvaluator:
		if isNull {
			delete(d.Evaluators, c.Key)
			return nil
		}
		if d.Evaluators == nil {
			d.Evaluators = map[string]json.RawMessage{}
		}
		d.Evaluators[c.Key] = compact(c.Before)
	case KindMetadata:
		rev, hasRev := d.Metadata[RevisionKey]
		d.Metadata = nil
		if !isNull {
			var ps problems
			d.Metadata = decodeMetadata(c.Before, "", "metadata", &ps)
			if err := ps.err(); err != nil {
				return err
			}
		}
		if hasRev {
			if d.Metadata == nil {
				d.Metadata = Metadata{}
			}
			d.Metadata[RevisionKey] = rev
		}
	default:
		return errors.New("unknown change kind " + string(c.Kind))
	}
	return nil
}
