// Package eval evaluates flagd flag definitions in process, with flagd's
// semantics: flag states, variants, default variants (including none),
// JsonLogic targeting with flagd's custom operations (fractional, sem_ver,
// starts_with, ends_with), shared $evaluators, flag and flag-set metadata,
// and flagd's reasons and error codes.
//
// A Set is compiled once per flag-file version and is immutable, so any
// number of goroutines may evaluate it concurrently.
//
// What it follows: flagd's specification and its conformance suite
// (flagd-testbed 3.9.0, every evaluator scenario of the current fractional
// hashing), and where those leave a behaviour open, flagd's JavaScript
// evaluator @openfeature/flagd-core 4.0.1 on json-logic-engine 5.0.7, which
// a differential test compares it with. In particular:
//
//   - A missing flag is FLAG_NOT_FOUND; a DISABLED flag resolves to the
//     caller's default with reason DISABLED. Without targeting (absent or
//     {}) the default variant is served with reason STATIC; without a
//     default variant (null, absent or "") the caller's default, reason
//     DEFAULT.
//   - Targeting sees the context plus "$flagd.flagKey" and
//     "$flagd.timestamp"; "$ref" names a shared evaluator. Any result names
//     a variant by its JavaScript string form (true, 1, "x") with reason
//     TARGETING_MATCH; null falls back to the default variant (or the
//     caller's default) with reason DEFAULT; a name that is not a variant
//     is GENERAL.
//   - An unknown operation, an object with several keys, a $ref to no
//     evaluator, or a sub-rule on constants that fails (it is evaluated
//     when the rule compiles) is PARSE_ERROR. A failure while evaluating
//     (arithmetic on a non-number, a comparison of a number with a
//     non-numeric string, "in" on a number) is GENERAL.
//   - Comparisons: "===" and "!==" compare type and value; the others
//     compare two strings (or nulls) as strings and everything else as
//     numbers, failing when a side is not numeric; null equals 0. As in the
//     reference's compiled rules, an operand read by "var", "and" or "or"
//     on the right-hand side is checked only against itself, so
//     {"==": ["x", {"var": "n"}]} with n = 0 is false where
//     {"==": [{"var": "n"}, "x"]} fails.
//   - Below an "if" of fewer than three arguments the reference's
//     interpreter applies, and so here: comparisons check both sides, "cat"
//     skips nulls, "all" of null is false, "var" returns a null it finds,
//     "/" accepts "0" as divisor, one-element argument lists of "+", "-",
//     "!", "!!" and "cat" are their argument.
//   - Truthiness is JavaScript's, except that [] and {} are false. "in" is
//     strict membership in an array or substring search in a string. "cat"
//     joins JavaScript string forms: null is "null", numbers as JavaScript
//     prints them, arrays joined by commas. "var" paths split at dots (a
//     backslash escapes one), index arrays and strings, and fall back to
//     the default on null.
//   - flagd's operations return null on input they cannot use, which a
//     condition takes as false: fractional without a string bucketing value
//     and without a targeting key, with a weight that is not an integer, or
//     with all weights zero; sem_ver with other than three arguments, an
//     unknown operator or a version it cannot read; starts_with and
//     ends_with on non-strings.
//   - fractional uses flagd's high-precision bucketing (32-bit MurmurHash3
//     of the UTF-8 bucketing value, (hash * total weight) >> 32), bucketing
//     by flag key + targeting key by default, negative weights counting as
//     zero, variant names and weights that may be expressions.
//   - sem_ver reads any value by its string form (numbers included), strips
//     one "v" or "V", completes "1" and "1.2" with zeros, accepts "=", "!=",
//     "<", "<=", ">", ">=", "^" (same major) and "~" (same major and minor),
//     orders pre-releases below releases and ignores build metadata.
//
// Not followed: flagd's deprecated "fractionalEvaluation" and the legacy
// float bucketing; operations outside flagd's published targeting schema;
// flagd selectors and multiple sources; var's "../" scope climbing; the
// reference hashes a non-ASCII bucketing value as UTF-16 code units where
// flagd's Go evaluator (and this one) hashes UTF-8 bytes; an integer
// request for a fractional number is TYPE_MISMATCH (flagd truncates).
package eval

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/tailguard/tailguard/flags"
)

