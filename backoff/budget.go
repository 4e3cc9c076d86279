package backoff

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Budget limits retries across the calls of a [Retrier], so that retries
// cannot multiply load on an upstream that is already failing.
// Implementations must be safe for concurrent use and should not allocate.
type Budget interface {
	// Begin records the start of a call, before its first attempt.
	Begin()
	// Retry reports whether a retry after the failed attempt's err may be
	// made, and if so charges it to the budget.
	Retry(err error) bool
	// Succeeded records a successful call. retryErr is the error that led
	// to the last retry, or nil if the first attempt succeeded.
	Succeeded(retryErr error)
}

// Defaults of [TokenBucketConfig], those of the AWS SDK for Go v2
// (aws/retry: RetryRateTokens, RetryCost, RetryTimeoutCost,
// NoRetryIncrement).
const (
	DefaultTokenBucketCapacity = 500
	DefaultRetryCost           = 5
	DefaultTimeoutRetryCost    = 10
	DefaultSuccessIncrement    = 1
)

// TokenBucketConfig configures a [TokenBucket]. Zero fields take the
// defaults of the AWS SDK for Go v2.
type TokenBucketConfig struct {
	// Capacity is the number of tokens of a full bucket; it starts full.
	// Default 500.
	Capacity int
	// RetryCost is taken for each retry. Default 5.
	RetryCost int
	// TimeoutCost is taken for each retry after a timeout (see
	// [IsTimeout]). Default 10.
	TimeoutCost int
	// SuccessIncrement is returned to the bucket when a call succeeds at
	// its first attempt. Default 1. A call that succeeds after retries
	// gets the cost of its last retry back instead.
	SuccessIncrement int
}

// TokenBucket is the retry quota of the AWS SDK for Go v2: a bucket of 500
// tokens, 5 per retry, 10 per retry of a timeout, refilled by 1 for each call
// that succeeds at once and by the retry's cost for a call that succeeds
// after retrying. While the bucket holds fewer tokens than a retry costs,
// retries are denied and only first attempts go out, so a fleet of clients
// cannot amplify an outage. It is lock-free.
type TokenBucket struct {
	capacity, retryCost, timeoutCost, success int64
	tokens                                    atomic.Int64
}

