package flags

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed schema/flags.json schema/targeting.json
var schemaFS embed.FS

// Schema identifiers, as declared by the schemas' $id.
const (
	FlagsSchemaID     = "https://flagd.dev/schema/v0/flags.json"
	TargetingSchemaID = "https://flagd.dev/schema/v0/targeting.json"
	// flagdConfigLocation is the flagd daemon's superset (flags as a map or
	// an array), selected when a file's $schema names flagd.json.
	flagdConfigLocation = FlagsSchemaID + "#/definitions/flagdConfig"
)

// maxSchemaProblems caps the schema findings reported for one file.
const maxSchemaProblems = 20

// Validator checks flag files against flagd's JSON schemas and tailguard's
// semantic rules. It is safe for concurrent use.
type Validator struct {
	provider  *jsonschema.Schema
	daemon    *jsonschema.Schema
	targeting *jsonschema.Schema
	printer   *message.Printer
}

// denyLoader refuses to load schemas from anywhere: both flagd schemas are
// registered up front, so any other reference is a bug, not a reason to
// reach the network.
type denyLoader struct{}

func (denyLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s is not embedded", url)
}

// NewValidator compiles the embedded flagd schemas.
func NewValidator() (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.UseLoader(denyLoader{})
	for id, name := range map[string]string{
		FlagsSchemaID:     "schema/flags.json",
		TargetingSchemaID: "schema/targeting.json",
	} {
		raw, err := schemaFS.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read embedded schema %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("parse embedded schema %s: %w", name, err)
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("add schema %s: %w", id, err)
		}
	}
	v := &Validator{printer: message.NewPrinter(language.English)}
	var err error
	if v.provider, err = c.Compile(FlagsSchemaID); err != nil {
		return nil, fmt.Errorf("compile flag schema: %w", err)
	}
	if v.daemon, err = c.Compile(flagdConfigLocation); err != nil {
		return nil, fmt.Errorf("compile flagd schema: %w", err)
	}
	if v.targeting, err = c.Compile(TargetingSchemaID); err != nil {
		return nil, fmt.Errorf("compile targeting schema: %w", err)
	}
	return v, nil
}

// Parse decodes and validates a flag file. Errors wrap ErrInvalid and, as
// *ValidationError, list every problem naming the flag and field.
func (v *Validator) Parse(data []byte) (*Document, error) {
	d, err := Decode(data)
	if err != nil {
		return nil, err
	}
	// Semantic checks first: their messages are specific ("defaultVariant
	// "x" is not a variant"), the schema's are generic. The schema stays the
	// authority for anything the semantic checks do not cover.
	if err := semanticCheck(d); err != nil {
		return nil, err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, syntaxProblem(data, err)
	}
	sch := v.provider
	if strings.HasSuffix(d.Schema, "flagd.json") {
		sch = v.daemon
	}
	if err := sch.Validate(inst); err != nil {
		return nil, v.schemaError(err)
	}
	return d, nil
}

// ParseEach decodes a flag file and checks it as Parse does, but judges
// each flag on its own, as flagd does when it serves a file: it returns the
// document with every problem found instead of refusing the whole file.
// Problems that name a flag concern that flag only; the error is for a file
// that cannot be used at all (not JSON, no flags object, flag-set or
// evaluator problems of its shape).
func (v *Validator) ParseEach(data []byte) (*Document, []Problem, error) {
	d, ps, err := decode(data)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range ps {
		if p.Flag == "" {
			return nil, nil, ps.err()
		}
	}
	collect := func(err error) {
		var ve *ValidationError
		if errors.As(err, &ve) {
			ps = append(ps, ve.Problems...)
		} else if err != nil {
			ps.add("", "", "", err.Error())
		}
	}
	collect(semanticCheck(d))
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, nil, syntaxProblem(data, err)
	}
	sch := v.provider
	if strings.HasSuffix(d.Schema, "flagd.json") {
		sch = v.daemon
	}
	if err := sch.Validate(inst); err != nil {
		// A flag the semantic checks already faulted fails the schema's
		// union of flag types as a whole, and the schema's leaves then
		// name unrelated branches ("variants: got string, want boolean"):
		// keep the specific findings only.
		faulted := map[string]bool{}
		for _, p := range ps {
			faulted[p.Flag] = true
		}
		schema := ps[:0:0]
		var ve *ValidationError
		if errors.As(v.schemaError(err), &ve) {
			for _, p := range ve.Problems {
				if p.Flag == "" || !faulted[p.Flag] {
					schema = append(schema, p)
				}
			}
		}
		ps = append(ps, schema...)
	}
	var out []Problem
	if err := ps.err(); err != nil {
		out = err.(*ValidationError).Problems
	}
	return d, out, nil
}