// Resolution is the outcome of evaluating one flag.
type Resolution struct {
	// Value is the variant's value: bool, string, float64 (or int64 for
	// integral numbers, see Int), or map[string]any. It is nil when
	// UseDefault is set.
	Value any
	// Variant is the resolved variant name, empty when UseDefault is set.
	Variant string
	Reason  openfeature.Reason
	// ErrorCode is empty unless the evaluation failed.
	ErrorCode    openfeature.ErrorCode
	ErrorMessage string
	// UseDefault means the caller's default value applies: the flag is
	// disabled, has no default variant, or could not be evaluated.
	UseDefault bool
	// Metadata is the flag-set metadata overlaid with the flag's metadata.
	// It is shared; do not modify it.
	Metadata map[string]any
	// Detail says why targeting fell back to the default variant when a
	// custom operation rejected its input (reason DEFAULT, no error code).
	Detail string
}

// Set is a compiled, immutable flag file.
type Set struct {
	flags    map[string]*flag
	metadata map[string]any
	revision int64
}

type flag struct {
	key        string
	disabled   bool
	variants   map[string]value
	defVariant string
	hasDefault bool
	rule       node
	// split is the fast path for the rule tailguard writes itself, a
	// top-level fractional over literal variants and integer weights with
	// flagd's default bucketing; it gives the same answers as rule.
	split *fastSplit
	// broken is set when the flag cannot be evaluated (an unresolvable
	// $ref in a file that skipped validation): PARSE_ERROR, as flagd.
	broken      error
	metadata    map[string]any
	fingerprint [sha256.Size]byte
}

// value is a decoded variant value.
type value struct {
	v     any // bool, string, float64 or map[string]any
	isInt bool
	i     int64
}

// Compile prepares a validated document for evaluation. Flags whose
// targeting cannot be prepared still compile and resolve to PARSE_ERROR.
func Compile(doc *flags.Document) (*Set, error) {
	return CompileEach(doc, nil)
}

// CompileEach is Compile for a document whose flags were judged one by one
// (flags.Validator.ParseEach): the flags named in invalid resolve to
// PARSE_ERROR with the given reason; the others are served.
func CompileEach(doc *flags.Document, invalid map[string]string) (*Set, error) {
	if doc == nil {
		return nil, errors.New("compile flags: no document")
	}
	s := &Set{
		flags:    make(map[string]*flag, len(doc.Flags)),
		metadata: map[string]any{},
		revision: doc.Revision(),
	}
	setMeta := map[string]any{}
	for k, v := range doc.Metadata {
		if strings.HasPrefix(k, "$") {
			continue
		}
		s.metadata[k] = v
		if k != flags.RevisionKey {
			setMeta[k] = v
		}
	}
	setMetaJSON, err := json.Marshal(setMeta)
	if err != nil {
		return nil, fmt.Errorf("compile flags: metadata: %w", err)
	}
	for key, def := range doc.Flags {
		if msg, bad := invalid[key]; bad {
			s.flags[key] = &flag{key: key, broken: errors.New(msg), metadata: maps.Clone(s.metadata)}
			continue
		}
		s.flags[key] = compileFlag(doc, key, def, s.metadata, setMetaJSON)
	}
	return s, nil
}

// Broken returns the flags that cannot be evaluated (they resolve to
// PARSE_ERROR) with the reason, or nil.
func (s *Set) Broken() map[string]string {
	var out map[string]string
	for k, f := range s.flags {
		if f.broken != nil {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = f.broken.Error()
		}
	}
	return out
}

// Keep returns a copy of s in which each flag named in keys is taken from
// old, where old has a version of it that can be evaluated: the last good
// version of a flag that turned invalid keeps being served. It returns the
// keys it took from old.
func (s *Set) Keep(old *Set, keys []string) (*Set, []string) {
	if old == nil || len(keys) == 0 {
		return s, nil
	}
	out := &Set{flags: maps.Clone(s.flags), metadata: s.metadata, revision: s.revision}
	var kept []string
	for _, k := range keys {
		if f, ok := old.flags[k]; ok && f.broken == nil {
			out.flags[k] = f
			kept = append(kept, k)
		}
	}
	slices.Sort(kept)
	return out, kept
}

