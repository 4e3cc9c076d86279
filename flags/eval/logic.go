package eval

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
)

// This file is a JsonLogic interpreter with the semantics of flagd's
// reference evaluator (flagd-core on json-logic-engine 5, compiled mode),
// restricted to the operations flagd's targeting schema allows. It replaces
// a general JsonLogic library whose loose comparisons, eager "if" and
// process-wide operator registry gave different answers from flagd.
//
// Values are JSON values as decoded by encoding/json: nil, bool, float64,
// string, []any and map[string]any.

// errUnknownOperator is returned by compileLogic for an operation flagd does
// not know; flagd reports such a flag as PARSE_ERROR.
var errUnknownOperator = errors.New("unknown operator")

// evalError is a failure while evaluating a rule (a non-numeric operand of
// arithmetic, a comparison of incomparable values, an operation applied to a
// value it is not defined on). flagd reports it as GENERAL.
type evalError struct{ msg string }

func (e evalError) Error() string { return e.msg }

func errorf(format string, args ...any) error { return evalError{msg: fmt.Sprintf(format, args...)} }

// node is a compiled rule.
type node interface {
	eval(ctx any, e *env) (any, error)
}

// env is what one evaluation shares: the root data (for $flagd and
// targetingKey, which custom operations read whatever the iteration scope)
// and the reason the last custom operation returned null.
//
// interpreted is set below an "if" with fewer than three arguments: the
// reference compiles rules to JavaScript but hands such an "if" to its
// interpreter, whose comparisons, "cat", "all" and "var" differ in detail
// from the compiled forms.
type env struct {
	root        map[string]any
	detail      string
	interpreted bool
}

type literal struct{ v any }

func (l literal) eval(any, *env) (any, error) { return l.v, nil }

type list []node

