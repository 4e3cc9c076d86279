package flags

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"
)

// JournalSuffix is appended to the flag file path to name its journal.
const JournalSuffix = ".journal.jsonl"

// Actors.
const (
	// ActorController is the tailguard controller.
	ActorController = "controller"
	// ActorOperatorPrefix prefixes a person's name: "operator:alice".
	ActorOperatorPrefix = "operator:"
	// actorSystem records the store's own bookkeeping (abort markers).
	actorSystem = "system"
)

// Actions recorded in the journal. Callers may use others; these are the
// ones tailguard itself writes.
const (
	ActionSet      = "set"
	ActionEnable   = "enable"
	ActionDisable  = "disable"
	ActionRollout  = "rollout"
	ActionUpdate   = "update"
	ActionRollback = "rollback"
	// ActionAbort marks an earlier entry whose write never reached the flag
	// file (the writer crashed or failed between journaling and renaming).
	ActionAbort = "abort"
)

// ChangeKind says what a Change is about.
type ChangeKind string

// Change kinds.
const (
	KindFlag      ChangeKind = "flag"
	KindEvaluator ChangeKind = "evaluator"
	KindMetadata  ChangeKind = "metadata"
)

// Change is the before and after of one flag, shared evaluator or the
// flag-set metadata. Before is JSON null when the item was created, After
// when it was deleted.
type Change struct {
	Kind   ChangeKind      `json:"kind"`
	Key    string          `json:"key,omitempty"`
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
}

// Entry is one journaled change to the flag file.
type Entry struct {
	// Seq numbers entries from 1; it is the entry's id.
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	// Actor is "controller", "operator:<name>" or, for abort markers, "system".
	Actor  string `json:"actor"`
	Action string `json:"action"`
	// Incident is the controller's incident id, if any.
	Incident string `json:"incident,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// IdempotencyKey, if set, is unique across the journal: the store
	// refuses a second change with the same key (see DuplicateError).
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
	// Flags lists the flag keys the change touched.
	Flags          []string `json:"flags"`
	Changes        []Change `json:"changes,omitempty"`
	RevisionBefore int64    `json:"revisionBefore"`
	RevisionAfter  int64    `json:"revisionAfter"`
	// RevertOf lists the entries a rollback undid.
	RevertOf []int64 `json:"revertOf,omitempty"`
	// Aborts is the Seq of the entry an abort marker cancels.
	Aborts int64 `json:"aborts,omitempty"`
	// Record is the writer's account of the change (ChangeMeta.Record).
	Record json.RawMessage `json:"record,omitempty"`
	// Aborted is set when reading: the entry's write never reached the file.
	Aborted bool `json:"-"`
}

// TouchesFlag reports whether the entry changed the flag key.
func (e *Entry) TouchesFlag(key string) bool {
	for _, k := range e.Flags {
		if k == key {
			return true
		}
	}
	return false
}

var actorPattern = regexp.MustCompile(`^(controller|operator:[^\s:][^\s]*)$`)

// ValidateActor checks that actor is "controller" or "operator:<name>".
func ValidateActor(actor string) error {
	if !actorPattern.MatchString(actor) {
		return invalidf(`actor %q: must be "controller" or "operator:<name>"`, actor)
	}
	return nil
}

// Journal is the append-only change log next to a flag file, one JSON
// object per line. Appends are fsynced. A crash in the middle of an append
// leaves a torn last line; readers skip it and the next append truncates
// it away.
type Journal struct {
	path string
}

// NewJournal returns the journal stored at path.
func NewJournal(path string) *Journal { return &Journal{path: path} }

// JournalPath returns the journal path for a flag file.
func JournalPath(flagFile string) string { return flagFile + JournalSuffix }

// Path returns the journal's file path.
func (j *Journal) Path() string { return j.path }

// ReadResult is the outcome of reading the journal.
type ReadResult struct {
	Entries []Entry
	// TornTail is true when the last line was incomplete (a crash during an
	// append) and was skipped.
	TornTail bool
	// validSize is the byte length of the complete lines.
	validSize int64
}

// Entries reads all complete entries, marking aborted ones. A missing
// journal reads as empty.
func (j *Journal) Entries() ([]Entry, error) {
	r, err := j.read()
	if err != nil {
		return nil, err
	}
	return r.Entries, nil
}

// Read reads the journal and reports whether its tail was torn.
func (j *Journal) Read() (ReadResult, error) { return j.read() }

func (j *Journal) read() (ReadResult, error) {
	f, err := os.Open(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return ReadResult{}, nil
	}
	if err != nil {
		return ReadResult{}, fmt.Errorf("open journal: %w", err)
	}
	defer f.Close()
	return parseJournal(f)
}

func parseJournal(rd io.Reader) (ReadResult, error) {
	var res ReadResult
	br := bufio.NewReaderSize(rd, 64<<10)
	lineNo := 0
	aborted := map[int64]bool{}
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			lineNo++
			complete := line[len(line)-1] == '\n'
			var e Entry
			perr := json.Unmarshal(bytes.TrimSpace(line), &e)
			switch {
			case !complete:
				// No newline: the append was cut short. Whether or not the
				// fragment happens to parse, it was never acknowledged.
				res.TornTail = true
			case len(bytes.TrimSpace(line)) == 0:
				res.validSize += int64(len(line))
			case perr != nil:
				// A broken line that is not the last one is corruption, not
				// a torn append.
				if _, peek := br.Peek(1); peek == nil {
					return res, fmt.Errorf("journal line %d: %w", lineNo, perr)
				}
				res.TornTail = true
			default:
				res.validSize += int64(len(line))
				if e.Action == ActionAbort {
					aborted[e.Aborts] = true
				}
				res.Entries = append(res.Entries, e)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("read journal: %w", err)
		}
	}
	for i := range res.Entries {
		res.Entries[i].Aborted = aborted[res.Entries[i].Seq]
	}
	return res, nil
}

// append writes e as one line and fsyncs. If the journal ends in a torn
// line (validSize is shorter than the file), it is truncated first so the
// new entry starts on its own line. A new journal gets mode perm (the flag
// file's), since it holds the same data. Callers hold the store lock.
func (j *Journal) append(e *Entry, validSize int64, perm os.FileMode) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("marshal journal entry: %w", err)
	}
	line = append(line, '\n')
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_CREATE, perm)
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat journal: %w", err)
	}
	if fi.Size() != validSize {
		if err := f.Truncate(validSize); err != nil {
			f.Close()
			return fmt.Errorf("truncate torn journal tail: %w", err)
		}
	}
	if _, err := f.WriteAt(line, validSize); err != nil {
		f.Close()
		return fmt.Errorf("append journal: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync journal: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close journal: %w", err)
	}
	return nil
}

// ParseJournal reads journal entries in the journal's JSON-lines format
// (as another backend keeps them), marking aborted ones. A torn last line
// is skipped; a broken line elsewhere is an error.
func ParseJournal(r io.Reader) ([]Entry, error) {
	res, err := parseJournal(r)
	if err != nil {
		return nil, err
	}
	return res.Entries, nil
}

// AppendJournal appends entries to data in the journal's format.
func AppendJournal(data []byte, entries ...Entry) ([]byte, error) {
	for i := range entries {
		line, err := json.Marshal(&entries[i])
		if err != nil {
			return nil, fmt.Errorf("marshal journal entry: %w", err)
		}
		data = append(append(data, line...), '\n')
	}
	return data, nil
}
