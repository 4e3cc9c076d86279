package flags

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
)

// State is a flag's state: ENABLED or DISABLED.
type State string

// Flag states.
const (
	StateEnabled  State = "ENABLED"
	StateDisabled State = "DISABLED"
)

// RevisionKey is the flag-set metadata key holding the file's revision.
// flagd allows string, number and boolean values in flag-set metadata and
// passes them through to evaluation metadata, so a real flagd (or any flagd
// in-process provider) still loads a file that carries it.
const RevisionKey = "tailguard.revision"

// Metadata is flagd flag or flag-set metadata: values are string, bool,
// float64 or int64 (integral JSON numbers decode to int64).
type Metadata map[string]any

// Document is a flagd flag-definition file. Unknown members are kept in
// Extra and written back unchanged, so tools that annotate the file do not
// lose data when tailguard rewrites it.
type Document struct {
	// Schema is the "$schema" member, if any.
	Schema string
	// Flags maps flag keys to definitions. Files using flagd's array form
	// ("flags": [{"key": ...}]) are read into this map and written back in
	// the map form that every flagd provider accepts.
	Flags map[string]*Flag
	// Evaluators holds shared targeting rules ("$evaluators"), compact JSON.
	Evaluators map[string]json.RawMessage
	// Metadata is the flag-set metadata.
	Metadata Metadata
	// Extra holds unknown top-level members, compact JSON.
	Extra map[string]json.RawMessage
}

// Flag is one flag definition.
type Flag struct {
	State State
	// Variants maps variant names to their values (compact JSON).
	Variants map[string]json.RawMessage
	// DefaultVariant is nil when the flag has no default variant (the member
	// is absent or null): evaluation then falls back to the caller's default.
	DefaultVariant *string
	// Targeting is the JsonLogic targeting rule (compact JSON), nil if none.
	Targeting json.RawMessage
	Metadata  Metadata
	// Extra holds unknown members, compact JSON.
	Extra map[string]json.RawMessage
}