func compileFlag(doc *flags.Document, key string, def *flags.Flag, setMeta map[string]any, setMetaJSON []byte) *flag {
	f := &flag{
		key:      key,
		disabled: def.State == flags.StateDisabled,
		variants: make(map[string]value, len(def.Variants)),
		metadata: maps.Clone(setMeta),
	}
	maps.Copy(f.metadata, def.Metadata)
	f.defVariant, f.hasDefault = def.Default()
	for name, raw := range def.Variants {
		v, err := decodeValue(raw)
		if err != nil {
			f.broken = fmt.Errorf("variant %q: %w", name, err)
			continue
		}
		f.variants[name] = v
	}
	if f.hasDefault && f.defVariant == "" {
		// flagd treats an empty default variant as none.
		f.hasDefault = false
	}
	rule, err := doc.ResolveTargeting(key)
	if err != nil {
		f.broken = err
	} else if rule != nil {
		if f.rule, err = compileLogic(rule); err != nil {
			f.broken = fmt.Errorf("targeting: %w", err)
		}
		f.split = compileSplit(rule)
	}
	h := sha256.New()
	defJSON, _ := json.Marshal(def)
	ruleJSON, _ := json.Marshal(rule)
	for _, part := range [][]byte{defJSON, ruleJSON, setMetaJSON} {
		h.Write(part)
		h.Write([]byte{0})
	}
	copy(f.fingerprint[:], h.Sum(nil))
	return f
}

func decodeValue(raw json.RawMessage) (value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return value{}, err
	}
	if n, ok := v.(json.Number); ok {
		f, err := n.Float64()
		if err != nil {
			return value{}, err
		}
		out := value{v: f}
		// Integers keep full int64 precision; "10.0" stays a float.
		if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			out.isInt, out.i = true, i
		}
		return out, nil
	}
	return value{v: numbersToFloat(v)}, nil
}

// numbersToFloat replaces json.Number inside objects with float64.
func numbersToFloat(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbersToFloat(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = numbersToFloat(e)
		}
		return x
	default:
		return v
	}
}

// Revision returns the flag file revision the set was compiled from.
func (s *Set) Revision() int64 { return s.revision }

// Keys returns the flag keys in sorted order.
func (s *Set) Keys() []string {
	return slices.Sorted(maps.Keys(s.flags))
}

// Metadata returns the flag-set metadata. It is shared; do not modify it.
func (s *Set) Metadata() map[string]any { return s.metadata }

