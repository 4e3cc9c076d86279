package flags

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// AnyRevision disables the compare-and-swap check of Update.
const AnyRevision int64 = -1

// LockSuffix is appended to the flag file path to name the lock file.
const LockSuffix = ".lock"

// StateSuffix is appended to the flag file path to name the file where the
// sidecar keeps its controller's state by default; the provider ignores it
// like the journal and the lock.
const StateSuffix = ".tailguard-state.json"

// StoreConfig configures a Store.
type StoreConfig struct {
	// Path is the flag file. It must exist before the first Update; the
	// journal (Path + ".journal.jsonl") and lock file (Path + ".lock") are
	// created next to it.
	Path string
	// Validator checks every file read and every change written. If nil,
	// NewStore compiles one.
	Validator *Validator
	// Now stamps journal entries; defaults to time.Now.
	Now func() time.Time
}

// Backend keeps a flag set in flagd's format and its journal. A Store
// plans every change (compare-and-swap on the revision, idempotency,
// validation, the journal entry) and hands it to its backend to write. The
// file backend (StoreConfig.Path) is the default; package flags/kube keeps
// both in a Kubernetes cluster.
type Backend interface {
	// Read returns the flag set as flagd JSON.
	Read(ctx context.Context) ([]byte, error)
	// Entries returns the journal, oldest first, abort markers applied
	// (Entry.Aborted).
	Entries(ctx context.Context) ([]Entry, error)
	// Begin reads both for a change and holds what the backend needs to
	// write it safely: a lock, the versions it read.
	Begin(ctx context.Context) (Tx, error)
}

// Tx is one change in progress.
type Tx interface {
	// Data is the flag set as read by Begin.
	Data() []byte
	// Entries is the journal as read by Begin.
	Entries() []Entry
	// Commit journals entries in order (write-ahead), then writes data as
	// the flag set. If another writer changed the flag set or the journal
	// since Begin, it fails with an error wrapping ErrConflict. A journaled
	// entry whose write did not land is found unapplied by the next reader:
	// the flag set never reached its revision.
	Commit(ctx context.Context, data []byte, entries []Entry) error
	// Close ends the change; it is safe after Commit.
	Close()
}

// Store reads and writes a flag set through a Backend. With the file
// backend, writes are serialised across goroutines and processes by an
// advisory lock, checked against the revision the caller read
// (compare-and-swap), validated, journaled and then atomically renamed into
// place, so a reader (flagd, a provider, a crashed writer's successor) only
// ever sees a complete old or new file.
type Store struct {
	backend   Backend
	file      *fileBackend // nil for other backends
	validator *Validator
	now       func() time.Time
}

// NewStore validates cfg and returns a Store of the flag file cfg.Path.
func NewStore(cfg StoreConfig) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("store: flag file path is required")
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("store: flag file path: %w", err)
	}
	fb := &fileBackend{path: path, lockPath: path + LockSuffix, journal: NewJournal(JournalPath(path))}
	s, err := NewBackendStore(fb, cfg.Validator, cfg.Now)
	if err != nil {
		return nil, err
	}
	s.file, fb.now = fb, s.now
	return s, nil
}

// NewBackendStore returns a Store over backend. A nil validator is
// compiled; a nil now is time.Now.
func NewBackendStore(backend Backend, v *Validator, now func() time.Time) (*Store, error) {
	if backend == nil {
		return nil, errors.New("store: backend is required")
	}
	if v == nil {
		var err error
		if v, err = NewValidator(); err != nil {
			return nil, err
		}
	}
	if now == nil {
		now = time.Now
	}
	return &Store{backend: backend, validator: v, now: now}, nil
}

// Path returns the flag file path, or "" when the store is not file-backed.
func (s *Store) Path() string {
	if s.file == nil {
		return ""
	}
	return s.file.path
}

// Snapshot is a validated flag file as read at one revision.
type Snapshot struct {
	Doc      *Document
	Revision int64
}

