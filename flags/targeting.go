package flags

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"golang.org/x/mod/semver"
)

// operators lists the JsonLogic operations flagd's targeting schema allows:
// the standard JsonLogic set plus flagd's custom operations.
var operators = map[string]bool{
	"var": true, "missing": true, "missing_some": true,
	"if": true, "==": true, "===": true, "!=": true, "!==": true,
	">": true, ">=": true, "<": true, "<=": true,
	"!": true, "!!": true, "or": true, "and": true,
	"+": true, "-": true, "*": true, "/": true, "%": true, "max": true, "min": true,
	"map": true, "filter": true, "reduce": true, "all": true, "none": true, "some": true,
	"merge": true, "in": true, "cat": true, "substr": true,
	"fractional": true, "sem_ver": true, "starts_with": true, "ends_with": true,
}

// semverOperators are the range specifiers sem_ver accepts.
var semverOperators = map[string]bool{"=": true, "!=": true, ">": true, "<": true, ">=": true, "<=": true, "~": true, "^": true}

// flagdContextVars are the properties flagd injects under "$flagd".
var flagdContextVars = map[string]bool{"$flagd.flagKey": true, "$flagd.timestamp": true}

// maxExpandedNodes bounds the size of a targeting rule after $ref
// expansion, so shared evaluators referencing each other many times cannot
// blow up memory.
const maxExpandedNodes = 100_000

// IsOperator reports whether op is a JsonLogic operation allowed in flagd
// targeting rules.
func IsOperator(op string) bool { return operators[op] }

// ValidSemver reports whether s is a version sem_ver accepts: a semantic
// version with or without a leading "v"; partial versions ("1", "1.2") are
// accepted as flagd does.
func ValidSemver(s string) bool {
	if !strings.HasPrefix(s, "v") {
		s = "v" + s
	}
	return semver.IsValid(s)
}

// targetingChecker walks a decoded targeting rule. In "result position"
// (the rule's value, the branches of if, the buckets of fractional) literal
// values name variants and are checked against the flag's variants.
type targetingChecker struct {
	ps         *problems
	flag       string
	evaluator  string
	variants   map[string]json.RawMessage
	evaluators map[string]any
	checkRefs  bool
	// resultRefs records evaluators already checked in result position, so
	// evaluators that reference each other many times are walked once.
	resultRefs map[string]bool
}

func (c *targetingChecker) problem(path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	*c.ps = append(*c.ps, Problem{Flag: c.flag, Evaluator: c.evaluator, Field: path, Message: msg})
}

func (c *targetingChecker) check(v any, path string, result bool) {
	switch x := v.(type) {
	case map[string]any:
		c.rule(x, path, result)
	case []any:
		if result && c.variants != nil {
			c.problem(path, "returns an array, which cannot name a variant")
			return
		}
		for i, e := range x {
			c.check(e, fmt.Sprintf("%s[%d]", path, i), false)
		}
	case string:
		if result && c.variants != nil {
			if _, ok := c.variants[x]; !ok {
				c.problem(path, "returns %q, which is not a variant (have %q)", x, sortedKeys(c.variants))
			}
		}
	case bool:
		if result && c.variants != nil {
			name := strconv.FormatBool(x)
			if _, ok := c.variants[name]; !ok {
				c.problem(path, "returns %s, but there is no variant %q", name, name)
			}
		}
	case float64:
		if result && c.variants != nil {
			name := strconv.FormatFloat(x, 'f', -1, 64)
			if _, ok := c.variants[name]; !ok {
				c.problem(path, "returns %s, but there is no variant %q", name, name)
			}
		}
	}
}

func join(path, elem string) string {
	if path == "" {
		return elem
	}
	return path + "." + elem
}

func (c *targetingChecker) rule(m map[string]any, path string, result bool) {
	if ref, ok := m["$ref"]; ok {
		if len(m) != 1 {
			c.problem(path, `a "$ref" object must have no other members`)
			return
		}
		name, isStr := ref.(string)
		if !isStr {
			c.problem(join(path, "$ref"), "must be a string")
			return
		}
		if !c.checkRefs {
			return
		}
		target, exists := c.evaluators[name]
		if !exists {
			c.problem(join(path, "$ref"), "references unknown evaluator %q", name)
			return
		}
		if result && c.variants != nil && !c.resultRefs[name] {
			// Cycles are reported on the evaluators themselves.
			if c.resultRefs == nil {
				c.resultRefs = map[string]bool{}
			}
			c.resultRefs[name] = true
			c.check(target, join(path, "$ref("+name+")"), true)
		}
		return
	}
	if len(m) == 0 {
		return
	}
	if len(m) > 1 {
		c.problem(path, "a rule must have exactly one operator, got %d members %q", len(m), sortedKeys(m))
		return
	}
	for op, args := range m {
		p := join(path, op)
		if !operators[op] {
			c.problem(path, "unknown operator %q", op)
			return
		}
		switch op {
		case "if":
			c.ifRule(args, p, result)
		case "fractional":
			c.fractional(args, p, result)
		case "sem_ver":
			c.semver(args, p)
		case "starts_with", "ends_with":
			c.stringCompare(args, p)
		case "var":
			c.variable(args, p)
		default:
			c.check(args, p, false)
		}
	}
}

