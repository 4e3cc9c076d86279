package flags

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// fileBackend keeps the flag set in a flagd flag file and its journal in
// the JSON-lines file beside it; an advisory lock file serialises writers
// across processes.
type fileBackend struct {
	path     string
	lockPath string
	journal  *Journal
	now      func() time.Time

	// beforeRename, if set, runs after the new file is written and
	// journaled but before it is renamed into place; an error aborts the
	// write as a crash at that point would. Tests use it.
	beforeRename func(tmpPath string) error
}

func (b *fileBackend) Read(context.Context) ([]byte, error) {
	data, err := os.ReadFile(b.path)
	if err != nil {
		return nil, fmt.Errorf("read flag file: %w", err)
	}
	return data, nil
}

func (b *fileBackend) Entries(context.Context) ([]Entry, error) { return b.journal.Entries() }

func (b *fileBackend) Begin(ctx context.Context) (Tx, error) {
	fi, err := os.Stat(b.path)
	if err != nil {
		return nil, fmt.Errorf("stat flag file: %w", err)
	}
	lock, err := acquireLock(ctx, b.lockPath, fi.Mode().Perm())
	if err != nil {
		return nil, err
	}
	// Re-stat under the lock: another writer may have replaced the file.
	if fi, err = os.Stat(b.path); err != nil {
		lock.release()
		return nil, fmt.Errorf("stat flag file: %w", err)
	}
	data, err := os.ReadFile(b.path)
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("read flag file: %w", err)
	}
	jr, err := b.journal.Read()
	if err != nil {
		lock.release()
		return nil, err
	}
	return &fileTx{b: b, lock: lock, fi: fi, data: data, jr: jr}, nil
}

type fileTx struct {
	b    *fileBackend
	lock *fileLock
	fi   os.FileInfo
	data []byte
	jr   ReadResult
	done bool
}

func (t *fileTx) Data() []byte     { return t.data }
func (t *fileTx) Entries() []Entry { return t.jr.Entries }

func (t *fileTx) Close() {
	if !t.done {
		t.done = true
		t.lock.release()
	}
}

// Commit writes the new file next to the old one, journals the entries
// (write-ahead: if we crash after the rename, the change is journaled; if
// we crash before it, the next writer sees a journaled revision the file
// never reached and records its abort), then renames it into place. The
// lock held since Begin makes the compare-and-swap trivial.
func (t *fileTx) Commit(_ context.Context, data []byte, entries []Entry) error {
	perm := t.fi.Mode().Perm()
	tmp, err := writeTemp(t.b.path, data, t.fi)
	if err != nil {
		return err
	}
	for i := range entries {
		if err := t.b.journal.append(&entries[i], t.jr.validSize, perm); err != nil {
			os.Remove(tmp)
			return err
		}
		if t.jr, err = t.b.journal.Read(); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if t.b.beforeRename != nil {
		if err := t.b.beforeRename(tmp); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("write flag file: %w", err)
		}
	}
	if err := os.Rename(tmp, t.b.path); err != nil {
		os.Remove(tmp)
		if len(entries) > 0 {
			t.abort(entries[len(entries)-1], perm)
		}
		return fmt.Errorf("replace flag file: %w", err)
	}
	if err := syncDir(filepath.Dir(t.b.path)); err != nil {
		return &syncError{err: fmt.Errorf("sync flag file directory: %w", err)}
	}
	return nil
}

// abort best-effort records that entry did not reach the file; if this
// fails too, the next writer records it.
func (t *fileTx) abort(entry Entry, perm os.FileMode) {
	jr, err := t.b.journal.Read()
	if err != nil {
		return
	}
	marker := abortMarker(entry, lastSeq(jr.Entries)+1, t.b.now())
	_ = t.b.journal.append(&marker, jr.validSize, perm)
}

// syncError reports a write that happened but whose durability is in
// doubt.
type syncError struct{ err error }

func (e *syncError) Error() string { return e.err.Error() }
func (e *syncError) Unwrap() error { return e.err }
