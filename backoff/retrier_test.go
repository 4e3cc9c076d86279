package backoff_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailguard/tailguard/backoff"
)

// fakeClock advances virtual time by the requested delay on Sleep and
// records the delays. onSleep, if set, runs before the clock advances.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	sleeps  []time.Duration
	onSleep func()
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if c.onSleep != nil {
		c.onSleep()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return nil
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

var errTransient = errors.New("transient")

// failing returns an operation that returns errs in turn, then nil, and
// counts its calls.
func failing(calls *int, errs ...error) func(context.Context) error {
	return func(context.Context) error {
		*calls++
		if *calls <= len(errs) {
			return errs[*calls-1]
		}
		return nil
	}
}

func repeat(err error, n int) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func newRetrier(t *testing.T, cfg backoff.RetrierConfig) *backoff.Retrier {
	t.Helper()
	r, err := backoff.NewRetrier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var expoPolicy = backoff.Config{Strategy: backoff.Exponential, Base: 100 * ms, Cap: s, MaxAttempts: 5}

type budgetFunc func(error) bool

func (budgetFunc) Begin()               {}
func (f budgetFunc) Retry(e error) bool { return f(e) }
func (budgetFunc) Succeeded(error)      {}

func TestRetrierDo(t *testing.T) {
	timeout := fmt.Errorf("read: %w", context.DeadlineExceeded)
	tests := []struct {
		name         string
		policy       backoff.Config
		budget       backoff.Budget
		errs         []error
		wantReason   backoff.Reason // 0: success
		wantAttempts int
		wantSleeps   []time.Duration
		wantIs       []error
	}{
		{
			name:         "first attempt succeeds",
			policy:       expoPolicy,
			wantAttempts: 1,
		},
		{
			name:         "succeeds after retries",
			policy:       expoPolicy,
			errs:         repeat(errTransient, 3),
			wantAttempts: 4,
			wantSleeps:   []time.Duration{100 * ms, 200 * ms, 400 * ms},
		},
		{
			name:         "attempts exhausted",
			policy:       expoPolicy,
			errs:         repeat(errTransient, 10),
			wantReason:   backoff.ReasonExhausted,
			wantAttempts: 5,
			wantSleeps:   []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms},
			wantIs:       []error{backoff.ErrExhausted, errTransient},
		},
		{
			name:         "single attempt",
			policy:       backoff.Config{Strategy: backoff.FullJitter, Cap: s, MaxAttempts: 1},
			errs:         repeat(errTransient, 10),
			wantReason:   backoff.ReasonExhausted,
			wantAttempts: 1,
			wantIs:       []error{backoff.ErrExhausted, errTransient},
		},
		{
			name:         "permanent error stops at once",
			policy:       expoPolicy,
			errs:         []error{errTransient, fmt.Errorf("bad request: %w", backoff.Permanent(errTransient))},
			wantReason:   backoff.ReasonPermanent,
			wantAttempts: 2,
			wantSleeps:   []time.Duration{100 * ms},
			wantIs:       []error{backoff.ErrPermanent, errTransient},
		},
		{
			name:         "cap bounds delays",
			policy:       backoff.Config{Strategy: backoff.Exponential, Base: 400 * ms, Cap: 500 * ms, MaxAttempts: 4},
			errs:         repeat(errTransient, 10),
			wantReason:   backoff.ReasonExhausted,
			wantAttempts: 4,
			wantSleeps:   []time.Duration{400 * ms, 500 * ms, 500 * ms},
		},
		{
			name:         "retry-after raises the delay",
			policy:       expoPolicy,
			errs:         []error{backoff.RetryAfter(errTransient, 700*ms), errTransient},
			wantAttempts: 3,
			wantSleeps:   []time.Duration{700 * ms, 200 * ms},
		},
		{
			name:         "retry-after below the delay is ignored",
			policy:       expoPolicy,
			errs:         []error{errTransient, fmt.Errorf("wrapped: %w", backoff.RetryAfter(errTransient, 50*ms))},
			wantAttempts: 3,
			wantSleeps:   []time.Duration{100 * ms, 200 * ms},
		},
		{
			name:         "retry-after is capped",
			policy:       expoPolicy,
			errs:         []error{backoff.RetryAfter(errTransient, time.Hour)},
			wantAttempts: 2,
			wantSleeps:   []time.Duration{s},
		},
		{
			name:         "max elapsed",
			policy:       backoff.Config{Strategy: backoff.Exponential, Base: 400 * ms, Cap: 10 * s, MaxElapsed: s},
			errs:         repeat(errTransient, 10),
			wantReason:   backoff.ReasonMaxElapsed,
			wantAttempts: 2,
			wantSleeps:   []time.Duration{400 * ms}, // 400ms + 800ms would exceed 1s
			wantIs:       []error{backoff.ErrMaxElapsed, errTransient},
		},
		{
			name:         "budget denies",
			policy:       expoPolicy,
			budget:       budgetFunc(func(err error) bool { return !errors.Is(err, context.DeadlineExceeded) }),
			errs:         []error{errTransient, timeout},
			wantReason:   backoff.ReasonBudgetDenied,
			wantAttempts: 2,
			wantSleeps:   []time.Duration{100 * ms},
			wantIs:       []error{backoff.ErrBudgetDenied, context.DeadlineExceeded},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			r := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(tc.policy), Clock: clock, Budget: tc.budget})
			var calls int
			err := r.Do(context.Background(), failing(&calls, tc.errs...))
			if calls != tc.wantAttempts {
				t.Errorf("operation called %d times, want %d", calls, tc.wantAttempts)
			}
			if got := clock.Sleeps(); fmt.Sprint(got) != fmt.Sprint(tc.wantSleeps) {
				t.Errorf("sleeps = %v, want %v", got, tc.wantSleeps)
			}
			if tc.wantReason == 0 {
				if err != nil {
					t.Fatalf("Do = %v, want nil", err)
				}
				return
			}
			var e *backoff.Error
			if !errors.As(err, &e) {
				t.Fatalf("Do = %v (%T), want *backoff.Error", err, err)
			}
			if e.Reason != tc.wantReason || e.Attempts != tc.wantAttempts {
				t.Errorf("reason, attempts = %v, %d; want %v, %d", e.Reason, e.Attempts, tc.wantReason, tc.wantAttempts)
			}
			if reason, ok := backoff.Stopped(fmt.Errorf("outer: %w", err)); !ok || reason != tc.wantReason {
				t.Errorf("Stopped = %v, %v", reason, ok)
			}
			for _, target := range tc.wantIs {
				if !errors.Is(err, target) {
					t.Errorf("errors.Is(%v, %v) = false", err, target)
				}
			}
		})
	}
}