func (l list) eval(ctx any, e *env) (any, error) {
	out := make([]any, len(l))
	for i, n := range l {
		v, err := n.eval(ctx, e)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// opFunc evaluates one operation. args are the operation's arguments
// (one element when the rule gave a single non-array argument); expr tells
// whether the single argument was an expression rather than a literal.
type opFunc func(args []node, single bool, ctx any, e *env) (any, error)

type operation struct {
	name   string
	args   []node
	single bool
	fn     opFunc
}

func (o *operation) eval(ctx any, e *env) (any, error) {
	if e.interpreted && len(o.args) == 1 && unaryOptimized(o.name) {
		if _, isList := o.args[0].(list); !isList {
			return o.fn(o.args, true, ctx, e)
		}
	}
	return o.fn(o.args, o.single, ctx, e)
}

// unaryOptimized names the operations whose one-element argument list the
// reference's interpreter treats as the argument itself ({"-": [x]} is
// {"-": x}, so an x that is an array becomes the argument list).
func unaryOptimized(name string) bool {
	switch name {
	case "+", "-", "!", "!!", "cat":
		return true
	}
	return false
}

// compileLogic turns a decoded rule into a node tree. An object with one key
// is an operation; an object with several keys, or with an unknown
// operation, is refused (flagd: PARSE_ERROR); an empty object is data.
func compileLogic(rule any) (node, error) {
	switch x := rule.(type) {
	case []any:
		out := make(list, len(x))
		for i, e := range x {
			n, err := compileLogic(e)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case map[string]any:
		if len(x) == 0 {
			return literal{v: x}, nil
		}
		if len(x) > 1 {
			keys := slices.Sorted(maps.Keys(x))
			return nil, fmt.Errorf("%w: an operation has one key, got %q", errUnknownOperator, keys)
		}
		for name, raw := range x {
			fn, ok := lookupOperation(name)
			if !ok {
				return nil, fmt.Errorf("%w %q", errUnknownOperator, name)
			}
			op := &operation{name: name, fn: fn}
			if arr, isArr := raw.([]any); isArr {
				for _, a := range arr {
					n, err := compileLogic(a)
					if err != nil {
						return nil, err
					}
					op.args = append(op.args, n)
				}
			} else {
				n, err := compileLogic(raw)
				if err != nil {
					return nil, err
				}
				op.args, op.single = []node{n}, true
			}
			if !deterministic(op, false) {
				return op, nil
			}
			// The reference evaluates a sub-rule that reads no data while
			// it compiles, with its interpreter: a failure there makes the
			// whole rule invalid.
			v, err := op.eval(map[string]any{}, &env{root: map[string]any{}, interpreted: true})
			if err != nil {
				return nil, fmt.Errorf("%w: %q on constants: %v", errConstantRule, name, err)
			}
			return literal{v: v}, nil
		}
	}
	return literal{v: rule}, nil
}

// errConstantRule is returned by compileLogic for a sub-rule on constants
// that fails; flagd reports the flag as PARSE_ERROR.
var errConstantRule = errors.New("invalid rule")

// deterministic reports whether a rule reads no evaluation data (and calls
// no flagd operation), as json-logic-engine's isDeterministic: var is data
// except inside an iteration's mapper.
func deterministic(n node, inIteration bool) bool {
	switch x := n.(type) {
	case literal:
		return true
	case list:
		for _, e := range x {
			if !deterministic(e, inIteration) {
				return false
			}
		}
		return true
	case *operation:
		switch x.name {
		case "var":
			return inIteration
		case "missing":
			return !x.single && len(x.args) == 0
		case "missing_some", opFractional, opSemVer, opStartsWith, opEndsWith:
			return false
		case "map", "filter", "all", "some", "none", "reduce":
			if x.single || len(x.args) == 0 {
				return deterministic(list(x.args), inIteration)
			}
			if !deterministic(x.args[0], inIteration) {
				return false
			}
			return deterministic(list(x.args[1:]), true)
		}
		return deterministic(list(x.args), inIteration)
	}
	return false
}

// operation returns the implementation of a flagd targeting operation.
func lookupOperation(name string) (opFunc, bool) {
	switch name {
	case "var":
		return opVar, true
	case "missing":
		return eager(opMissing), true
	case "missing_some":
		return eager(opMissingSome), true
	case "if":
		return opIfThen, true
	case "?:":
		return opIfThen, true
	case "and":
		return opAndOr(false), true
	case "or":
		return opAndOr(true), true
	case "!":
		return eager(func(a []any, _ any, _ *env) (any, error) { return !truthy(first(a)), nil }), true
	case "!!":
		return eager(func(a []any, _ any, _ *env) (any, error) { return truthy(first(a)), nil }), true
	case "==":
		return comparator(cmpEq), true
	case "!=":
		return comparator(cmpNe), true
	case "===":
		return comparator(cmpStrictEq), true
	case "!==":
		return comparator(cmpStrictNe), true
	case "<":
		return comparator(cmpLt), true
	case "<=":
		return comparator(cmpLe), true
	case ">":
		return comparator(cmpGt), true
	case ">=":
		return comparator(cmpGe), true
	case "+":
		return arithmetic('+'), true
	case "-":
		return arithmetic('-'), true
	case "*":
		return arithmetic('*'), true
	case "/":
		return arithmetic('/'), true
	case "%":
		return arithmetic('%'), true
	case "min":
		return eager(minMax(false)), true
	case "max":
		return eager(minMax(true)), true
	case "in":
		return eager(opIn), true
	case "cat":
		return opCat, true
	case "substr":
		return eager(opSubstr), true
	case "merge":
		return eager(opMerge), true
	case "map":
		return iterate("map"), true
	case "filter":
		return iterate("filter"), true
	case "all":
		return iterate("all"), true
	case "some":
		return iterate("some"), true
	case "none":
		return iterate("none"), true
	case "reduce":
		return opReduce, true
	case opFractional:
		return eager(fractional), true
	case opSemVer:
		return eager(semVer), true
	case opStartsWith:
		return eager(stringCompare(opStartsWith, strings.HasPrefix)), true
	case opEndsWith:
		return eager(stringCompare(opEndsWith, strings.HasSuffix)), true
	}
	return nil, false
}

// evalArgs evaluates an eager operation's arguments. A single expression
// argument that yields an array supplies the argument list.
func evalArgs(args []node, single bool, ctx any, e *env) ([]any, error) {
	if single {
		v, err := args[0].eval(ctx, e)
		if err != nil {
			return nil, err
		}
		if _, isExpr := args[0].(*operation); isExpr {
			if arr, ok := v.([]any); ok {
				return arr, nil
			}
		}
		return []any{v}, nil
	}
	out := make([]any, len(args))
	for i, a := range args {
		v, err := a.eval(ctx, e)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// eagerFunc is an operation on evaluated arguments; ctx is the data in
// scope.
type eagerFunc func(args []any, ctx any, e *env) (any, error)

func eager(fn eagerFunc) opFunc {
	return func(args []node, single bool, ctx any, e *env) (any, error) {
		vals, err := evalArgs(args, single, ctx, e)
		if err != nil {
			return nil, err
		}
		return fn(vals, ctx, e)
	}
}

func first(a []any) any {
	if len(a) == 0 {
		return nil
	}
	return a[0]
}

// truthy is json-logic-engine's truthiness: JavaScript's, except that an
// empty array and an empty object are false.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0 && !math.IsNaN(x)
	case int64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	default:
		return true
	}
}

// jsTruthy is plain JavaScript truthiness (objects and arrays are true),
// used where the reference writes "x || []".
func jsTruthy(v any) bool {
	switch v.(type) {
	case []any, map[string]any:
		return true
	}
	return truthy(v)
}

// ---- var, missing, missing_some

func opVar(args []node, single bool, ctx any, e *env) (any, error) {
	vals, err := evalArgs(args, single, ctx, e)
	if err != nil {
		return nil, err
	}
	var key, def any
	if len(vals) > 0 {
		key = vals[0]
	}
	if len(vals) > 1 {
		def = vals[1]
	}
	var path string
	switch k := key.(type) {
	case nil:
		return orDefault(ctx, def), nil
	case string:
		if k == "" {
			return orDefault(ctx, def), nil
		}
		path = k
	case float64:
		path = jsNumberString(k)
	default:
		path = jsString(k)
	}
	v := ctx
	for _, p := range splitPath(path) {
		if v == nil {
			return def, nil
		}
		next, found := lookup(v, p)
		if !found {
			return def, nil
		}
		v = next
	}
	if e.interpreted {
		// The interpreter returns a null it finds; compiled rules use ??.
		return v, nil
	}
	return orDefault(v, def), nil
}

// lookup is property with JavaScript's distinction between a null member
// and a missing one.
func lookup(v any, name string) (any, bool) {
	if m, ok := v.(map[string]any); ok {
		x, found := m[name]
		return x, found
	}
	x := property(v, name)
	return x, x != nil
}

func orDefault(v, def any) any {
	if v == nil {
		return def
	}
	return v
}

// property is JavaScript's v[name] for JSON values; nil for undefined.
func property(v any, name string) any {
	switch x := v.(type) {
	case map[string]any:
		return x[name]
	case []any:
		if name == "length" {
			return float64(len(x))
		}
		if i, ok := arrayIndex(name); ok && i < len(x) {
			return x[i]
		}
	case string:
		u := utf16.Encode([]rune(x))
		if name == "length" {
			return float64(len(u))
		}
		if i, ok := arrayIndex(name); ok && i < len(u) {
			return string(utf16.Decode(u[i : i+1]))
		}
	}
	return nil
}

func arrayIndex(s string) (int, bool) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 {
		return 0, false
	}
	return i, true
}

// splitPath splits a var path at dots; a backslash escapes a dot or a
// backslash (json-logic-engine's splitPath).
func splitPath(s string) []string {
	var parts []string
	var cur strings.Builder
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		n++
		switch {
		case c == '\\' && i+1 < len(s) && (s[i+1] == '.' || s[i+1] == '/' || s[i+1] == '\\'):
			cur.WriteByte(s[i+1])
			i++
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if len(parts) != n {
		parts = append(parts, cur.String())
	}
	return parts
}

func opMissing(args []any, ctx any, _ *env) (any, error) {
	return missing(args, ctx), nil
}

func missing(keys []any, ctx any) []any {
	out := []any{}
	for _, k := range keys {
		v := ctx
		found := true
		for _, p := range splitPath(jsString(k)) {
			if !jsTruthy(v) {
				found = false
				break
			}
			var ok bool
			if v, ok = lookup(v, p); !ok {
				found = false
				break
			}
		}
		if !found {
			out = append(out, k)
		}
	}
	return out
}

func opMissingSome(args []any, ctx any, _ *env) (any, error) {
	if len(args) < 2 {
		return nil, errorf("missing_some: arguments must be [count, keys]")
	}
	keys, ok := args[1].([]any)
	if !ok {
		return nil, errorf("missing_some: keys must be an array")
	}
	m := missing(keys, ctx)
	need, err := toNumber(args[0])
	if err != nil {
		return nil, err
	}
	if float64(len(keys)-len(m)) >= need {
		return []any{}, nil
	}
	return m, nil
}

// ---- if, and, or

func opIfThen(args []node, single bool, ctx any, e *env) (any, error) {
	if single {
		return nil, errorf("if: arguments must be an array")
	}
	n := len(args)
	if n == 0 {
		return nil, nil
	}
	if n < 3 && !e.interpreted {
		e.interpreted = true
		defer func() { e.interpreted = false }()
	}
	if n == 1 {
		return args[0].eval(ctx, e)
	}
	for i := 0; i+1 < n; i += 2 {
		c, err := args[i].eval(ctx, e)
		if err != nil {
			return nil, err
		}
		if truthy(c) {
			return args[i+1].eval(ctx, e)
		}
	}
	if n%2 == 1 {
		return args[n-1].eval(ctx, e)
	}
	return nil, nil
}

func opAndOr(isOr bool) opFunc {
	return func(args []node, single bool, ctx any, e *env) (any, error) {
		if single {
			return nil, errorf("and/or: arguments must be an array")
		}
		var v any
		for _, a := range args {
			var err error
			if v, err = a.eval(ctx, e); err != nil {
				return nil, err
			}
			if truthy(v) == isOr {
				return v, nil
			}
		}
		return v, nil
	}
}

// ---- comparisons

type cmpKind int

const (
	cmpEq cmpKind = iota
	cmpNe
	cmpStrictEq
	cmpStrictNe
	cmpLt
	cmpLe
	cmpGt
	cmpGe
)

func comparator(kind cmpKind) opFunc {
	return func(args []node, single bool, ctx any, e *env) (any, error) {
		if single || len(args) < 2 {
			return nil, errorf("comparison: at least two arguments are needed")
		}
		prev, err := args[0].eval(ctx, e)
		if err != nil {
			return nil, err
		}
		if e.interpreted {
			return compareInterpreted(kind, prev, args[1:], ctx, e)
		}
		for _, a := range args[1:] {
			cur, err := a.eval(ctx, e)
			if err != nil {
				return nil, err
			}
			// The reference checks each operand against the one before it,
			// except that an operand read by var, and or or is checked
			// against itself (its compiled form overwrites the variable
			// holding the previous operand); the comparison then takes
			// JavaScript's loose equality or ordering.
			against := prev
			if clobbersPrevious(a) {
				against = cur
			}
			ok, err := compare(kind, prev, cur, against)
			if err != nil || !ok {
				return false, err
			}
			prev = cur
		}
		return true, nil
	}
}

// compareInterpreted is the interpreter's comparison, pair by pair
// (a < b < c is a < b and b < c): two strings (or nulls) compare as they
// are; otherwise both sides must be numbers and compare as numbers.
func compareInterpreted(kind cmpKind, first any, rest []node, ctx any, e *env) (any, error) {
	prev := first
	for _, a := range rest {
		cur, err := a.eval(ctx, e)
		if err != nil {
			return nil, err
		}
		ok, err := comparePair(kind, prev, cur)
		if err != nil || !ok {
			return false, err
		}
		prev = cur
	}
	return true, nil
}

func comparePair(kind cmpKind, a, b any) (bool, error) {
	switch kind {
	case cmpStrictEq:
		return strictEqual(a, b), nil
	case cmpStrictNe:
		return !strictEqual(a, b), nil
	}
	if !(isStringOrNull(a) && isStringOrNull(b)) {
		na, err := precoerce(a)
		if err != nil {
			return false, err
		}
		if math.IsNaN(na) {
			return false, errorf("%s is not a number", describe(a))
		}
		nb, err := precoerce(b)
		if err != nil {
			return false, err
		}
		if math.IsNaN(nb) && a != nil {
			return false, errorf("%s is not a number", describe(b))
		}
		a, b = na, nb
	}
	switch kind {
	case cmpEq:
		return looseEqual(a, b), nil
	case cmpNe:
		return !looseEqual(a, b), nil
	}
	c, ok := looseOrder(a, b)
	return ok && compareOrdered(kind, c), nil
}

func clobbersPrevious(n node) bool {
	op, ok := n.(*operation)
	return ok && (op.name == "var" || op.name == "and" || op.name == "or")
}

func isStringOrNull(v any) bool {
	switch v.(type) {
	case nil, string:
		return true
	}
	return false
}

// compare applies one comparison of a and b as json-logic-engine's
// compiled rules do: strict equality compares type and value; otherwise b
// is first checked against against (compareCheck: an error when either is
// not a number unless both are strings or null), then a and b compare with
// JavaScript's loose semantics.
func compare(kind cmpKind, a, b, against any) (bool, error) {
	switch kind {
	case cmpStrictEq:
		return strictEqual(a, b), nil
	case cmpStrictNe:
		return !strictEqual(a, b), nil
	}
	b, err := compareCheck(b, against)
	if err != nil {
		return false, err
	}
	switch kind {
	case cmpEq:
		return looseEqual(a, b), nil
	case cmpNe:
		return !looseEqual(a, b), nil
	}
	c, ok := looseOrder(a, b)
	if !ok {
		return false, nil
	}
	return compareOrdered(kind, c), nil
}

// compareCheck is json-logic-engine's compareCheck(item, prev).
func compareCheck(item, prev any) (any, error) {
	if isStringOrNull(item) && isStringOrNull(prev) {
		return item, nil
	}
	ni, err := precoerce(item)
	if err != nil {
		return nil, err
	}
	if math.IsNaN(ni) && prev != nil {
		return nil, errorf("%s is not a number", describe(item))
	}
	np, err := precoerce(prev)
	if err != nil {
		return nil, err
	}
	if math.IsNaN(np) {
		return nil, errorf("%s is not a number", describe(prev))
	}
	if prev == nil && !jsTruthy(item) {
		return nil, nil
	}
	if item == nil && !jsTruthy(prev) {
		return 0.0, nil
	}
	return item, nil
}

// precoerce is +precoerceNumber(v): an error for arrays and objects,
// Number(v) otherwise.
func precoerce(v any) (float64, error) {
	switch v.(type) {
	case []any, map[string]any:
		return 0, errorf("%s is not a number", describe(v))
	}
	return jsToNumber(v), nil
}

// toPrimitive is JavaScript's ToPrimitive for JSON values: arrays and
// objects become their string form.
func toPrimitive(v any) any {
	switch v.(type) {
	case []any, map[string]any:
		return jsString(v)
	}
	return v
}

// looseEqual is JavaScript's == on JSON values (no undefined).
func looseEqual(a, b any) bool {
	_, aObj := a.([]any)
	_, bObj := b.([]any)
	if _, ok := a.(map[string]any); ok {
		aObj = true
	}
	if _, ok := b.(map[string]any); ok {
		bObj = true
	}
	switch {
	case a == nil || b == nil:
		return a == nil && b == nil
	case aObj && bObj:
		return false // distinct objects
	case aObj:
		a = toPrimitive(a)
	case bObj:
		b = toPrimitive(b)
	}
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			return sa == sb
		}
	}
	if ba, ok := a.(bool); ok {
		if bb, ok := b.(bool); ok {
			return ba == bb
		}
	}
	na, nb := jsToNumber(a), jsToNumber(b)
	return na == nb
}

// looseOrder is the comparison behind JavaScript's <, <=, > and >=: two
// strings compare by code units, anything else as numbers; ok is false
// when either side is NaN (every ordering is then false).
func looseOrder(a, b any) (int, bool) {
	a, b = toPrimitive(a), toPrimitive(b)
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			return compareUTF16(sa, sb), true
		}
	}
	na, nb := jsToNumber(a), jsToNumber(b)
	if math.IsNaN(na) || math.IsNaN(nb) {
		return 0, false
	}
	return cmpFloat(na, nb), true
}

