package flags

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
)

// LastGood reads a flag file on demand and keeps serving its last valid
// version while the file is missing or invalid: the controller's view of
// the flags does not vanish because someone saved a typo. It re-parses the
// file only when its content changed. It is safe for concurrent use.
type LastGood struct {
	store *Store

	mu   sync.Mutex
	sum  [sha256.Size]byte
	snap *Snapshot
	err  error
}

// NewLastGood returns a LastGood reading the store's file.
func NewLastGood(s *Store) *LastGood { return &LastGood{store: s} }

// Load returns the newest valid snapshot. If the file is currently missing
// or invalid, it returns the last valid snapshot together with the error
// (which names the flag and field at fault); snap is nil only if the file
// was never valid.
func (l *LastGood) Load(ctx context.Context) (snap *Snapshot, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	data, err := l.store.backend.Read(ctx)
	if err != nil {
		l.sum = [sha256.Size]byte{}
		l.err = err
		return l.snap, l.err
	}
	sum := sha256.Sum256(data)
	if sum == l.sum && (l.snap != nil || l.err != nil) {
		return l.snap, l.err
	}
	l.sum = sum
	doc, err := l.store.validator.Parse(data)
	if err != nil {
		l.err = fmt.Errorf("%s: %w", l.store.where(), err)
		return l.snap, l.err
	}
	l.snap, l.err = &Snapshot{Doc: doc, Revision: doc.Revision()}, nil
	return l.snap, nil
}