func TestRetrierPermanentErrorIsUnwrapped(t *testing.T) {
	r := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(expoPolicy), Clock: newFakeClock()})
	err := r.Do(context.Background(), func(context.Context) error { return backoff.Permanent(errTransient) })
	var e *backoff.Error
	if !errors.As(err, &e) || e.Err != errTransient {
		t.Fatalf("Do = %#v, want Err = errTransient", err)
	}
	var pe *backoff.PermanentError
	if errors.As(err, &pe) {
		t.Error("returned error still wraps *PermanentError")
	}
	if backoff.Permanent(nil) != nil || backoff.RetryAfter(nil, s) != nil {
		t.Error("wrapping nil must yield nil")
	}
}

func TestRetrierContext(t *testing.T) {
	cause := errors.New("shutting down")
	t.Run("done before the first attempt", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(expoPolicy), Clock: newFakeClock()})
		var calls int
		err := r.Do(ctx, failing(&calls))
		if calls != 0 {
			t.Errorf("operation ran %d times", calls)
		}
		var e *backoff.Error
		if !errors.As(err, &e) || e.Reason != backoff.ReasonContext || e.Attempts != 0 || e.Err != nil {
			t.Fatalf("Do = %#v", err)
		}
		if !errors.Is(err, context.Canceled) || !errors.Is(err, backoff.ErrContextDone) {
			t.Errorf("%v does not match context.Canceled and ErrContextDone", err)
		}
	})
	t.Run("cancelled by the operation", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(context.Background())
		clock := newFakeClock()
		r := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(expoPolicy), Clock: clock})
		err := r.Do(ctx, func(context.Context) error { cancel(cause); return errTransient })
		var e *backoff.Error
		if !errors.As(err, &e) || e.Reason != backoff.ReasonContext || e.Attempts != 1 {
			t.Fatalf("Do = %#v", err)
		}
		if !errors.Is(err, cause) || !errors.Is(err, errTransient) {
			t.Errorf("%v does not match the cause and the last error", err)
		}
		if len(clock.Sleeps()) != 0 {
			t.Errorf("slept %v after cancellation", clock.Sleeps())
		}
	})
	t.Run("cancelled while sleeping", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(context.Background())
		clock := newFakeClock()
		clock.onSleep = func() { cancel(cause) }
		r := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(expoPolicy), Clock: clock})
		var calls int
		err := r.Do(ctx, failing(&calls, repeat(errTransient, 3)...))
		var e *backoff.Error
		if !errors.As(err, &e) || e.Reason != backoff.ReasonContext || e.Attempts != 1 || calls != 1 {
			t.Fatalf("Do = %#v after %d calls", err, calls)
		}
		if !errors.Is(err, cause) {
			t.Errorf("%v does not match the cause", err)
		}
	})
	t.Run("system clock returns when the context ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		r := newRetrier(t, backoff.RetrierConfig{
			Policy: backoff.MustNew(backoff.Config{Strategy: backoff.Exponential, Base: time.Hour, Cap: time.Hour}),
		})
		go cancel()
		err := r.Do(ctx, func(context.Context) error { return errTransient })
		if reason, _ := backoff.Stopped(err); reason != backoff.ReasonContext {
			t.Fatalf("Do = %v, want reason context", err)
		}
	})
}