func compareUTF16(a, b string) int {
	ua, ub := utf16.Encode([]rune(a)), utf16.Encode([]rune(b))
	for i := 0; i < len(ua) && i < len(ub); i++ {
		if ua[i] != ub[i] {
			return cmpFloat(float64(ua[i]), float64(ub[i]))
		}
	}
	return cmpFloat(float64(len(ua)), float64(len(ub)))
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func compareOrdered(kind cmpKind, c int) bool {
	switch kind {
	case cmpEq:
		return c == 0
	case cmpNe:
		return c != 0
	case cmpLt:
		return c < 0
	case cmpLe:
		return c <= 0
	case cmpGt:
		return c > 0
	default:
		return c >= 0
	}
}

// strictEqual is JavaScript's ===: arrays and objects are never equal to a
// value decoded separately.
func strictEqual(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	}
	return false
}

// ---- arithmetic

// toNumber converts an operand as json-logic-engine's arithmetic does:
// JavaScript's Number() for primitives (null, false and "" are 0), an error
// for arrays, objects and anything that is not a number.
func toNumber(v any) (float64, error) {
	n := jsToNumber(v)
	if math.IsNaN(n) {
		return 0, errorf("%s is not a number", describe(v))
	}
	return n, nil
}

// jsToNumber is JavaScript's Number() on JSON primitives (NaN for others).
func jsToNumber(v any) float64 {
	switch x := v.(type) {
	case nil:
		return 0
	case bool:
		if x {
			return 1
		}
		return 0
	case float64:
		return x
	case int64:
		return float64(x)
	case string:
		return stringToNumber(x)
	}
	return math.NaN()
}