// Load reads and validates the flag file. It takes no lock: writers
// replace the file by rename, so a read sees one complete version.
func (s *Store) Load(ctx context.Context) (*Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := s.backend.Read(ctx)
	if err != nil {
		return nil, err
	}
	doc, err := s.validator.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.where(), err)
	}
	return &Snapshot{Doc: doc, Revision: doc.Revision()}, nil
}

// ChangeMeta describes who makes a change and why; it is journaled with
// the change. Actor and Reason are required.
type ChangeMeta struct {
	Actor          string
	Action         string
	Incident       string
	Reason         string
	IdempotencyKey string
	// RevertOf lists the journal entries a rollback undoes.
	RevertOf []int64
	// Record is the writer's own account of the change, journaled with it
	// and returned as is (the controller keeps its action record there, so
	// that any replica, or a restart, can rebuild its incident). Optional.
	Record json.RawMessage
}

func (m ChangeMeta) validate() error {
	if err := ValidateActor(m.Actor); err != nil {
		return err
	}
	if m.Reason == "" {
		return invalidf("reason: every change needs a reason")
	}
	if m.Action == "" {
		return invalidf("action: must not be empty")
	}
	return nil
}

// Update applies mutate to a copy of the current document and writes the
// result as the next revision. If expected is not AnyRevision and the file
// is no longer at revision expected, Update returns a *ConflictError
// (errors.Is ErrConflict) without calling mutate. If meta.IdempotencyKey
// was already journaled, it returns a *DuplicateError (errors.Is
// ErrDuplicate) carrying the earlier entry. If mutate changes nothing it
// returns ErrNoChange. The result must pass validation (ErrInvalid).
func (s *Store) Update(ctx context.Context, expected int64, mutate func(*Document) error, meta ChangeMeta) (Entry, error) {
	return s.commit(ctx, meta, false, func(tx *txn) (*Document, error) {
		if expected != AnyRevision && expected != tx.rev {
			return nil, &ConflictError{Expected: expected, Actual: tx.rev}
		}
		doc := tx.doc.Clone()
		if err := mutate(doc); err != nil {
			return nil, err
		}
		return doc, nil
	})
}

// HistoryFilter selects journal entries; zero fields match everything.
type HistoryFilter struct {
	Flag     string
	Incident string
	Actor    string
	Since    time.Time
	// IncludeAborted also returns entries whose write never reached the
	// file, and the abort markers themselves.
	IncludeAborted bool
}

func (f HistoryFilter) match(e *Entry) bool {
	switch {
	case !f.IncludeAborted && (e.Aborted || e.Action == ActionAbort):
		return false
	case f.Flag != "" && !e.TouchesFlag(f.Flag):
		return false
	case f.Incident != "" && e.Incident != f.Incident:
		return false
	case f.Actor != "" && e.Actor != f.Actor:
		return false
	case !f.Since.IsZero() && e.Time.Before(f.Since):
		return false
	}
	return true
}

// History returns the journal entries matching filter, oldest first.
// Entries whose write never reached the flag file are reported as Aborted,
// including a last entry whose writer crashed before any other writer
// could record the abort (and, for a moment, a write still in flight).
func (s *Store) History(ctx context.Context, filter HistoryFilter) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := s.backend.Entries(ctx)
	if err != nil {
		return nil, err
	}
	if data, err := s.backend.Read(ctx); err == nil {
		if doc, err := Decode(data); err == nil {
			markUnapplied(entries, doc.Revision())
		}
	}
	out := entries[:0:0]
	for i := range entries {
		if filter.match(&entries[i]) {
			out = append(out, entries[i])
		}
	}
	return out, nil
}

// txn is the state a change is planned against, read under the lock.
type txn struct {
	doc     *Document
	rev     int64
	entries []Entry
	meta    *ChangeMeta
}