func (c *targetingChecker) ifRule(args any, path string, result bool) {
	list, ok := args.([]any)
	if !ok {
		c.check(args, path, result)
		return
	}
	for i, a := range list {
		// Conditions sit at even indexes; values at odd ones, plus the
		// trailing else when the count is odd.
		value := i%2 == 1 || (i == len(list)-1 && len(list)%2 == 1)
		if len(list) == 1 {
			value = true
		}
		c.check(a, fmt.Sprintf("%s[%d]", path, i), result && value)
	}
}

func (c *targetingChecker) variable(args any, path string) {
	name, _ := args.(string)
	if list, ok := args.([]any); ok && len(list) > 0 {
		name, _ = list[0].(string)
	}
	if strings.HasPrefix(name, "$flagd.") && !flagdContextVars[name] {
		c.problem(path, "%q is not a flagd property (have $flagd.flagKey, $flagd.timestamp)", name)
	}
	if list, ok := args.([]any); ok {
		for i, e := range list {
			if _, isMap := e.(map[string]any); isMap {
				c.check(e, fmt.Sprintf("%s[%d]", path, i), false)
			}
		}
	}
}

func (c *targetingChecker) fractional(args any, path string, result bool) {
	list, ok := args.([]any)
	if !ok || len(list) == 0 {
		c.problem(path, "must be an array of buckets, optionally preceded by a bucketing expression")
		return
	}
	buckets := list
	if _, isBucket := list[0].([]any); !isBucket {
		switch first := list[0].(type) {
		case map[string]any:
			c.check(first, path+"[0]", false)
		default:
			c.problem(path+"[0]", `the bucketing value must be a JsonLogic expression such as {"var": "email"}, got %s`, jsonType(first))
		}
		buckets = list[1:]
	}
	if len(buckets) == 0 {
		c.problem(path, "needs at least one bucket")
		return
	}
	offset := len(list) - len(buckets)
	var sum int64
	literal := true
	for i, b := range buckets {
		bp := fmt.Sprintf("%s[%d]", path, i+offset)
		bucket, ok := b.([]any)
		if !ok || len(bucket) == 0 || len(bucket) > 2 {
			c.problem(bp, "a bucket must be [variant] or [variant, weight]")
			literal = false
			continue
		}
		c.check(bucket[0], bp+"[0]", result)
		if len(bucket) == 1 {
			sum++
			continue
		}
		switch w := bucket[1].(type) {
		case float64:
			if w < 0 || w != math.Trunc(w) || w > math.MaxInt32 {
				c.problem(bp+"[1]", "weight %v must be a non-negative integer", w)
				continue
			}
			sum += int64(w)
		case map[string]any:
			literal = false
			c.check(w, bp+"[1]", false)
		default:
			literal = false
			c.problem(bp+"[1]", "weight must be a non-negative integer or a JsonLogic expression, got %s", jsonType(w))
		}
	}
	if sum > math.MaxInt32 {
		c.problem(path, "weights sum to %d, more than the maximum %d", sum, math.MaxInt32)
	}
	if literal && sum == 0 {
		c.problem(path, "all bucket weights are zero")
	}
}

func (c *targetingChecker) semver(args any, path string) {
	list, ok := args.([]any)
	if !ok || len(list) != 3 {
		c.problem(path, "must be [version, operator, version]")
		return
	}
	if op, isStr := list[1].(string); !isStr || !semverOperators[op] {
		c.problem(path+"[1]", `operator must be one of "=", "!=", ">", "<", ">=", "<=", "~", "^", got %s`, jsonLiteral(list[1]))
	}
	for _, i := range []int{0, 2} {
		switch v := list[i].(type) {
		case string:
			if !ValidSemver(v) {
				c.problem(fmt.Sprintf("%s[%d]", path, i), "%q is not a semantic version", v)
			}
		case map[string]any:
			c.check(v, fmt.Sprintf("%s[%d]", path, i), false)
		default:
			c.problem(fmt.Sprintf("%s[%d]", path, i), "must be a version string or an expression, got %s", jsonType(v))
		}
	}
}