// stringToNumber is JavaScript's StringToNumber: surrounding white space is
// ignored, "" is 0, decimal literals, Infinity and 0x/0o/0b integers.
func stringToNumber(s string) float64 {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0
	}
	switch s {
	case "Infinity", "+Infinity":
		return math.Inf(1)
	case "-Infinity":
		return math.Inf(-1)
	}
	if len(s) > 2 && s[0] == '0' {
		base := 0
		switch s[1] {
		case 'x', 'X':
			base = 16
		case 'o', 'O':
			base = 8
		case 'b', 'B':
			base = 2
		}
		if base != 0 {
			u, err := strconv.ParseUint(s[2:], base, 64)
			if err != nil || strings.ContainsRune(s[2:], '_') {
				return math.NaN()
			}
			return float64(u)
		}
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
			return math.NaN()
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return f
		}
		return math.NaN()
	}
	return f
}

func arithmetic(op byte) opFunc {
	return func(args []node, single bool, ctx any, e *env) (any, error) {
		vals, err := evalArgs(args, single, ctx, e)
		if err != nil {
			return nil, err
		}
		nums := make([]float64, len(vals))
		for i, v := range vals {
			if nums[i], err = toNumber(v); err != nil {
				return nil, errorf("%c: %v", op, err)
			}
		}
		var res float64
		switch op {
		case '+':
			for _, n := range nums {
				res += n
			}
		case '*':
			res = 1
			for _, n := range nums {
				res *= n
			}
		case '-':
			if len(nums) == 0 {
				return nil, errorf("-: no arguments")
			}
			if len(nums) == 1 {
				return -nums[0], nil
			}
			res = nums[0]
			for _, n := range nums[1:] {
				res -= n
			}
		case '/':
			if len(nums) == 0 {
				return nil, errorf("/: no arguments")
			}
			if len(nums) == 1 {
				nums = []float64{1, nums[0]}
			}
			res = nums[0]
			for i, n := range nums[1:] {
				// Compiled rules refuse a divisor that is 0 as a number; the
				// interpreter one that is falsy as a value ("0" divides, to
				// an infinity it refuses only when positive).
				if (!e.interpreted && n == 0) || (e.interpreted && !jsTruthy(vals[i+1])) {
					return nil, errorf("/: division by zero")
				}
				res /= n
			}
			if e.interpreted && math.IsInf(res, 1) {
				return nil, errorf("/: the result is infinite")
			}
		case '%':
			if len(nums) < 2 {
				return nil, errorf("%%: two arguments are needed")
			}
			res = nums[0]
			for _, n := range nums[1:] {
				res = math.Mod(res, n)
			}
		}
		if math.IsNaN(res) {
			return nil, errorf("%c: the result is not a number", op)
		}
		return res, nil
	}
}