func TestSystemClock(t *testing.T) {
	var c backoff.SystemClock
	if err := c.Sleep(context.Background(), 0); err != nil {
		t.Errorf("Sleep(0) = %v", err)
	}
	if err := c.Sleep(context.Background(), time.Microsecond); err != nil {
		t.Errorf("Sleep(1µs) = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep with a cancelled context = %v", err)
	}
	if err := c.Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep(0) with a cancelled context = %v", err)
	}
	if c.Now().IsZero() {
		t.Error("Now is zero")
	}
}

func TestRetrierDecorrelatedUsesPreviousDelay(t *testing.T) {
	clock := newFakeClock()
	p := backoff.MustNew(backoff.Config{Strategy: backoff.Decorrelated, Base: 10 * ms, Cap: 10 * s, MaxAttempts: 6})
	r := newRetrier(t, backoff.RetrierConfig{Policy: p, Clock: clock, Rand: constRand(^uint64(0))})
	_ = r.Do(context.Background(), func(context.Context) error { return errTransient })
	// With the largest random input every delay is ≈ 3·prev.
	want := []time.Duration{30 * ms, 90 * ms, 270 * ms, 810 * ms, 2430 * ms}
	got := clock.Sleeps()
	if len(got) != len(want) {
		t.Fatalf("sleeps = %v, want ≈ %v", got, want)
	}
	for i := range want {
		if d := got[i] - want[i]; d < -ms || d > ms {
			t.Errorf("sleep %d = %v, want ≈ %v", i, got[i], want[i])
		}
	}
}

type constRand uint64

func (c constRand) Uint64() uint64 { return uint64(c) }

func TestRetryReturnsValue(t *testing.T) {
	r := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(expoPolicy), Clock: newFakeClock()})
	n := 0
	v, err := backoff.Retry(context.Background(), r, func(context.Context) (string, error) {
		if n++; n < 3 {
			return "partial", errTransient
		}
		return "done", nil
	})
	if v != "done" || err != nil || n != 3 {
		t.Fatalf("Retry = %q, %v after %d attempts", v, err, n)
	}
	v, err = backoff.Retry(context.Background(), r, func(context.Context) (string, error) {
		return "last", backoff.Permanent(errTransient)
	})
	if v != "last" || !errors.Is(err, backoff.ErrPermanent) {
		t.Fatalf("Retry = %q, %v", v, err)
	}
}