// NewTokenBucket returns a full bucket configured by cfg.
func NewTokenBucket(cfg TokenBucketConfig) (*TokenBucket, error) {
	fields := []struct {
		name string
		v    *int
		def  int
	}{
		{"capacity", &cfg.Capacity, DefaultTokenBucketCapacity},
		{"retryCost", &cfg.RetryCost, DefaultRetryCost},
		{"timeoutCost", &cfg.TimeoutCost, DefaultTimeoutRetryCost},
		{"successIncrement", &cfg.SuccessIncrement, DefaultSuccessIncrement},
	}
	for _, f := range fields {
		switch {
		case *f.v < 0:
			return nil, fmt.Errorf("token bucket: %s: %d is negative", f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	if cfg.RetryCost > cfg.Capacity || cfg.TimeoutCost > cfg.Capacity {
		return nil, fmt.Errorf("token bucket: capacity: %d is below the retry cost", cfg.Capacity)
	}
	b := &TokenBucket{
		capacity:    int64(cfg.Capacity),
		retryCost:   int64(cfg.RetryCost),
		timeoutCost: int64(cfg.TimeoutCost),
		success:     int64(cfg.SuccessIncrement),
	}
	b.tokens.Store(b.capacity)
	return b, nil
}

// Tokens returns the number of tokens left.
func (b *TokenBucket) Tokens() int { return int(b.tokens.Load()) }

// Begin implements [Budget]; the bucket does not count calls.
func (b *TokenBucket) Begin() {}

// Retry takes the retry's cost from the bucket if it holds enough tokens.
func (b *TokenBucket) Retry(err error) bool {
	cost := b.cost(err)
	for {
		t := b.tokens.Load()
		if t < cost {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-cost) {
			return true
		}
	}
}

// Succeeded returns tokens to the bucket, up to its capacity.
func (b *TokenBucket) Succeeded(retryErr error) {
	n := b.success
	if retryErr != nil {
		n = b.cost(retryErr)
	}
	for {
		t := b.tokens.Load()
		if t >= b.capacity {
			return
		}
		if b.tokens.CompareAndSwap(t, min(t+n, b.capacity)) {
			return
		}
	}
}

func (b *TokenBucket) cost(err error) int64 {
	if IsTimeout(err) {
		return b.timeoutCost
	}
	return b.retryCost
}

// Defaults of [RatioBudgetConfig].
const (
	// DefaultRetryRatio is the SRE book's per-client retry budget: retries
	// stay below 10% of requests.
	DefaultRetryRatio = 0.1
	// DefaultRatioWindow is the sliding window the ratio is measured over.
	DefaultRatioWindow = 10 * time.Second
)

// ratioSlots is the number of slots the sliding window is divided into.
const ratioSlots = 10

// RatioBudgetConfig configures a [RatioBudget].
type RatioBudgetConfig struct {
	// Ratio is the largest share of retries per call, in (0, 100].
	// Default 0.1.
	Ratio float64
	// Window is the sliding window over which calls and retries are
	// counted, at least 10ms. Default 10s.
	Window time.Duration
	// MinRetries is a number of retries per window allowed regardless of
	// the ratio, so that clients with little traffic can still retry.
	// Default 0.
	MinRetries int
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// RatioBudget is the per-client retry budget of Google's SRE book
// ("Handling Overload"): a retry is allowed while the retries of the last
// Window stay below Ratio (10%) of the calls of that window, plus
// MinRetries. Calls are counted once, however many attempts they make, so
// Ratio bounds rate(backoff_retries_total)/rate(backoff_calls_total).
//
// The ratio can be changed at runtime with [RatioBudget.SetRatio], for
// example from the retryBudget constant of the backoff-constants flag; the
// calls and retries already counted stay in the window.
type RatioBudget struct {
	min   float64
	width int64 // slot width in nanoseconds
	now   func() time.Time

	mu    sync.Mutex
	ratio float64
	slots [ratioSlots]ratioSlot
}

type ratioSlot struct {
	epoch          int64
	calls, retries int64
}

// NewRatioBudget returns an empty budget configured by cfg.
func NewRatioBudget(cfg RatioBudgetConfig) (*RatioBudget, error) {
	switch {
	case cfg.Ratio == 0:
		cfg.Ratio = DefaultRetryRatio
	case !validRatio(cfg.Ratio):
		return nil, fmt.Errorf("ratio budget: ratio: %v is outside (0, 100]", cfg.Ratio)
	}
	switch {
	case cfg.Window == 0:
		cfg.Window = DefaultRatioWindow
	case cfg.Window < 10*time.Millisecond:
		return nil, fmt.Errorf("ratio budget: window: %v is below 10ms", cfg.Window)
	}
	if cfg.MinRetries < 0 {
		return nil, fmt.Errorf("ratio budget: minRetries: %d is negative", cfg.MinRetries)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &RatioBudget{
		ratio: cfg.Ratio,
		min:   float64(cfg.MinRetries),
		width: int64(cfg.Window) / ratioSlots,
		now:   cfg.Now,
	}, nil
}

// validRatio reports whether r lies in (0, 100].
func validRatio(r float64) bool { return r > 0 && r <= 100 } // false for NaN

// Ratio returns the ratio in force.
func (b *RatioBudget) Ratio() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ratio
}

// SetRatio replaces the ratio, which must lie in (0, 100]. It takes effect
// at the next [RatioBudget.Retry]: the calls and retries of the current
// window are kept, so lowering the ratio can deny retries at once and
// raising it allows more at once. It is safe to call while retries are
// being decided.
func (b *RatioBudget) SetRatio(r float64) error {
	if !validRatio(r) {
		return fmt.Errorf("ratio budget: ratio: %v is outside (0, 100]", r)
	}
	b.mu.Lock()
	b.ratio = r
	b.mu.Unlock()
	return nil
}

// slot returns the current slot, clearing it if it belongs to an older
// epoch. b.mu must be held.
func (b *RatioBudget) slot(epoch int64) *ratioSlot {
	s := &b.slots[((epoch%ratioSlots)+ratioSlots)%ratioSlots]
	if s.epoch != epoch {
		*s = ratioSlot{epoch: epoch}
	}
	return s
}

func (b *RatioBudget) epoch() int64 { return b.now().UnixNano() / b.width }

// Begin counts a call.
func (b *RatioBudget) Begin() {
	e := b.epoch()
	b.mu.Lock()
	b.slot(e).calls++
	b.mu.Unlock()
}

// Retry allows the retry if the window's retries are below Ratio·calls +
// MinRetries, and counts it.
func (b *RatioBudget) Retry(error) bool {
	e := b.epoch()
	b.mu.Lock()
	defer b.mu.Unlock()
	calls, retries := b.sum(e)
	if float64(retries) >= b.ratio*float64(calls)+b.min {
		return false
	}
	b.slot(e).retries++
	return true
}

// Succeeded implements [Budget]; the ratio does not depend on outcomes.
func (b *RatioBudget) Succeeded(error) {}

// Counts returns the calls and retries counted in the current window.
func (b *RatioBudget) Counts() (calls, retries int64) {
	e := b.epoch()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sum(e)
}

func (b *RatioBudget) sum(epoch int64) (calls, retries int64) {
	for i := range b.slots {
		if s := &b.slots[i]; s.epoch > epoch-ratioSlots && s.epoch <= epoch {
			calls += s.calls
			retries += s.retries
		}
	}
	return calls, retries
}