func minMax(isMax bool) eagerFunc {
	return func(args []any, _ any, _ *env) (any, error) {
		if len(args) == 0 {
			return nil, errorf("min/max: no arguments")
		}
		var best float64
		for i, a := range args {
			n, ok := a.(float64)
			if !ok {
				return nil, errorf("min/max: %s is not a number", describe(a))
			}
			if i == 0 || (isMax && n > best) || (!isMax && n < best) {
				best = n
			}
		}
		return best, nil
	}
}

// ---- strings and arrays

func opIn(args []any, _ any, _ *env) (any, error) {
	var item, in any
	if len(args) > 0 {
		item = args[0]
	}
	if len(args) > 1 {
		in = args[1]
	}
	if !jsTruthy(in) {
		return false, nil
	}
	switch x := in.(type) {
	case []any:
		for _, e := range x {
			if strictEqual(e, item) {
				return true, nil
			}
		}
		return false, nil
	case string:
		return strings.Contains(x, jsString(item)), nil
	default:
		return nil, errorf("in: %s is neither an array nor a string", describe(in))
	}
}

// opCat concatenates as JavaScript's string "+": null is "null", numbers
// in JavaScript's notation, arrays joined by commas.
func opCat(args []node, single bool, ctx any, e *env) (any, error) {
	if single && e.interpreted {
		// The interpreter passes the value itself: a string as it is,
		// an array joined without its nulls, anything else by its string
		// form (null has none: an error).
		v, err := args[0].eval(ctx, e)
		if err != nil {
			return nil, err
		}
		switch x := v.(type) {
		case nil:
			return nil, errorf("cat: null has no string form")
		case []any:
			var b strings.Builder
			for _, it := range x {
				if it != nil {
					b.WriteString(jsString(it))
				}
			}
			return b.String(), nil
		default:
			return jsString(x), nil
		}
	}
	if single || e.interpreted {
		if l, ok := args[0].(literal); ok && single {
			return jsString(l.v), nil
		}
		vals, err := evalArgs(args, single, ctx, e)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		for _, v := range vals {
			if v != nil {
				b.WriteString(jsString(v))
			}
		}
		return b.String(), nil
	}
	var b strings.Builder
	for _, a := range args {
		v, err := a.eval(ctx, e)
		if err != nil {
			return nil, err
		}
		b.WriteString(jsString(v))
	}
	return b.String(), nil
}