func (c *targetingChecker) stringCompare(args any, path string) {
	list, ok := args.([]any)
	if !ok || len(list) != 2 {
		c.problem(path, "must be [value, string]")
		return
	}
	for i, e := range list {
		switch v := e.(type) {
		case string:
		case map[string]any:
			c.check(v, fmt.Sprintf("%s[%d]", path, i), false)
		default:
			c.problem(fmt.Sprintf("%s[%d]", path, i), "must be a string or an expression, got %s", jsonType(v))
		}
	}
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	default:
		return "an object"
	}
}

func jsonLiteral(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// refCycles reports every $ref cycle among the evaluators once, as
// "a -> b -> a", keyed by the evaluator where the cycle was entered.
func refCycles(evaluators map[string]any) map[string]string {
	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	cycles := map[string]string{}
	var stack []string
	var visit func(name string)
	visit = func(name string) {
		state[name] = active
		stack = append(stack, name)
		walkRefs(evaluators[name], func(ref string) bool {
			if _, ok := evaluators[ref]; !ok {
				return true
			}
			switch state[ref] {
			case unseen:
				visit(ref)
			case active:
				for i, s := range stack {
					if s == ref {
						cycles[ref] = strings.Join(append(append([]string{}, stack[i:]...), ref), " -> ")
					}
				}
			}
			return true
		})
		stack = stack[:len(stack)-1]
		state[name] = done
	}
	for _, name := range sortedKeys(evaluators) {
		if state[name] == unseen {
			visit(name)
		}
	}
	return cycles
}

// walkRefs calls fn for every $ref name in v until fn returns false.
func walkRefs(v any, fn func(string) bool) bool {
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"].(string); ok && len(x) == 1 {
			return fn(ref)
		}
		for _, e := range x {
			if !walkRefs(e, fn) {
				return false
			}
		}
	case []any:
		for _, e := range x {
			if !walkRefs(e, fn) {
				return false
			}
		}
	}
	return true
}

// ResolveTargeting returns the flag's targeting rule decoded into generic
// JSON values (map[string]any, []any, string, float64, bool, nil) with every
// {"$ref": "name"} replaced by a copy of the named $evaluators rule. It
// returns nil when the flag has no targeting (absent or "{}").
func (d *Document) ResolveTargeting(key string) (any, error) {
	f, err := d.Flag(key)
	if err != nil {
		return nil, err
	}
	if !f.HasTargeting() {
		return nil, nil
	}
	rule, err := decodeJSON(f.Targeting)
	if err != nil {
		return nil, fmt.Errorf("flag %q: targeting: %w", key, err)
	}
	r := resolver{raw: d.Evaluators, decoded: map[string]any{}}
	out, err := r.resolve(rule, nil)
	if err != nil {
		return nil, &ValidationError{Problems: []Problem{{Flag: key, Field: "targeting", Message: "targeting: " + err.Error()}}}
	}
	return out, nil
}

type resolver struct {
	raw     map[string]json.RawMessage
	decoded map[string]any
	nodes   int
}

func (r *resolver) resolve(v any, stack []string) (any, error) {
	r.nodes++
	if r.nodes > maxExpandedNodes {
		return nil, fmt.Errorf("rule exceeds %d nodes after $ref expansion", maxExpandedNodes)
	}
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"].(string); ok && len(x) == 1 {
			for _, s := range stack {
				if s == ref {
					return nil, fmt.Errorf("$ref cycle %s -> %s", strings.Join(stack, " -> "), ref)
				}
			}
			target, err := r.evaluator(ref)
			if err != nil {
				return nil, err
			}
			return r.resolve(target, append(stack, ref))
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			re, err := r.resolve(e, stack)
			if err != nil {
				return nil, err
			}
			out[k] = re
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			re, err := r.resolve(e, stack)
			if err != nil {
				return nil, err
			}
			out[i] = re
		}
		return out, nil
	default:
		return v, nil
	}
}

func (r *resolver) evaluator(name string) (any, error) {
	if v, ok := r.decoded[name]; ok {
		return v, nil
	}
	raw, ok := r.raw[name]
	if !ok {
		return nil, fmt.Errorf("$ref %q: no such evaluator in $evaluators", name)
	}
	v, err := decodeJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("$evaluators %q: %w", name, err)
	}
	r.decoded[name] = v
	return v, nil
}