// Validate checks an in-memory document exactly as Parse checks a file.
func (v *Validator) Validate(d *Document) error {
	raw, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("marshal flag file: %w", err)
	}
	_, err = v.Parse(raw)
	return err
}

// ValidateTargeting checks a standalone targeting rule against flagd's
// targeting schema and the operator checks. $ref names are not resolved
// (there are no $evaluators to resolve them against).
func (v *Validator) ValidateTargeting(data []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return syntaxProblem(data, err)
	}
	var ps problems
	rule, err := decodeJSON(data)
	if err != nil {
		return syntaxProblem(data, err)
	}
	c := &targetingChecker{ps: &ps}
	c.check(rule, "targeting", false)
	if err := ps.err(); err != nil {
		return err
	}
	if err := v.targeting.Validate(inst); err != nil {
		return v.schemaError(err)
	}
	return nil
}

// schemaError converts a schema validation failure into problems. The
// flag schema is a union of four flag types and the targeting schema a
// union of a dozen rule shapes, so a single mistake yields errors in every
// branch; the deepest instance location is almost always the real one.
func (v *Validator) schemaError(err error) error {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &ValidationError{Problems: []Problem{{Message: err.Error()}}}
	}
	var leaves []*jsonschema.ValidationError
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			leaves = append(leaves, e)
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	// Keep, per flag (or evaluator), only the leaves at the deepest location.
	deepest := map[string]int{}
	owner := func(loc []string) string {
		if len(loc) >= 2 && (loc[0] == "flags" || loc[0] == "$evaluators") {
			return loc[0] + "/" + loc[1]
		}
		return ""
	}
	for _, l := range leaves {
		o := owner(l.InstanceLocation)
		deepest[o] = max(deepest[o], len(l.InstanceLocation))
	}
	var ps problems
	for _, l := range leaves {
		loc := l.InstanceLocation
		if len(loc) != deepest[owner(loc)] {
			continue
		}
		msg := l.ErrorKind.LocalizedString(v.printer)
		switch {
		case len(loc) >= 2 && loc[0] == "flags":
			ps.add(loc[1], "", fieldPath(loc[2:]), msg)
		case len(loc) >= 2 && loc[0] == "$evaluators":
			ps.add("", loc[1], fieldPath(loc[2:]), msg)
		case len(loc) == 0:
			ps.add("", "", "", msg)
		default:
			ps.add("", "", fieldPath(loc), msg)
		}
	}
	err = ps.err()
	if verr, ok := err.(*ValidationError); ok && len(verr.Problems) > maxSchemaProblems {
		n := len(verr.Problems) - maxSchemaProblems
		verr.Problems = append(verr.Problems[:maxSchemaProblems], Problem{Message: fmt.Sprintf("(%d more schema problems)", n)})
	}
	if err == nil {
		return &ValidationError{Problems: []Problem{{Message: ve.Error()}}}
	}
	return err
}

// fieldPath renders a JSON pointer's tokens as a.b[0].c.
func fieldPath(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		if _, err := strconv.Atoi(t); err == nil && b.Len() > 0 {
			fmt.Fprintf(&b, "[%s]", t)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(t)
	}
	return b.String()
}