func opSubstr(args []any, _ any, _ *env) (any, error) {
	if len(args) == 0 {
		return nil, errorf("substr: no arguments")
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, errorf("substr: %s is not a string", describe(args[0]))
	}
	u := utf16.Encode([]rune(s))
	n := len(u)
	from := 0
	if len(args) > 1 {
		from = toInteger(args[1], n)
	}
	if from < 0 {
		from = max(n+from, 0)
	}
	from = min(from, n)
	end := n - from
	if len(args) > 2 && args[2] != nil {
		l := jsToNumber(args[2])
		if l < 0 {
			// A negative length drops that many from the end.
			end = max(n-from+toInteger(args[2], n), 0)
		} else {
			end = min(max(toInteger(args[2], n), 0), n-from)
		}
	}
	return string(utf16.Decode(u[from : from+end])), nil
}

// toInteger is JavaScript's ToIntegerOrInfinity clamped to ±limit.
func toInteger(v any, limit int) int {
	f := jsToNumber(v)
	switch {
	case math.IsNaN(f):
		return 0
	case f > float64(limit):
		return limit
	case f < -float64(limit):
		return -limit
	}
	return int(math.Trunc(f))
}

func opMerge(args []any, _ any, _ *env) (any, error) {
	out := []any{}
	for _, a := range args {
		if arr, ok := a.([]any); ok {
			out = append(out, arr...)
		} else {
			out = append(out, a)
		}
	}
	return out, nil
}

