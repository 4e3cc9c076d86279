package flags

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrInvalid marks a flag file or a change that fails validation.
	ErrInvalid = errors.New("invalid flag definition")
	// ErrConflict marks a lost compare-and-swap (the file changed since the
	// caller read it) or a rollback that would overwrite a later change.
	ErrConflict = errors.New("conflict")
	// ErrDuplicate marks a change whose idempotency key was already used.
	ErrDuplicate = errors.New("duplicate change")
	// ErrNotFound marks a missing flag.
	ErrNotFound = errors.New("not found")
	// ErrNoChange marks an update that would not change the file; nothing
	// was written or journaled.
	ErrNoChange = errors.New("no change")
)

// Problem is one validation finding. Flag or Evaluator name the definition
// at fault (at most one is set), Field the member within it.
type Problem struct {
	Flag      string `json:"flag,omitempty"`
	Evaluator string `json:"evaluator,omitempty"`
	Field     string `json:"field,omitempty"`
	Message   string `json:"message"`
}

// String renders the problem as `flag "key": message`.
func (p Problem) String() string {
	switch {
	case p.Flag != "":
		return fmt.Sprintf("flag %q: %s", p.Flag, p.Message)
	case p.Evaluator != "":
		return fmt.Sprintf("$evaluators %q: %s", p.Evaluator, p.Message)
	default:
		return p.Message
	}
}

// ValidationError lists everything wrong with a flag file.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0].String()
	}
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return fmt.Sprintf("%d problems: %s", len(parts), strings.Join(parts, "; "))
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// ConflictError reports a lost compare-and-swap.
type ConflictError struct {
	Expected, Actual int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("stale revision: expected %d, file is at %d (re-read and retry)", e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// DuplicateError reports that a change with the same idempotency key was
// already journaled; Entry is the earlier change.
type DuplicateError struct {
	Key   string
	Entry Entry
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("idempotency key %q already used by journal entry %d (%s at %s)",
		e.Key, e.Entry.Seq, e.Entry.Actor, e.Entry.Time.UTC().Format("2006-01-02T15:04:05Z"))
}

// Is makes errors.Is(err, ErrDuplicate) true.
func (e *DuplicateError) Is(target error) bool { return target == ErrDuplicate }

// invalidf returns a *ValidationError (errors.Is ErrInvalid) with one
// problem, so messages read naturally without a trailing sentinel text.
func invalidf(format string, args ...any) error {
	return &ValidationError{Problems: []Problem{{Message: fmt.Sprintf(format, args...)}}}
}

// flagInvalidf is invalidf for a problem with one flag.
func flagInvalidf(key, format string, args ...any) error {
	return &ValidationError{Problems: []Problem{{Flag: key, Message: fmt.Sprintf(format, args...)}}}
}

// problems collects validation findings.
type problems []Problem

func (ps *problems) add(flag, evaluator, field, msg string) {
	if field != "" {
		msg = field + ": " + msg
	}
	*ps = append(*ps, Problem{Flag: flag, Evaluator: evaluator, Field: field, Message: msg})
}

// addf records a problem whose message already names the field.
func (ps *problems) addf(flag, evaluator, field, format string, args ...any) {
	*ps = append(*ps, Problem{Flag: flag, Evaluator: evaluator, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	out := slices.Clone(ps)
	slices.SortStableFunc(out, func(a, b Problem) int {
		return cmp.Or(
			cmp.Compare(a.Flag, b.Flag),
			cmp.Compare(a.Evaluator, b.Evaluator),
			cmp.Compare(a.Field, b.Field),
			cmp.Compare(a.Message, b.Message),
		)
	})
	out = slices.Compact(out)
	return &ValidationError{Problems: out}
}
