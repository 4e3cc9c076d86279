package backoff

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Reason says why a [Retrier] stopped without success.
type Reason uint8

// The reasons. Their String values are the result label values of
// backoff_calls_total.
const (
	// ReasonExhausted: MaxAttempts attempts were made.
	ReasonExhausted Reason = iota + 1
	// ReasonPermanent: the operation returned a [Permanent] error.
	ReasonPermanent
	// ReasonBudgetDenied: the retry [Budget] refused a retry.
	ReasonBudgetDenied
	// ReasonContext: the context was cancelled or its deadline passed.
	ReasonContext
	// ReasonMaxElapsed: the next delay would have exceeded MaxElapsed.
	ReasonMaxElapsed

	numReasons = int(ReasonMaxElapsed) + 1
)

// resultSuccess is the result label value of a successful call; it shares
// the index 0 with the invalid Reason.
const resultSuccess = "success"

var reasonNames = [numReasons]string{
	0:                  resultSuccess,
	ReasonExhausted:    "exhausted",
	ReasonPermanent:    "permanent",
	ReasonBudgetDenied: "budget_denied",
	ReasonContext:      "context",
	ReasonMaxElapsed:   "max_elapsed",
}

// Sentinel errors, one per [Reason]; an *[Error] matches its reason's
// sentinel with errors.Is.
var (
	ErrExhausted    = errors.New("retry attempts exhausted")
	ErrPermanent    = errors.New("permanent error")
	ErrBudgetDenied = errors.New("retry budget denied")
	ErrContextDone  = errors.New("context done")
	ErrMaxElapsed   = errors.New("max elapsed time reached")
)

var reasonErrs = [numReasons]error{
	ReasonExhausted:    ErrExhausted,
	ReasonPermanent:    ErrPermanent,
	ReasonBudgetDenied: ErrBudgetDenied,
	ReasonContext:      ErrContextDone,
	ReasonMaxElapsed:   ErrMaxElapsed,
}

// String returns the reason as used in the result label, for example
// "budget_denied".
func (r Reason) String() string {
	if r > 0 && int(r) < numReasons {
		return reasonNames[r]
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// Error is returned by [Retrier.Do] when it gives up. It matches the
// sentinel of its Reason, the last operation error and, for ReasonContext,
// the context's error (context.Canceled, context.DeadlineExceeded or the
// cancellation cause) with errors.Is and errors.As.
type Error struct {
	// Reason says why retrying stopped.
	Reason Reason
	// Attempts is the number of attempts made.
	Attempts int
	// Err is the last error returned by the operation (unwrapped from
	// [Permanent]), or nil if it never ran.
	Err error
	// Cause is the context's cause for ReasonContext, nil otherwise.
	Cause error
}

func (e *Error) Error() string {
	var s string
	if int(e.Reason) < numReasons && e.Reason > 0 {
		s = reasonErrs[e.Reason].Error()
	} else {
		s = "retry stopped: " + e.Reason.String()
	}
	s += " after " + strconv.Itoa(e.Attempts) + " attempt"
	if e.Attempts != 1 {
		s += "s"
	}
	if e.Cause != nil {
		s += " (" + e.Cause.Error() + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the reason's sentinel, the context cause if any and the
// last operation error if any.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 3)
	if e.Reason > 0 && int(e.Reason) < numReasons {
		errs = append(errs, reasonErrs[e.Reason])
	}
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// PermanentError marks an error that must not be retried. See [Permanent].
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that a [Retrier] stops at once. Permanent(nil) is
// nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// RetryAfterError carries a server-requested minimum delay, such as an HTTP
// Retry-After header. See [RetryAfter].
type RetryAfterError struct {
	Err   error
	Delay time.Duration
}

func (e *RetryAfterError) Error() string {
	return e.Err.Error() + " (retry after " + e.Delay.String() + ")"
}

func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter wraps err with a minimum delay before the next attempt. The
// delay chosen by the policy is raised to d, but never beyond the policy's
// Cap. RetryAfter(nil, d) is nil.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &RetryAfterError{Err: err, Delay: d}
}

// find walks err's tree depth-first, like errors.As, and returns the first
// error for which match reports true. Unlike errors.As it does not need a
// heap-allocated target.
func find(err error, match func(error) bool) bool {
	for err != nil {
		if match(err) {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if find(e, match) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// asPermanent returns the first *PermanentError in err's tree.
func asPermanent(err error) (p *PermanentError) {
	find(err, func(e error) bool {
		var ok bool
		p, ok = e.(*PermanentError)
		return ok
	})
	return p
}

// retryAfter returns the delay of the first *RetryAfterError in err's tree,
// and whether there was one.
func retryAfter(err error) (d time.Duration, ok bool) {
	find(err, func(e error) bool {
		if ra, is := e.(*RetryAfterError); is {
			d, ok = ra.Delay, true
			return true
		}
		return false
	})
	return d, ok
}

// IsTimeout reports whether err is a timeout: context.DeadlineExceeded or
// an error with a Timeout() bool method returning true (such as net.Error).
// [TokenBucket] charges timeouts more.
func IsTimeout(err error) bool {
	return find(err, func(e error) bool {
		if e == context.DeadlineExceeded {
			return true
		}
		t, ok := e.(interface{ Timeout() bool })
		return ok && t.Timeout()
	})
}