// iterate implements map, filter, all, some and none: the mapper runs with
// each element as its data.
func iterate(kind string) opFunc {
	return func(args []node, single bool, ctx any, e *env) (any, error) {
		if single || len(args) == 0 {
			return nil, errorf("%s: arguments must be [array, logic]", kind)
		}
		sel, err := args[0].eval(ctx, e)
		if err != nil {
			return nil, err
		}
		var items []any
		arr, isArr := sel.([]any)
		str, isStr := sel.(string)
		lenient := e.interpreted && kind != "map" && kind != "filter"
		switch {
		case isArr:
			items = arr
		case isStr && lenient:
			// The interpreter's some, all and none index into anything
			// with a length: a string's characters.
			for _, u := range utf16.Encode([]rune(str)) {
				items = append(items, string(utf16.Decode([]uint16{u})))
			}
		case jsTruthy(sel) && !lenient:
			return nil, errorf("%s: %s is not an array", kind, describe(sel))
		}
		if kind == "all" && len(items) == 0 {
			// Compiled, "all" of an empty array is false and of null true;
			// the interpreter finds an empty array and null false and other
			// values without a length true.
			if isArr || (e.interpreted && !jsTruthy(sel)) {
				return false, nil
			}
		}
		var mapper node = literal{}
		if len(args) > 1 {
			mapper = args[1]
		}
		var out []any
		for _, it := range items {
			v, err := mapper.eval(it, e)
			if err != nil {
				return nil, err
			}
			switch kind {
			case "map":
				out = append(out, v)
			case "filter":
				if truthy(v) {
					out = append(out, it)
				}
			case "all":
				if !truthy(v) {
					return false, nil
				}
			case "some", "none":
				if truthy(v) {
					return kind == "some", nil
				}
			}
		}
		switch kind {
		case "all":
			return true, nil
		case "some":
			return false, nil
		case "none":
			return true, nil
		}
		if out == nil {
			out = []any{}
		}
		return out, nil
	}
}