// semanticCheck applies the rules the schema cannot express or expresses
// only as an opaque union failure.
func semanticCheck(d *Document) error {
	var ps problems
	evaluators := map[string]any{}
	for _, name := range sortedKeys(d.Evaluators) {
		rule, err := decodeJSON(d.Evaluators[name])
		if err != nil {
			ps.add("", name, "", "must be valid JSON")
			continue
		}
		evaluators[name] = rule
	}
	for name, cycle := range refCycles(evaluators) {
		ps.add("", name, "$ref", "reference cycle "+cycle)
	}
	for _, name := range sortedKeys(d.Evaluators) {
		rule, ok := evaluators[name]
		if !ok {
			continue
		}
		if _, isObj := rule.(map[string]any); !isObj {
			ps.add("", name, "", "must be a JsonLogic rule (an object)")
			continue
		}
		c := &targetingChecker{ps: &ps, evaluator: name, evaluators: evaluators, checkRefs: true}
		c.check(rule, "", false)
	}
	for _, key := range d.Keys() {
		checkFlag(key, d.Flags[key], evaluators, &ps)
	}
	checkSetMetadata(d.Metadata, &ps)
	return ps.err()
}

func checkSetMetadata(md Metadata, ps *problems) {
	for _, k := range []string{"flagSetId", "version"} {
		if v, ok := md[k]; ok {
			if _, isStr := v.(string); !isStr {
				ps.add("", "", "metadata."+k, "must be a string")
			}
		}
	}
	if v, ok := md[RevisionKey]; ok {
		if n, isInt := v.(int64); !isInt || n < 0 {
			ps.add("", "", "metadata."+RevisionKey, "must be a non-negative integer")
		}
	}
}

// variantKind classifies a variant value.
func variantKind(raw json.RawMessage) (string, error) {
	switch firstByte(raw) {
	case 't', 'f':
		return "boolean", nil
	case '"':
		return "string", nil
	case '{':
		return "object", nil
	case '[':
		return "array", nil
	case 'n':
		return "null", nil
	default:
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return "number", errors.New("number out of range")
		}
		return "number", nil
	}
}

func checkFlag(key string, f *Flag, evaluators map[string]any, ps *problems) {
	if key == "" {
		ps.addf(key, "", "", "flag key must not be empty")
	}
	switch f.State {
	case StateEnabled, StateDisabled:
	case "":
		ps.add(key, "", "state", `is required ("ENABLED" or "DISABLED")`)
	default:
		ps.addf(key, "", "state", `state %q is invalid (want "ENABLED" or "DISABLED")`, f.State)
	}
	if f.Variants == nil {
		ps.add(key, "", "variants", "is required")
	} else if len(f.Variants) == 0 {
		ps.add(key, "", "variants", "must define at least one variant")
	}
	kinds := map[string][]string{}
	for _, name := range f.VariantNames() {
		if name == "" {
			ps.add(key, "", "variants", "variant names must not be empty")
		}
		kind, err := variantKind(f.Variants[name])
		if err != nil {
			ps.addf(key, "", "variants."+name, "variants.%s: %v", name, err)
			continue
		}
		if kind == "array" || kind == "null" {
			ps.addf(key, "", "variants."+name, "variants.%s: %s values are not allowed (use boolean, string, number or object)", name, kind)
			continue
		}
		kinds[kind] = append(kinds[kind], name)
	}
	if len(kinds) > 1 {
		var parts []string
		for _, k := range sortedKeys(kinds) {
			parts = append(parts, fmt.Sprintf("%s %q", k, kinds[k]))
		}
		ps.addf(key, "", "variants", "variants must all have one type, got %s", strings.Join(parts, ", "))
	}
	if dv, ok := f.Default(); ok && len(f.Variants) > 0 {
		if _, exists := f.Variants[dv]; !exists {
			ps.addf(key, "", "defaultVariant", "defaultVariant %q is not a variant (have %q)", dv, f.VariantNames())
		}
	}
	if len(f.Targeting) > 0 {
		rule, err := decodeJSON(f.Targeting)
		switch _, isObj := rule.(map[string]any); {
		case err != nil:
			ps.add(key, "", "targeting", "must be valid JSON")
		case !isObj:
			ps.add(key, "", "targeting", "must be a JsonLogic rule (an object)")
		default:
			c := &targetingChecker{ps: ps, flag: key, variants: f.Variants, evaluators: evaluators, checkRefs: true}
			c.check(rule, "targeting", true)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// decodeJSON decodes raw JSON into generic values (float64 numbers).
func decodeJSON(raw []byte) (any, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return v, nil
}