// commit runs one read-plan-validate-journal-write cycle.
func (s *Store) commit(ctx context.Context, meta ChangeMeta, dryRun bool, plan func(*txn) (*Document, error)) (Entry, error) {
	if err := meta.validate(); err != nil {
		return Entry{}, err
	}
	btx, err := s.backend.Begin(ctx)
	if err != nil {
		return Entry{}, err
	}
	defer btx.Close()
	doc, err := s.validator.Parse(btx.Data())
	if err != nil {
		if s.file != nil {
			return Entry{}, fmt.Errorf("current flag file is invalid, fix it first: %w", err)
		}
		return Entry{}, fmt.Errorf("current %s is invalid, fix it first: %w", s.where(), err)
	}
	entries := slices.Clone(btx.Entries())
	rev := doc.Revision()
	// A change journaled for a revision the flag set never reached (its
	// writer crashed or failed before writing it) is recorded as aborted
	// before anything else is journaled.
	var pre []Entry
	if i := unappliedIndex(entries, rev); i >= 0 {
		pre = append(pre, s.abortMarker(entries[i], lastSeq(entries)+1))
		entries[i].Aborted = true
	}
	if meta.IdempotencyKey != "" {
		for _, e := range entries {
			if e.IdempotencyKey == meta.IdempotencyKey && !e.Aborted {
				return Entry{}, &DuplicateError{Key: meta.IdempotencyKey, Entry: e}
			}
		}
	}

	tx := &txn{doc: doc, rev: rev, entries: entries, meta: &meta}
	next, err := plan(tx)
	if err != nil {
		return Entry{}, err
	}
	next.SetRevision(rev + 1)
	if err := s.validator.Validate(next); err != nil {
		return Entry{}, fmt.Errorf("change rejected: %w", err)
	}
	changes, err := diff(doc, next)
	if err != nil {
		return Entry{}, err
	}
	if len(changes) == 0 {
		return Entry{}, ErrNoChange
	}
	entry := Entry{
		Seq:            lastSeq(entries) + int64(len(pre)) + 1,
		Time:           s.now().UTC(),
		Actor:          meta.Actor,
		Action:         meta.Action,
		Incident:       meta.Incident,
		Reason:         meta.Reason,
		IdempotencyKey: meta.IdempotencyKey,
		Record:         meta.Record,
		Flags:          changedFlags(changes),
		Changes:        changes,
		RevisionBefore: rev,
		RevisionAfter:  rev + 1,
		RevertOf:       meta.RevertOf,
	}
	if dryRun {
		return entry, nil
	}
	out, err := Marshal(next)
	if err != nil {
		return Entry{}, err
	}
	if err := btx.Commit(ctx, out, append(pre, entry)); err != nil {
		var se *syncError
		if errors.As(err, &se) {
			// The write happened; only its durability is in doubt. Report
			// it so the caller does not assume the change survives a power
			// loss.
			return entry, err
		}
		return Entry{}, err
	}
	return entry, nil
}

// where names the flag set in messages.
func (s *Store) where() string {
	if s.file != nil {
		return "flag file " + s.file.path
	}
	if n, ok := s.backend.(interface{ Name() string }); ok {
		return n.Name()
	}
	return "flag set"
}

// unappliedIndex returns the index of the last entry that claims a
// revision the flag set (at rev) never reached and has no abort marker
// yet, or -1.
func unappliedIndex(entries []Entry, rev int64) int {
	for i := len(entries) - 1; i >= 0; i-- {
		e := &entries[i]
		if e.Action == ActionAbort || e.Aborted {
			continue
		}
		if e.RevisionAfter <= rev {
			return -1
		}
		return i
	}
	return -1
}

// markUnapplied marks as aborted the trailing entries that claim a
// revision the flag file (at rev) never reached.
func markUnapplied(entries []Entry, rev int64) {
	for i := len(entries) - 1; i >= 0; i-- {
		e := &entries[i]
		if e.Action == ActionAbort || e.Aborted {
			continue
		}
		if e.RevisionAfter <= rev {
			return
		}
		e.Aborted = true
	}
}