// Revision returns the file revision stored in the flag-set metadata, or 0
// if the file has never been written by a Store.
func (d *Document) Revision() int64 {
	if d == nil {
		return 0
	}
	switch v := d.Metadata[RevisionKey].(type) {
	case int64:
		return v
	case float64:
		if v == math.Trunc(v) && v >= 0 && v < 1<<53 {
			return int64(v)
		}
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return 0
}

// SetRevision stores rev in the flag-set metadata.
func (d *Document) SetRevision(rev int64) {
	if d.Metadata == nil {
		d.Metadata = Metadata{}
	}
	d.Metadata[RevisionKey] = rev
}

// Flag returns the flag with the given key or an error wrapping ErrNotFound.
func (d *Document) Flag(key string) (*Flag, error) {
	f, ok := d.Flags[key]
	if !ok || f == nil {
		return nil, fmt.Errorf("flag %q: %w", key, ErrNotFound)
	}
	return f, nil
}

// Keys returns the flag keys in sorted order.
func (d *Document) Keys() []string {
	return slices.Sorted(maps.Keys(d.Flags))
}

// Clone returns a deep copy of d.
func (d *Document) Clone() *Document {
	if d == nil {
		return nil
	}
	c := &Document{
		Schema:     d.Schema,
		Evaluators: cloneRawMap(d.Evaluators),
		Metadata:   maps.Clone(d.Metadata),
		Extra:      cloneRawMap(d.Extra),
	}
	if d.Flags != nil {
		c.Flags = make(map[string]*Flag, len(d.Flags))
		for k, f := range d.Flags {
			c.Flags[k] = f.Clone()
		}
	}
	return c
}

// Clone returns a deep copy of f.
func (f *Flag) Clone() *Flag {
	if f == nil {
		return nil
	}
	c := &Flag{
		State:     f.State,
		Variants:  cloneRawMap(f.Variants),
		Targeting: bytes.Clone(f.Targeting),
		Metadata:  maps.Clone(f.Metadata),
		Extra:     cloneRawMap(f.Extra),
	}
	if f.DefaultVariant != nil {
		v := *f.DefaultVariant
		c.DefaultVariant = &v
	}
	return c
}

// VariantNames returns the variant names in sorted order.
func (f *Flag) VariantNames() []string {
	return slices.Sorted(maps.Keys(f.Variants))
}

// Default returns the default variant name and whether there is one.
func (f *Flag) Default() (string, bool) {
	if f.DefaultVariant == nil {
		return "", false
	}
	return *f.DefaultVariant, true
}

// SetDefault sets the default variant; variant must exist.
func (f *Flag) SetDefault(variant string) error {
	if _, ok := f.Variants[variant]; !ok {
		return invalidf("variant %q is not a variant (have %q)", variant, f.VariantNames())
	}
	f.DefaultVariant = &variant
	return nil
}

// HasTargeting reports whether the flag has a non-empty targeting rule;
// flagd treats a missing rule and "{}" alike.
func (f *Flag) HasTargeting() bool {
	t := bytes.TrimSpace(f.Targeting)
	return len(t) > 0 && !bytes.Equal(t, []byte("{}")) && !bytes.Equal(t, []byte("null"))
}

// Equal reports whether two flags have the same canonical JSON form.
func (f *Flag) Equal(g *Flag) bool {
	if f == nil || g == nil {
		return f == g
	}
	a, errA := json.Marshal(f)
	b, errB := json.Marshal(g)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

func cloneRawMap(m map[string]json.RawMessage) map[string]json.RawMessage {
	if m == nil {
		return nil
	}
	c := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		c[k] = bytes.Clone(v)
	}
	return c
}

// Decode parses a flag file. It checks JSON syntax and the shape the model
// needs (objects where objects belong, strings where strings belong) and
// reports problems naming the flag and field; it does not apply the JSON
// schema or semantic checks (see Validator). Errors wrap ErrInvalid.
func Decode(data []byte) (*Document, error) {
	d, ps, err := decode(data)
	if err != nil {
		return nil, err
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	return d, nil
}

// decode parses a flag file, collecting shape problems; the error is for
// a file that is not a JSON object at all.
func decode(data []byte) (*Document, problems, error) {
	top, err := decodeObject(data)
	if err != nil {
		return nil, nil, syntaxProblem(data, err)
	}
	var ps problems
	d := &Document{Flags: map[string]*Flag{}}
	for name, raw := range top {
		switch name {
		case "$schema":
			if err := json.Unmarshal(raw, &d.Schema); err != nil {
				ps.add("", "", "$schema", "must be a string")
			}
		case "flags":
			d.Flags = decodeFlags(raw, &ps)
		case "$evaluators":
			evs, err := decodeObject(raw)
			if err != nil {
				ps.add("", "", "$evaluators", "must be an object")
				continue
			}
			d.Evaluators = make(map[string]json.RawMessage, len(evs))
			for k, v := range evs {
				d.Evaluators[k] = compact(v)
			}
		case "metadata":
			d.Metadata = decodeMetadata(raw, "", "metadata", &ps)
		default:
			if d.Extra == nil {
				d.Extra = map[string]json.RawMessage{}
			}
			d.Extra[name] = compact(raw)
		}
	}
	if _, ok := top["flags"]; !ok {
		ps.add("", "", "flags", "is required")
	}
	return d, ps, nil
}

// ParseFlag decodes one flag definition, such as the Before and After of
// a journaled Change. It checks shape only, like Decode.
func ParseFlag(key string, raw []byte) (*Flag, error) {
	obj, err := decodeObject(raw)
	if err != nil {
		return nil, fmt.Errorf("flag %q: %w", key, syntaxProblem(raw, err))
	}
	var ps problems
	f := decodeFlag(key, obj, &ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return f, nil
}

func decodeFlags(raw json.RawMessage, ps *problems) map[string]*Flag {
	out := map[string]*Flag{}
	if t := firstByte(raw); t == '[' {
		// flagd daemon array form: [{"key": "...", ...}].
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			ps.add("", "", "flags", "must be an object or an array")
			return out
		}
		for i, item := range items {
			obj, err := decodeObject(item)
			if err != nil {
				ps.add("", "", fmt.Sprintf("flags[%d]", i), "must be an object")
				continue
			}
			var key string
			if k, ok := obj["key"]; !ok || json.Unmarshal(k, &key) != nil || key == "" {
				ps.add("", "", fmt.Sprintf("flags[%d].key", i), "must be a non-empty string")
				continue
			}
			if _, dup := out[key]; dup {
				ps.add(key, "", "key", "is defined more than once")
				continue
			}
			delete(obj, "key")
			out[key] = decodeFlag(key, obj, ps)
		}
		return out
	}
	objs, err := decodeObject(raw)
	if err != nil {
		ps.add("", "", "flags", "must be an object")
		return out
	}
	for key, item := range objs {
		obj, err := decodeObject(item)
		if err != nil {
			ps.add(key, "", "", "must be an object")
			continue
		}
		out[key] = decodeFlag(key, obj, ps)
	}
	return out
}

func decodeFlag(key string, obj map[string]json.RawMessage, ps *problems) *Flag {
	f := &Flag{}
	for name, raw := range obj {
		switch name {
		case "state":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				ps.add(key, "", "state", "must be a string")
				continue
			}
			f.State = State(s)
		case "variants":
			vs, err := decodeObject(raw)
			if err != nil {
				ps.add(key, "", "variants", "must be an object")
				continue
			}
			f.Variants = make(map[string]json.RawMessage, len(vs))
			for k, v := range vs {
				f.Variants[k] = compact(v)
			}
		case "defaultVariant":
			if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
				continue
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				ps.add(key, "", "defaultVariant", "must be a string or null")
				continue
			}
			f.DefaultVariant = &s
		case "targeting":
			if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
				continue
			}
			f.Targeting = compact(raw)
		case "metadata":
			f.Metadata = decodeMetadata(raw, key, "metadata", ps)
		default:
			if f.Extra == nil {
				f.Extra = map[string]json.RawMessage{}
			}
			f.Extra[name] = compact(raw)
		}
	}
	return f
}

