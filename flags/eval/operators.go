package eval

import (
	"fmt"
	"math"
	"regexp"
	"strings"

	"github.com/twmb/murmur3"
	"golang.org/x/mod/semver"
)

// flagd's custom operations. Like flagd's reference evaluator they return
// null on input they cannot use (recording why in env.detail), so that a
// condition built on them is false and a rule built on them falls back to
// the default variant.
const (
	opFractional = "fractional"
	opSemVer     = "sem_ver"
	opStartsWith = "starts_with"
	opEndsWith   = "ends_with"
)

// reject records why a custom operation returned null.
func (e *env) reject(op, format string, args ...any) (any, error) {
	e.detail = op + ": " + fmt.Sprintf(format, args...)
	return nil, nil
}

// fractional implements flagd's "fractional" operation with flagd's
// current (high-precision) bucketing: the bucketing value is hashed with
// 32-bit MurmurHash3 (x86, seed 0) over its UTF-8 bytes and mapped onto
// [0, total weight) by (hash * total) >> 32; the first bucket whose
// cumulative weight exceeds that point wins. Without a bucketing value
// (the first argument is not a string) the flag key and the targeting key
// are concatenated. Weights must be integers; negative ones count as zero;
// the total must be 1..MaxInt32.
func fractional(args []any, _ any, e *env) (any, error) {
	if len(args) == 0 {
		return e.reject(opFractional, "no buckets")
	}
	var key string
	buckets := args
	if s, ok := args[0].(string); ok {
		key, buckets = s, args[1:]
	} else {
		tk, _ := e.root["targetingKey"].(string)
		if tk == "" {
			return e.reject(opFractional, "no bucketing value and no targetingKey in the evaluation context")
		}
		props, _ := e.root[flagdKey].(map[string]any)
		fk, _ := props["flagKey"].(string)
		key = fk + tk
	}
	var total int64
	weights := make([]int64, len(buckets))
	variants := make([]any, len(buckets))
	for i, a := range buckets {
		b, ok := a.([]any)
		if !ok || len(b) == 0 || len(b) > 2 {
			return e.reject(opFractional, "bucket %d must be [variant] or [variant, weight], got %s", i+1, describe(a))
		}
		switch b[0].(type) {
		case string, bool, float64, nil:
			variants[i] = b[0]
		default:
			return e.reject(opFractional, "bucket %d: variant must be a string, boolean, number or null, got %s", i+1, describe(b[0]))
		}
		w := int64(1)
		if len(b) == 2 {
			f, ok := b[1].(float64)
			if !ok || f != math.Trunc(f) || math.IsInf(f, 0) {
				return e.reject(opFractional, "bucket %d: weight must be an integer, got %s", i+1, describe(b[1]))
			}
			w = int64(max(f, 0))
			if f > math.MaxInt32 {
				w = math.MaxInt32 + 1
			}
		}
		weights[i] = w
		total += w
	}
	if total > math.MaxInt32 {
		return e.reject(opFractional, "weights sum to %d, more than %d", total, math.MaxInt32)
	}
	point := Bucket(key, total)
	var end int64
	for i, w := range weights {
		end += w
		if end > point {
			return variants[i], nil
		}
	}
	return e.reject(opFractional, "all weights are zero")
}

// Bucket maps a bucketing value onto [0, total) exactly as flagd does:
// (murmur3_32(value) * total) >> 32.
func Bucket(value string, total int64) int64 {
	h := murmur3.StringSum32(value)
	return int64((uint64(h) * uint64(total)) >> 32)
}

// semverFull is a complete semantic version (node-semver's FULL form with
// the optional "v" it allows after flagd strips one "v" or "V").
var semverFull = regexp.MustCompile(`^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][a-zA-Z0-9-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][a-zA-Z0-9-]*))*))?` +
	`(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$`)

// semverPartial is "1" or "1.2", completed with zeros.
var semverPartial = regexp.MustCompile(`^\d+(\.\d+)?$`)

// semverArg normalises a sem_ver operand as flagd does: any value as its
// string form (numbers included), one leading "v" or "V" stripped,
// surrounding white space ignored, partial versions completed with zeros.
// It returns the version with a "v" prefix for x/mod/semver, or "".
func semverArg(v any) string {
	s := jsString(v)
	if strings.HasPrefix(s, "v") || strings.HasPrefix(s, "V") {
		s = s[1:]
	}
	if t := strings.TrimSpace(s); semverFull.MatchString(t) {
		return "v" + strings.TrimPrefix(t, "v")
	}
	if semverPartial.MatchString(s) {
		full := s + ".0"
		if !strings.Contains(s, ".") {
			full += ".0"
		}
		if semverFull.MatchString(full) {
			return "v" + full
		}
	}
	return ""
}

// semVer implements flagd's "sem_ver": [version, operator, version] with
// "=", "!=", "<", "<=", ">", ">=", "^" (same major) and "~" (same major and
// minor); build metadata is ignored and pre-releases order below releases.
func semVer(args []any, _ any, e *env) (any, error) {
	if len(args) != 3 {
		return e.reject(opSemVer, "arguments must be [version, operator, version], got %d", len(args))
	}
	a, b := semverArg(args[0]), semverArg(args[2])
	if a == "" || b == "" {
		return e.reject(opSemVer, "%s or %s is not a semantic version", describe(args[0]), describe(args[2]))
	}
	c := semver.Compare(a, b)
	switch jsString(args[1]) {
	case "=":
		return c == 0, nil
	case "!=":
		return c != 0, nil
	case "<":
		return c < 0, nil
	case "<=":
		return c <= 0, nil
	case ">":
		return c > 0, nil
	case ">=":
		return c >= 0, nil
	case "^":
		return semver.Major(a) == semver.Major(b), nil
	case "~":
		return semver.MajorMinor(a) == semver.MajorMinor(b), nil
	}
	return e.reject(opSemVer, "unknown operator %s", describe(args[1]))
}

// stringCompare implements starts_with and ends_with.
func stringCompare(op string, match func(s, affix string) bool) eagerFunc {
	return func(args []any, _ any, e *env) (any, error) {
		if len(args) != 2 {
			return e.reject(op, "arguments must be [value, string], got %d", len(args))
		}
		s, ok1 := args[0].(string)
		affix, ok2 := args[1].(string)
		if !ok1 || !ok2 {
			return e.reject(op, "both arguments must be strings, got %s and %s", describe(args[0]), describe(args[1]))
		}
		return match(s, affix), nil
	}
}
