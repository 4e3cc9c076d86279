package eval

import (
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/diegoholiveira/jsonlogic/v3"
	"github.com/twmb/murmur3"
	"golang.org/x/mod/semver"
)

// Operator names. The flagd operations keep flagd's names; the internal
// ones start with "$tg." so they cannot collide with anything a flag file
// may use (the validator rejects unknown operators).
const (
	opFractional = "fractional"
	opSemVer     = "sem_ver"
	opStartsWith = "starts_with"
	opEndsWith   = "ends_with"
	opIf         = "$tg.if"
	opAnd        = "$tg.and"
	opOr         = "$tg.or"
	opBucket     = "$tg.bucket"
)

// registerOnce guards jsonlogic.AddOperator. jsonlogic keeps its custom
// operators in a package-level map that it writes without locking and
// reads on every evaluation, so registration must happen exactly once and
// before any evaluation: every entry point calls registerOperators, and
// sync.Once orders the writes before all later reads. This is the one
// package-level variable in tailguard's flag code and exists only because
// the library's registry is itself global. Other code in the same process
// that calls jsonlogic.AddOperator while flags are being evaluated races
// with us; tailguard does not.
var registerOnce sync.Once

func registerOperators() {
	registerOnce.Do(func() {
		jsonlogic.AddOperator(opFractional, fractional)
		jsonlogic.AddOperator(opSemVer, semVer)
		jsonlogic.AddOperator(opStartsWith, func(v, _ any) any { return stringCompare(opStartsWith, v, strings.HasPrefix) })
		jsonlogic.AddOperator(opEndsWith, func(v, _ any) any { return stringCompare(opEndsWith, v, strings.HasSuffix) })
		jsonlogic.AddOperator(opIf, lazyIf)
		jsonlogic.AddOperator(opAnd, lazyAnd)
		jsonlogic.AddOperator(opOr, lazyOr)
		jsonlogic.AddOperator(opBucket, makeBucket)
	})
}

// opError aborts a targeting evaluation. flagd's custom operations resolve
// to null on bad input, and the evaluation then falls back to the default
// variant with reason DEFAULT rather than taking some other branch on a
// null condition. Operators panic with an opError; jsonlogic converts the
// panic into an error at its entry point, which Resolve maps to the
// default variant.
type opError struct {
	op, msg string
}

func (e opError) Error() string { return e.op + ": " + e.msg }

func fail(op, format string, args ...any) {
	panic(opError{op: op, msg: fmt.Sprintf(format, args...)})
}

// apply evaluates a rule. jsonlogic.ApplyInterface is the only entry point
// that takes decoded values (Apply and ApplyRaw re-encode JSON on every
// call); it recovers panics into errors, which are re-raised here so they
// reach the outermost evaluation.
func apply(rule, data any) any {
	//lint:ignore SA1019 the only jsonlogic entry point that evaluates decoded rules without a JSON round trip.
	out, err := jsonlogic.ApplyInterface(rule, data)
	if err != nil {
		panic(err)
	}
	return out
}

// truthy is JsonLogic truthiness: false, 0, "", [] and null are false.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0 && !math.IsNaN(x)
	case int:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	default:
		return true
	}
}

// unwrap returns the rule a rewrite wrapped in a one-element array to keep
// jsonlogic from evaluating it eagerly.
func unwrap(v any) any {
	if w, ok := v.([]any); ok && len(w) == 1 {
		return w[0]
	}
	return v
}

// lazyIf is JsonLogic "if" evaluating only the conditions and the branch
// it needs (jsonlogic evaluates every argument first, so an operator error
// in a branch not taken would abort the evaluation).
func lazyIf(values, data any) any {
	args, ok := values.([]any)
	if !ok {
		return values
	}
	n := len(args)
	for i := 0; i+1 < n; i += 2 {
		if truthy(apply(unwrap(args[i]), data)) {
			return apply(unwrap(args[i+1]), data)
		}
	}
	if n%2 == 1 {
		return apply(unwrap(args[n-1]), data)
	}
	return nil
}

// lazyAnd returns the first falsy argument or the last one, evaluating no
// further than needed.
func lazyAnd(values, data any) any {
	args, _ := values.([]any)
	var v any
	for _, a := range args {
		if v = apply(unwrap(a), data); !truthy(v) {
			return v
		}
	}
	return v
}

// lazyOr returns the first truthy argument or the last one.
func lazyOr(values, data any) any {
	args, _ := values.([]any)
	var v any
	for _, a := range args {
		if v = apply(unwrap(a), data); truthy(v) {
			return v
		}
	}
	return v
}

// bucket is one evaluated fractional bucket, [variant, weight] with both
// elements evaluated. It is a distinct type so that fractional can tell a
// bucket from a bucketing value that happens to evaluate to an array.
type bucket struct {
	variant any
	weight  any
	short   bool // [variant] without a weight
}

func makeBucket(values, _ any) any {
	args, _ := values.([]any)
	switch len(args) {
	case 1:
		return bucket{variant: args[0], short: true}
	case 2:
		return bucket{variant: args[0], weight: args[1]}
	default:
		fail(opFractional, "a bucket must be [variant] or [variant, weight], got %d elements", len(args))
		return nil
	}
}

