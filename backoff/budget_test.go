package backoff_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailguard/tailguard/backoff"
)

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

func TestIsTimeout(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errTransient, false},
		{context.DeadlineExceeded, true},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), true},
		{timeoutErr{}, true},
		{fmt.Errorf("a: %w, b: %w", errTransient, timeoutErr{}), true},
		{context.Canceled, false},
	}
	for _, tc := range tests {
		if got := backoff.IsTimeout(tc.err); got != tc.want {
			t.Errorf("IsTimeout(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestTokenBucket(t *testing.T) {
	b, err := backoff.NewTokenBucket(backoff.TokenBucketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Tokens() != 500 {
		t.Fatalf("initial tokens = %d, want 500", b.Tokens())
	}
	b.Succeeded(nil)
	if b.Tokens() != 500 {
		t.Fatalf("tokens above capacity: %d", b.Tokens())
	}
	// 500 tokens pay for 100 retries at 5 tokens.
	for i := range 100 {
		if !b.Retry(errTransient) {
			t.Fatalf("retry %d denied with %d tokens", i, b.Tokens())
		}
	}
	if b.Retry(errTransient) {
		t.Fatal("retry allowed with an empty bucket")
	}
	// A first-attempt success returns 1 token, a success after a retry its cost.
	for range 4 {
		b.Succeeded(nil)
	}
	if b.Tokens() != 4 || b.Retry(errTransient) {
		t.Fatalf("tokens = %d after 4 successes; retry must be denied", b.Tokens())
	}
	b.Succeeded(timeoutErr{})
	if b.Tokens() != 14 {
		t.Fatalf("tokens = %d after a timeout refund, want 14", b.Tokens())
	}
	if !b.Retry(context.DeadlineExceeded) || b.Tokens() != 4 {
		t.Fatalf("timeout retry must cost 10, tokens = %d", b.Tokens())
	}
	b.Succeeded(errTransient)
	if b.Tokens() != 9 {
		t.Fatalf("tokens = %d after a refund, want 9", b.Tokens())
	}
	b.Begin() // no-op
}

func TestTokenBucketConfig(t *testing.T) {
	tests := []struct {
		cfg     backoff.TokenBucketConfig
		wantErr string
	}{
		{backoff.TokenBucketConfig{Capacity: -1}, "capacity"},
		{backoff.TokenBucketConfig{RetryCost: -1}, "retryCost"},
		{backoff.TokenBucketConfig{TimeoutCost: -1}, "timeoutCost"},
		{backoff.TokenBucketConfig{SuccessIncrement: -1}, "successIncrement"},
		{backoff.TokenBucketConfig{Capacity: 8}, "capacity"}, // below the timeout cost 10
		{backoff.TokenBucketConfig{Capacity: 20, RetryCost: 2, TimeoutCost: 3, SuccessIncrement: 1}, ""},
	}
	for _, tc := range tests {
		_, err := backoff.NewTokenBucket(tc.cfg)
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("NewTokenBucket(%+v) = %v", tc.cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr+":") {
			t.Errorf("NewTokenBucket(%+v) = %v, want error naming %s", tc.cfg, err, tc.wantErr)
		}
	}
}

func TestTokenBucketConcurrent(t *testing.T) {
	b, err := backoff.NewTokenBucket(backoff.TokenBucketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for range 4 {
		wg.Go(func() {
			n := 0
			for range 100 {
				if b.Retry(errTransient) {
					n++
				}
			}
			mu.Lock()
			granted += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if granted != 100 || b.Tokens() != 0 {
		t.Errorf("granted %d retries leaving %d tokens, want 100 and 0", granted, b.Tokens())
	}
}

type manualTime struct {
	mu  sync.Mutex
	now time.Time
}

func (m *manualTime) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

func (m *manualTime) Add(d time.Duration) {
	m.mu.Lock()
	m.now = m.now.Add(d)
	m.mu.Unlock()
}

func TestRatioBudget(t *testing.T) {
	clock := &manualTime{now: time.Unix(1_700_000_000, 0)}
	b, err := backoff.NewRatioBudget(backoff.RatioBudgetConfig{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	retries := func(n int) (allowed int) {
		for range n {
			if b.Retry(errTransient) {
				allowed++
			}
		}
		return allowed
	}
	// A single call may be retried: 0 retries < 10% of 1 call.
	b.Begin()
	if got := retries(3); got != 1 {
		t.Fatalf("%d retries allowed after 1 call, want 1", got)
	}
	for range 99 {
		b.Begin()
	}
	if got := retries(20); got != 9 {
		t.Fatalf("%d more retries allowed after 100 calls, want 9", got)
	}
	if calls, r := b.Counts(); calls != 100 || r != 10 {
		t.Fatalf("counts = %d calls, %d retries", calls, r)
	}
	// Half a window later, new calls add budget while the old ones still count.
	clock.Add(5 * time.Second)
	for range 100 {
		b.Begin()
	}
	if got := retries(20); got != 10 {
		t.Fatalf("%d retries allowed after 200 calls, want 10", got)
	}
	// Once the first calls leave the window, their retries leave too.
	clock.Add(5 * time.Second)
	if calls, r := b.Counts(); calls != 100 || r != 10 {
		t.Fatalf("counts after the window slid = %d calls, %d retries; want 100, 10", calls, r)
	}
	clock.Add(time.Minute)
	if calls, r := b.Counts(); calls != 0 || r != 0 {
		t.Fatalf("counts after a minute = %d, %d", calls, r)
	}
	b.Succeeded(nil) // no-op
}

func TestRatioBudgetMinRetries(t *testing.T) {
	clock := &manualTime{now: time.Unix(1_700_000_000, 0)}
	b, err := backoff.NewRatioBudget(backoff.RatioBudgetConfig{Ratio: 0.5, MinRetries: 3, Window: time.Second, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range 10 {
		if b.Retry(errTransient) {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d retries allowed without calls, want MinRetries = 3", n)
	}
}

func TestRatioBudgetConfig(t *testing.T) {
	tests := []struct {
		cfg   backoff.RatioBudgetConfig
		field string
	}{
		{backoff.RatioBudgetConfig{Ratio: -0.1}, "ratio"},
		{backoff.RatioBudgetConfig{Ratio: 101}, "ratio"},
		{backoff.RatioBudgetConfig{Window: time.Millisecond}, "window"},
		{backoff.RatioBudgetConfig{MinRetries: -1}, "minRetries"},
	}
	for _, tc := range tests {
		if _, err := backoff.NewRatioBudget(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("NewRatioBudget(%+v) = %v, want error naming %s", tc.cfg, err, tc.field)
		}
	}
}

func TestRetrierWithTokenBucket(t *testing.T) {
	b, err := backoff.NewTokenBucket(backoff.TokenBucketConfig{Capacity: 12, RetryCost: 5})
	if err != nil {
		t.Fatal(err)
	}
	r := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(expoPolicy), Clock: newFakeClock(), Budget: b})
	var calls int
	err = r.Do(context.Background(), failing(&calls, repeat(errTransient, 10)...))
	if reason, _ := backoff.Stopped(err); reason != backoff.ReasonBudgetDenied || calls != 3 {
		t.Fatalf("Do = %v after %d calls, want budget_denied after 3", err, calls)
	}
	if b.Tokens() != 2 {
		t.Errorf("tokens = %d, want 2", b.Tokens())
	}
	calls = 0
	if err := r.Do(context.Background(), failing(&calls)); err != nil {
		t.Fatal(err)
	}
	if b.Tokens() != 3 {
		t.Errorf("tokens = %d after a first-attempt success, want 3", b.Tokens())
	}
}

func TestRatioBudgetSetRatio(t *testing.T) {
	clock := &manualTime{now: time.Unix(1_700_000_000, 0)}
	b, err := backoff.NewRatioBudget(backoff.RatioBudgetConfig{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Ratio(); got != backoff.DefaultRetryRatio {
		t.Fatalf("Ratio() = %v, want the default %v", got, backoff.DefaultRetryRatio)
	}
	retries := func(n int) (allowed int) {
		for range n {
			if b.Retry(errTransient) {
				allowed++
			}
		}
		return allowed
	}
	for range 100 {
		b.Begin()
	}
	if got := retries(20); got != 10 {
		t.Fatalf("%d retries allowed after 100 calls at 10%%, want 10", got)
	}
	// Lowering the ratio denies at once: the window's counts are kept.
	if err := b.SetRatio(0.05); err != nil {
		t.Fatal(err)
	}
	if got := retries(5); got != 0 || b.Ratio() != 0.05 {
		t.Fatalf("%d retries allowed at 5%% with 10 of 100 used (ratio %v), want 0", got, b.Ratio())
	}
	// Raising it allows more at once.
	if err := b.SetRatio(0.2); err != nil {
		t.Fatal(err)
	}
	if got := retries(20); got != 10 {
		t.Fatalf("%d retries allowed at 20%% with 10 of 100 used, want 10", got)
	}
	if calls, r := b.Counts(); calls != 100 || r != 20 {
		t.Fatalf("counts = %d calls, %d retries; want 100, 20", calls, r)
	}
	for _, bad := range []float64{0, -0.1, 100.5, math.NaN(), math.Inf(1)} {
		if err := b.SetRatio(bad); err == nil || !strings.Contains(err.Error(), "ratio:") {
			t.Errorf("SetRatio(%v) = %v, want an error naming ratio", bad, err)
		}
	}
	if got := b.Ratio(); got != 0.2 {
		t.Errorf("Ratio() = %v after rejected changes, want 0.2", got)
	}
	if err := b.SetRatio(100); err != nil {
		t.Errorf("SetRatio(100) = %v", err)
	}
}

// TestRatioBudgetSetRatioConcurrent changes the ratio while retriers share
// the budget; run it with -race.
func TestRatioBudgetSetRatioConcurrent(t *testing.T) {
	clock := &manualTime{now: time.Unix(1_700_000_000, 0)} // one window throughout
	b, err := backoff.NewRatioBudget(backoff.RatioBudgetConfig{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	r := newRetrier(t, backoff.RetrierConfig{
		Policy: backoff.MustNew(backoff.Config{Strategy: backoff.Exponential, Base: ms, Cap: ms, MaxAttempts: 3}),
		Clock:  noSleepClock{}, Budget: b,
	})
	const (
		callers = 4
		each    = 500
		lo, hi  = 0.05, 0.5
	)
	done := make(chan struct{})
	var setter, wg sync.WaitGroup
	setter.Go(func() {
		ratios := [2]float64{lo, hi}
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if err := b.SetRatio(ratios[i%2]); err != nil {
				t.Error(err)
				return
			}
			_ = b.Ratio()
		}
	})
	ctx := context.Background()
	op := func(context.Context) error { return errTransient }
	for range callers {
		wg.Go(func() {
			for range each {
				_ = r.Do(ctx, op)
			}
		})
	}
	wg.Wait()
	close(done)
	setter.Wait()

	calls, retries := b.Counts()
	if calls != callers*each {
		t.Fatalf("counted %d calls, want %d", calls, callers*each)
	}
	// Every retry was granted below the ratio in force, never above hi.
	if float64(retries) >= hi*float64(calls)+1 {
		t.Errorf("%d retries for %d calls exceed the largest ratio %v", retries, calls, hi)
	}
	// Afterwards the last ratio set is the one in force.
	if err := b.SetRatio(1); err != nil {
		t.Fatal(err)
	}
	if got := b.Ratio(); got != 1 {
		t.Fatalf("Ratio() = %v, want 1", got)
	}
	var n int
	err = r.Do(ctx, failing(&n, errTransient, errTransient))
	if err != nil || n != 3 {
		t.Errorf("Do at ratio 1 = %v after %d attempts, want success after 3", err, n)
	}
}

// noSleepClock returns from Sleep at once and does not advance.
type noSleepClock struct{}

func (noSleepClock) Now() time.Time { return time.Unix(1_700_000_000, 0) }
func (noSleepClock) Sleep(ctx context.Context, _ time.Duration) error {
	return ctx.Err()
}
