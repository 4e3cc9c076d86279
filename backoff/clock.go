package backoff

import (
	"context"
	"time"
)

// Clock tells time and waits. Tests inject a fake to run retry loops without
// real sleeps; the default uses the time package.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Sleep waits for d or until ctx is done, whichever comes first, and
	// returns ctx's error in the latter case. It returns at once for d ≤ 0.
	Sleep(ctx context.Context, d time.Duration) error
}

// SystemClock is the real [Clock]. Sleep uses a timer, never time.Sleep, so
// it returns as soon as the context is done.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Sleep waits for d or until ctx is done.
func (SystemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