func (s *Store) abortMarker(e Entry, seq int64) Entry { return abortMarker(e, seq, s.now()) }

func abortMarker(e Entry, seq int64, now time.Time) Entry {
	return Entry{
		Seq:            seq,
		Time:           now.UTC(),
		Actor:          actorSystem,
		Action:         ActionAbort,
		Reason:         fmt.Sprintf("flag set never reached revision %d", e.RevisionAfter),
		Flags:          []string{},
		RevisionBefore: e.RevisionBefore,
		RevisionAfter:  e.RevisionBefore,
		Aborts:         e.Seq,
	}
}

func lastSeq(entries []Entry) int64 {
	if len(entries) == 0 {
		return 0
	}
	return entries[len(entries)-1].Seq
}

// writeTemp writes data to a new file in the flag file's directory with
// the flag file's mode (and, where permitted, owner), fsyncs it and returns
// its path.
func writeTemp(path string, data []byte, fi os.FileInfo) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("create temporary flag file: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(tmp)
		return "", err
	}
	if _, err := f.Write(data); err != nil {
		return fail(fmt.Errorf("write temporary flag file: %w", err))
	}
	if err := f.Chmod(fi.Mode().Perm()); err != nil {
		return fail(fmt.Errorf("chmod temporary flag file: %w", err))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		// Keeping the owner needs privileges; without them the file is
		// owned by the writer, which is the best that can be done.
		_ = f.Chown(int(st.Uid), int(st.Gid))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("sync temporary flag file: %w", err))
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("close temporary flag file: %w", err)
	}
	return tmp, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// diff lists what changed between two documents, flags first, each group
// sorted by key. The revision key is not a change of its own.
func diff(before, after *Document) ([]Change, error) {
	var out []Change
	keys := map[string]bool{}
	for k := range before.Flags {
		keys[k] = true
	}
	for k := range after.Flags {
		keys[k] = true
	}
	for _, k := range sortedKeys(keys) {
		b, err := flagJSON(before.Flags[k])
		if err != nil {
			return nil, err
		}
		a, err := flagJSON(after.Flags[k])
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(a, b) {
			out = append(out, Change{Kind: KindFlag, Key: k, Before: b, After: a})
		}
	}
	evs := map[string]bool{}
	for k := range before.Evaluators {
		evs[k] = true
	}
	for k := range after.Evaluators {
		evs[k] = true
	}
	for _, k := range sortedKeys(evs) {
		b, a := rawOrNull(before.Evaluators[k]), rawOrNull(after.Evaluators[k])
		if !bytes.Equal(a, b) {
			out = append(out, Change{Kind: KindEvaluator, Key: k, Before: b, After: a})
		}
	}
	mb, err := metadataJSON(before.Metadata)
	if err != nil {
		return nil, err
	}
	ma, err := metadataJSON(after.Metadata)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(mb, ma) {
		out = append(out, Change{Kind: KindMetadata, Before: mb, After: ma})
	}
	return out, nil
}

var jsonNull = json.RawMessage("null")

func flagJSON(f *Flag) (json.RawMessage, error) {
	if f == nil {
		return jsonNull, nil
	}
	b, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("marshal flag: %w", err)
	}
	return b, nil
}

func rawOrNull(r json.RawMessage) json.RawMessage {
	if r == nil {
		return jsonNull
	}
	return compact(r)
}

// metadataJSON renders flag-set metadata without the revision key.
func metadataJSON(md Metadata) (json.RawMessage, error) {
	m := Metadata{}
	for k, v := range md {
		if k != RevisionKey {
			m[k] = v
		}
	}
	if len(m) == 0 {
		return jsonNull, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal metadata: %w", err)
	}
	return b, nil
}

func changedFlags(changes []Change) []string {
	out := []string{}
	for _, c := range changes {
		if c.Kind == KindFlag {
			out = append(out, c.Key)
		}
	}
	return slices.Compact(out)
}
