//go:build unix

package flags

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockRetry is how often a blocked writer re-tries the lock while waiting
// for its context.
const lockRetry = 5 * time.Millisecond

// fileLock is an advisory, exclusive flock(2) lock on a file next to the
// flag file. flock locks belong to the open file description, so they work
// both between processes and between goroutines that open the lock file
// separately. The lock file is never removed: removing it would let two
// writers lock two different inodes.
type fileLock struct {
	f *os.File
}

func acquireLock(ctx context.Context, path string, perm os.FileMode) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return &fileLock{f: f}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, &os.PathError{Op: "flock", Path: path, Err: err})
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock %s: %w", path, ctx.Err())
		case <-time.After(lockRetry):
		}
	}
}

func (l *fileLock) release() error {
	err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("release lock: %w", err)
	}
	return nil
}