func opReduce(args []node, single bool, ctx any, e *env) (any, error) {
	if single || len(args) < 2 {
		return nil, errorf("reduce: arguments must be [array, logic, initial]")
	}
	sel, err := args[0].eval(ctx, e)
	if err != nil {
		return nil, err
	}
	items, isArr := sel.([]any)
	if !isArr && jsTruthy(sel) {
		return nil, errorf("reduce: %s is not an array", describe(sel))
	}
	var acc any
	if len(args) > 2 {
		if acc, err = args[2].eval(ctx, e); err != nil {
			return nil, err
		}
	} else {
		if len(items) == 0 {
			return nil, errorf("reduce: an empty array without an initial value")
		}
		acc, items = items[0], items[1:]
	}
	for _, it := range items {
		if acc, err = args[1].eval(map[string]any{"accumulator": acc, "current": it}, e); err != nil {
			return nil, err
		}
	}
	return acc, nil
}

// jsString is JavaScript's String() on JSON values.
func jsString(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return jsNumberString(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case string:
		return x
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			if e != nil {
				parts[i] = jsString(e)
			}
		}
		return strings.Join(parts, ",")
	default:
		return "[object Object]"
	}
}

// jsNumberString is JavaScript's Number.prototype.toString(): the shortest
// decimal that round-trips, in plain notation from 1e-6 to 1e21 and in
// exponent notation ("1e+21", "1.5e-7") outside.
func jsNumberString(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0:
		return "0"
	}
	a := math.Abs(f)
	if a >= 1e-6 && a < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	s := strconv.FormatFloat(f, 'e', -1, 64)
	mant, exp, _ := strings.Cut(s, "e")
	sign := exp[0]
	exp = strings.TrimLeft(exp[1:], "0")
	return mant + "e" + string(sign) + exp
}