// fractional implements flagd's "fractional" operation with flagd's
// current (high-precision) bucketing: the bucketing value is hashed with
// 32-bit MurmurHash3 (x86, seed 0) and mapped onto [0, total weight) by
// (hash * total) >> 32; the first bucket whose cumulative weight exceeds
// that point wins. Without an explicit bucketing value the flag key and the
// targeting key are concatenated. Computed negative weights count as zero,
// fractional weights are truncated, and the total must be 1..MaxInt32.
func fractional(values, data any) any {
	args, ok := values.([]any)
	if !ok || len(args) == 0 {
		fail(opFractional, "arguments must be an array of buckets")
	}
	var key string
	switch first := args[0].(type) {
	case string:
		key, args = first, args[1:]
	case bucket:
		key = defaultBucketingValue(data)
	case nil:
		// The bucketing expression found nothing (e.g. a missing
		// attribute): fall back to the default, as flagd does.
		key, args = defaultBucketingValue(data), args[1:]
	default:
		fail(opFractional, "bucketing value must be a string, got %T", first)
	}
	if len(args) == 0 {
		fail(opFractional, "no buckets")
	}
	var total int64
	weights := make([]int64, len(args))
	for i, a := range args {
		b, ok := a.(bucket)
		if !ok {
			fail(opFractional, "argument %d is not a bucket", i+1)
		}
		switch b.variant.(type) {
		case string, bool, float64, nil:
		default:
			fail(opFractional, "bucket %d: variant must be a string, boolean, number or null, got %T", i+1, b.variant)
		}
		w := int64(1)
		if !b.short {
			f, ok := b.weight.(float64)
			if !ok || math.IsNaN(f) {
				fail(opFractional, "bucket %d: weight must be a number, got %T", i+1, b.weight)
			}
			switch {
			case f <= 0:
				w = 0
			case f > math.MaxInt32:
				fail(opFractional, "bucket %d: weight %v exceeds %d", i+1, f, math.MaxInt32)
			default:
				w = int64(f)
			}
		}
		weights[i] = w
		total += w
	}
	if total == 0 {
		fail(opFractional, "all weights are zero")
	}
	if total > math.MaxInt32 {
		fail(opFractional, "weights sum to %d, more than %d", total, math.MaxInt32)
	}
	point := Bucket(key, total)
	var end int64
	for i, w := range weights {
		end += w
		if point < end {
			return args[i].(bucket).variant
		}
	}
	fail(opFractional, "no bucket selected")
	return nil
}

// Bucket maps a bucketing value onto [0, total) exactly as flagd does:
// (murmur3_32(value) * total) >> 32.
func Bucket(value string, total int64) int64 {
	h := murmur3.StringSum32(value)
	return int64((uint64(h) * uint64(total)) >> 32)
}

// defaultBucketingValue is $flagd.flagKey concatenated with targetingKey.
func defaultBucketingValue(data any) string {
	m, _ := data.(map[string]any)
	tk, ok := m["targetingKey"].(string)
	if !ok {
		fail(opFractional, "no bucketing value and no targetingKey in the evaluation context")
	}
	props, _ := m[flagdKey].(map[string]any)
	fk, _ := props["flagKey"].(string)
	return fk + tk
}

// semVer implements flagd's "sem_ver": [version, operator, version] with
// "=", "!=", "<", "<=", ">", ">=", "^" (same major) and "~" (same major and
// minor). A leading "v" is optional and partial versions ("1", "1.2") are
// accepted; build metadata is ignored.
func semVer(values, _ any) any {
	args, ok := values.([]any)
	if !ok || len(args) != 3 {
		fail(opSemVer, "arguments must be [version, operator, version]")
	}
	a := semverArg(args[0])
	b := semverArg(args[2])
	op, _ := args[1].(string)
	c := semver.Compare(a, b)
	switch op {
	case "=":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	case "^":
		return semver.Major(a) == semver.Major(b)
	case "~":
		return semver.MajorMinor(a) == semver.MajorMinor(b)
	default:
		fail(opSemVer, "unknown operator %q", args[1])
		return nil
	}
}

func semverArg(v any) string {
	s, ok := v.(string)
	if !ok {
		fail(opSemVer, "version must be a string, got %T", v)
	}
	if !strings.HasPrefix(s, "v") {
		s = "v" + s
	}
	if !semver.IsValid(s) {
		fail(opSemVer, "%q is not a semantic version", s)
	}
	return s
}

// stringCompare implements starts_with and ends_with.
func stringCompare(op string, values any, match func(s, affix string) bool) any {
	args, ok := values.([]any)
	if !ok || len(args) != 2 {
		fail(op, "arguments must be [value, string]")
	}
	s, ok1 := args[0].(string)
	affix, ok2 := args[1].(string)
	if !ok1 || !ok2 {
		fail(op, "both arguments must be strings, got %T and %T", args[0], args[1])
	}
	return match(s, affix)
}