func TestNewRetrierRequiresPolicy(t *testing.T) {
	_, err := backoff.NewRetrier(backoff.RetrierConfig{})
	var ce *backoff.ConfigError
	if !errors.As(err, &ce) || ce.Field != "policy" {
		t.Fatalf("NewRetrier without policy = %v", err)
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		err  *backoff.Error
		want string
	}{
		{&backoff.Error{Reason: backoff.ReasonExhausted, Attempts: 3, Err: errTransient}, "retry attempts exhausted after 3 attempts: transient"},
		{&backoff.Error{Reason: backoff.ReasonBudgetDenied, Attempts: 1, Err: errTransient}, "retry budget denied after 1 attempt: transient"},
		{&backoff.Error{Reason: backoff.ReasonContext, Cause: context.Canceled}, "context done after 0 attempts (context canceled)"},
		{&backoff.Error{Reason: 99, Attempts: 2}, "retry stopped: Reason(99) after 2 attempts"},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	reasons := map[backoff.Reason]string{
		backoff.ReasonExhausted: "exhausted", backoff.ReasonPermanent: "permanent", backoff.ReasonBudgetDenied: "budget_denied",
		backoff.ReasonContext: "context", backoff.ReasonMaxElapsed: "max_elapsed",
	}
	for r, want := range reasons {
		if r.String() != want {
			t.Errorf("%d.String() = %q, want %q", r, r, want)
		}
	}
}

func TestSetPolicy(t *testing.T) {
	clock := newFakeClock()
	oldP := backoff.MustNew(backoff.Config{Strategy: backoff.Exponential, Base: 100 * ms, Cap: s})
	newP := backoff.MustNew(backoff.Config{Strategy: backoff.Exponential, Base: 7 * ms, Cap: s})
	r := newRetrier(t, backoff.RetrierConfig{Policy: oldP, Clock: clock})
	// A swap during a call does not affect that call.
	var calls int
	_ = r.Do(context.Background(), func(ctx context.Context) error {
		if calls++; calls == 1 {
			r.SetPolicy(newP)
			return errTransient
		}
		return nil
	})
	if r.Policy() != newP {
		t.Fatal("Policy() does not return the new policy")
	}
	calls = 0
	_ = r.Do(context.Background(), failing(&calls, errTransient))
	if got, want := fmt.Sprint(clock.Sleeps()), "[100ms 7ms]"; got != want {
		t.Errorf("sleeps = %s, want %s", got, want)
	}
	r.SetPolicy(nil)
	if r.Policy() != newP {
		t.Error("SetPolicy(nil) replaced the policy")
	}
}

// TestSetPolicyConcurrent swaps policies while parallel callers retry; run
// with -race.
func TestSetPolicyConcurrent(t *testing.T) {
	m, err := backoff.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	budget, err := backoff.NewTokenBucket(backoff.TokenBucketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	policies := make([]*backoff.Policy, 0, 5)
	for _, st := range backoff.Strategies() {
		policies = append(policies, backoff.MustNew(backoff.Config{Strategy: st, Base: ms, Cap: 10 * ms, MaxAttempts: 4}))
	}
	r := newRetrier(t, backoff.RetrierConfig{Policy: policies[0], Metrics: m, Budget: budget, Upstream: "u", Clock: noSleep{}})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				r.SetPolicy(policies[i%len(policies)])
			}
		}
	})
	var callers sync.WaitGroup
	for g := range 4 {
		callers.Go(func() {
			for i := range 500 {
				n := 0
				_ = r.Do(context.Background(), func(context.Context) error {
					if n++; n <= (g+i)%3 {
						return errTransient
					}
					return nil
				})
			}
		})
	}
	callers.Wait()
	close(stop)
	wg.Wait()
}

func TestSuccessDoesNotAllocate(t *testing.T) {
	m, err := backoff.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	tb, err := backoff.NewTokenBucket(backoff.TokenBucketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := backoff.NewRatioBudget(backoff.RatioBudgetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	policy := backoff.MustNew(backoff.DefaultConfig())
	tests := []struct {
		name string
		cfg  backoff.RetrierConfig
	}{
		{"bare", backoff.RetrierConfig{Policy: policy}},
		{"metrics and token bucket", backoff.RetrierConfig{Policy: policy, Metrics: m, Budget: tb, Upstream: "a"}},
		{"metrics and ratio budget", backoff.RetrierConfig{Policy: policy, Metrics: m, Budget: rb, Upstream: "b"}},
		{"tracer", backoff.RetrierConfig{Policy: policy, Tracer: newRecorder().tracer}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRetrier(t, tc.cfg)
			ctx := context.Background()
			hits := 0
			op := func(context.Context) error { hits++; return nil }
			if allocs := testing.AllocsPerRun(1000, func() { _ = r.Do(ctx, op) }); allocs != 0 {
				t.Errorf("%v allocs per successful call", allocs)
			}
			if _, err := backoff.Retry(ctx, r, func(context.Context) (int, error) { return 1, nil }); err != nil {
				t.Fatal(err)
			}
			if allocs := testing.AllocsPerRun(1000, func() {
				_, _ = backoff.Retry(ctx, r, func(context.Context) (int, error) { return 1, nil })
			}); allocs != 0 {
				t.Errorf("%v allocs per successful Retry", allocs)
			}
			if hits == 0 {
				t.Fatal("operation never ran")
			}
		})
	}
}

func TestConfigErrorMessage(t *testing.T) {
	_, err := backoff.New(backoff.Config{Strategy: backoff.FullJitter, Base: 2 * s, Cap: s})
	if err == nil || !strings.Contains(err.Error(), "cap: 1s is below base 2s") {
		t.Fatalf("error = %v", err)
	}
}

func TestRetriesDoNotAllocate(t *testing.T) {
	m, err := backoff.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range backoff.Strategies() {
		r := newRetrier(t, backoff.RetrierConfig{
			Policy:  backoff.MustNew(backoff.Config{Strategy: st, Base: ms, Cap: s, MaxAttempts: 10}),
			Metrics: m, Upstream: st.String(), Clock: noSleep{},
		})
		ctx := context.Background()
		call := func() {
			n := 0
			err := r.Do(ctx, func(context.Context) error {
				if n++; n <= 3 {
					return errTransient
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		// Warm up: the native histogram allocates the first time a
		// bucket is used.
		for range 20000 {
			call()
		}
		allocs := testing.AllocsPerRun(200, call)
		if allocs != 0 {
			t.Errorf("%v: %v allocs per call with three retries", st, allocs)
		}
	}
}