// Changed returns the keys of flags added, removed or changed from old to
// s, sorted. A flag counts as changed when its definition, its resolved
// targeting (including shared evaluators) or the flag-set metadata other
// than the revision changed.
func (s *Set) Changed(old *Set) []string {
	var out []string
	for k, f := range s.flags {
		if old == nil {
			out = append(out, k)
			continue
		}
		if o, ok := old.flags[k]; !ok || o.fingerprint != f.fingerprint {
			out = append(out, k)
		}
	}
	if old != nil {
		for k := range old.flags {
			if _, ok := s.flags[k]; !ok {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Resolve evaluates flag key for the evaluation context evalCtx (as
// flattened by OpenFeature: attributes plus "targetingKey") at time now,
// which flagd exposes to rules as $flagd.timestamp.
func (s *Set) Resolve(key string, evalCtx map[string]any, now time.Time) Resolution {
	f, ok := s.flags[key]
	if !ok {
		return Resolution{
			Reason:       openfeature.ErrorReason,
			ErrorCode:    openfeature.FlagNotFoundCode,
			ErrorMessage: fmt.Sprintf("flag %q not found", key),
			UseDefault:   true,
			Metadata:     s.metadata,
		}
	}
	if f.disabled {
		return Resolution{Reason: openfeature.DisabledReason, UseDefault: true, Metadata: f.metadata}
	}
	if f.broken != nil {
		return f.failure(openfeature.ParseErrorCode, f.broken.Error())
	}
	if f.rule == nil {
		return f.defaultResolution(openfeature.StaticReason)
	}
	if f.split != nil {
		return f.resolveSplit(evalCtx)
	}
	e := &env{root: evaluationData(f.key, evalCtx, now)}
	out, err := f.rule.eval(e.root, e)
	if err != nil {
		return f.failure(openfeature.GeneralCode, "evaluate targeting: "+err.Error())
	}
	if out == nil {
		r := f.defaultResolution(openfeature.DefaultReason)
		r.Detail = e.detail
		return r
	}
	// Like flagd, any result names a variant by its string form.
	name := jsString(out)
	v, ok := f.variants[name]
	if !ok {
		return f.failure(openfeature.GeneralCode, fmt.Sprintf("targeting returned variant %q, which is not defined", name))
	}
	return Resolution{Value: v.export(), Variant: name, Reason: openfeature.TargetingMatchReason, Metadata: f.metadata}
}

// fastSplit is a fractional rule with literal buckets: variant names and
// cumulative weights.
type fastSplit struct {
	names []string
	ends  []int64
	total int64
}

// compileSplit recognises {"fractional": [["a", 25], ["b", 75], ...]}
// (no bucketing expression, string variants, non-negative integer
// weights, or none meaning 1) and returns nil for anything else.
func compileSplit(rule any) *fastSplit {
	m, ok := rule.(map[string]any)
	if !ok || len(m) != 1 {
		return nil
	}
	args, ok := m[opFractional].([]any)
	if !ok || len(args) == 0 {
		return nil
	}
	s := &fastSplit{}
	for _, a := range args {
		b, ok := a.([]any)
		if !ok || len(b) == 0 || len(b) > 2 {
			return nil
		}
		name, ok := b[0].(string)
		if !ok {
			return nil
		}
		w := int64(1)
		if len(b) == 2 {
			f, ok := b[1].(float64)
			if !ok || f < 0 || f != float64(int64(f)) || f > math.MaxInt32 {
				return nil
			}
			w = int64(f)
		}
		s.total += w
		s.names = append(s.names, name)
		s.ends = append(s.ends, s.total)
	}
	if s.total == 0 || s.total > math.MaxInt32 {
		return nil
	}
	return s
}

func (f *flag) resolveSplit(evalCtx map[string]any) Resolution {
	tk, _ := evalCtx["targetingKey"].(string)
	if tk == "" {
		r := f.defaultResolution(openfeature.DefaultReason)
		r.Detail = opFractional + ": no bucketing value and no targetingKey in the evaluation context"
		return r
	}
	point := Bucket(f.key+tk, f.split.total)
	for i, end := range f.split.ends {
		if point < end {
			name := f.split.names[i]
			v, ok := f.variants[name]
			if !ok {
				return f.failure(openfeature.GeneralCode, fmt.Sprintf("targeting returned variant %q, which is not defined", name))
			}
			return Resolution{Value: v.export(), Variant: name, Reason: openfeature.TargetingMatchReason, Metadata: f.metadata}
		}
	}
	return f.failure(openfeature.GeneralCode, "fractional: no bucket selected")
}

func (f *flag) defaultResolution(reason openfeature.Reason) Resolution {
	if !f.hasDefault {
		return Resolution{Reason: openfeature.DefaultReason, UseDefault: true, Metadata: f.metadata}
	}
	v, ok := f.variants[f.defVariant]
	if !ok {
		return f.failure(openfeature.GeneralCode, fmt.Sprintf("default variant %q is not defined", f.defVariant))
	}
	return Resolution{Value: v.export(), Variant: f.defVariant, Reason: reason, Metadata: f.metadata}
}

func (f *flag) failure(code openfeature.ErrorCode, msg string) Resolution {
	return Resolution{
		Reason:       openfeature.ErrorReason,
		ErrorCode:    code,
		ErrorMessage: fmt.Sprintf("flag %q: %s", f.key, msg),
		UseDefault:   true,
		Metadata:     f.metadata,
	}
}

func describe(v any) string {
	b, err := json.Marshal(v)
	if err != nil || len(b) > 80 {
		return fmt.Sprintf("a %T", v)
	}
	return string(b)
}

// export returns the value for a caller; objects are copied so callers
// cannot modify the compiled set.
func (v value) export() any {
	if v.isInt {
		return v.i
	}
	return deepCopy(v.v)
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	default:
		return v
	}
}