func decodeMetadata(raw json.RawMessage, flag, field string, ps *problems) Metadata {
	obj, err := decodeObject(raw)
	if err != nil {
		ps.add(flag, "", field, "must be an object")
		return nil
	}
	md := make(Metadata, len(obj))
	for k, v := range obj {
		val, err := decodeScalar(v)
		if err != nil {
			ps.add(flag, "", field+"."+k, "must be a string, number or boolean")
			continue
		}
		md[k] = val
	}
	return md
}

// decodeScalar decodes a JSON string, number or boolean. Integral numbers
// that fit an int64 decode to int64, other numbers to float64.
func decodeScalar(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case string, bool:
		return x, nil
	case json.Number:
		if i, err := strconv.ParseInt(x.String(), 10, 64); err == nil {
			return i, nil
		}
		f, err := strconv.ParseFloat(x.String(), 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, fmt.Errorf("number %s out of range", x)
		}
		return f, nil
	default:
		return nil, errors.New("not a scalar")
	}
}

func decodeObject(raw []byte) (map[string]json.RawMessage, error) {
	if firstByte(raw) != '{' {
		if !json.Valid(raw) {
			var v any
			return nil, json.Unmarshal(raw, &v)
		}
		return nil, errors.New("not an object")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

func compact(raw []byte) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return bytes.Clone(raw)
	}
	return buf.Bytes()
}

// syntaxProblem turns a JSON decoding error into a ValidationError naming
// the line and column.
func syntaxProblem(data []byte, err error) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return &ValidationError{Problems: []Problem{{Message: "file is empty"}}}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		// Offset counts the offending byte; point at it.
		line, col := lineCol(data, max(se.Offset-1, 0))
		return &ValidationError{Problems: []Problem{{Message: fmt.Sprintf("line %d, column %d: %s", line, col, se.Error())}}}
	}
	return &ValidationError{Problems: []Problem{{Message: "top level: must be a JSON object"}}}
}

func lineCol(data []byte, offset int64) (int, int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	line, col := 1, 1
	for _, b := range data[:offset] {
		if b == '\n' {
			line++
			col = 1
			continue
		}
		col++
	}
	return line, col
}

// MarshalJSON writes the document in flagd's map form with a stable member
// order: $schema, metadata, flags (sorted by key), $evaluators, then unknown
// members.
func (d *Document) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	w := objectWriter{b: &b}
	if d.Schema != "" {
		if err := w.member("$schema", d.Schema); err != nil {
			return nil, err
		}
	}
	if len(d.Metadata) > 0 {
		if err := w.member("metadata", d.Metadata); err != nil {
			return nil, err
		}
	}
	flags := d.Flags
	if flags == nil {
		flags = map[string]*Flag{}
	}
	if err := w.member("flags", flags); err != nil {
		return nil, err
	}
	if len(d.Evaluators) > 0 {
		if err := w.member("$evaluators", d.Evaluators); err != nil {
			return nil, err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(d.Extra)) {
		if err := w.member(k, d.Extra[k]); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// MarshalJSON writes the flag with a stable member order: state,
// defaultVariant, variants, targeting, metadata, then unknown members.
func (f *Flag) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	w := objectWriter{b: &b}
	if err := w.member("state", f.State); err != nil {
		return nil, err
	}
	if f.DefaultVariant != nil {
		if err := w.member("defaultVariant", *f.DefaultVariant); err != nil {
			return nil, err
		}
	}
	variants := f.Variants
	if variants == nil {
		variants = map[string]json.RawMessage{}
	}
	if err := w.member("variants", variants); err != nil {
		return nil, err
	}
	if len(f.Targeting) > 0 {
		if err := w.member("targeting", f.Targeting); err != nil {
			return nil, err
		}
	}
	if len(f.Metadata) > 0 {
		if err := w.member("metadata", f.Metadata); err != nil {
			return nil, err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(f.Extra)) {
		if err := w.member(k, f.Extra[k]); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

type objectWriter struct {
	b *bytes.Buffer
	n int
}

func (w *objectWriter) member(name string, v any) error {
	val, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	key, _ := json.Marshal(name)
	if w.n > 0 {
		w.b.WriteByte(',')
	}
	w.n++
	w.b.Write(key)
	w.b.WriteByte(':')
	w.b.Write(val)
	return nil
}

// Marshal returns the document as indented JSON with a trailing newline,
// the form the Store writes.
func Marshal(d *Document) ([]byte, error) {
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("marshal flag file: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("indent flag file: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}
