package changes

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// JournalEntry is the part of a flag journal line the detector reads. The
// journal is owned by package flags (flags.Entry); unknown fields are
// ignored, so the format can grow.
type JournalEntry struct {
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"`
	Incident string    `json:"incident"`
	Reason   string    `json:"reason"`
	// Flags lists the flag keys the entry touched.
	Flags []string `json:"flags"`
	// Changes holds the before and after of each flag (flagd flag objects),
	// when the writer recorded them.
	Changes []JournalChange `json:"changes"`
	// Aborts is the Seq of an earlier entry that never reached the flag file
	// (set on entries with action "abort").
	Aborts int64 `json:"aborts"`
}

// JournalChange is the before and after of one flag.
type JournalChange struct {
	Kind   string          `json:"kind"`
	Key    string          `json:"key"`
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
}

const actionAbort = "abort"

// ParseJournal reads JSON lines. Blank lines are skipped; an unterminated or
// unparsable last line is a write cut short and is skipped too; a broken
// line before the end is an error naming the line. Aborted entries and the
// abort markers themselves are dropped.
func ParseJournal(r io.Reader) ([]JournalEntry, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var entries []JournalEntry
	aborted := map[int64]bool{}
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		last := errors.Is(err, io.EOF)
		trimmed := bytes.TrimSpace(line)
		if len(trimmed) > 0 {
			var e JournalEntry
			perr := json.Unmarshal(trimmed, &e)
			switch {
			case last && (perr != nil || line[len(line)-1] != '\n'):
				// Torn tail: skip.
			case perr != nil:
				return nil, fmt.Errorf("journal line %d: %w", lineNo, perr)
			case e.Time.IsZero():
				return nil, fmt.Errorf("journal line %d: field time is missing", lineNo)
			case e.Action == actionAbort:
				aborted[e.Aborts] = true
			default:
				entries = append(entries, e)
			}
		}
		if last {
			break
		}
	}
	out := entries[:0]
	for _, e := range entries {
		if e.Seq == 0 || !aborted[e.Seq] {
			out = append(out, e)
		}
	}
	return out, nil
}

// FlagScope says which slices a flag's changes touch.
type FlagScope struct {
	// Label is the slice label that carries the flag's variant value, e.g.
	// "strategy" for backoff-strategy: a change moving traffic to variant
	// value "decorrelated" gets scope {strategy="decorrelated"}.
	Label string `yaml:"label"`
	// Scope holds fixed scope labels, e.g. {upstream: payments}.
	Scope map[string]string `yaml:"scope"`
	// KeyLabel is the slice label whose values key the flag's object
	// value, e.g. "strategy" for backoff-constants, which holds one entry
	// per strategy: a change to the "decorrelated" entry alone gets scope
	// {strategy="decorrelated"}.
	KeyLabel string `yaml:"key_label"`
}

// JournalSource reports flag changes from a flag journal file.
type JournalSource struct {
	path   string
	read   func(context.Context) ([]byte, error) // nil: read path
	scopes map[string]FlagScope
}

// NewJournalSource reads the journal at path (a missing file has no
// changes). scopes maps flag keys to the slices they touch.
func NewJournalSource(path string, scopes map[string]FlagScope) (*JournalSource, error) {
	if path == "" {
		return nil, errors.New("journal source: path is empty")
	}
	return &JournalSource{path: path, scopes: maps.Clone(scopes)}, nil
}

// NewJournalReaderSource reads a journal kept elsewhere (a Kubernetes
// ConfigMap, say): read returns its lines; name names it in events and
// errors.
func NewJournalReaderSource(name string, read func(context.Context) ([]byte, error), scopes map[string]FlagScope) (*JournalSource, error) {
	if name == "" || read == nil {
		return nil, errors.New("journal source: name and reader are required")
	}
	return &JournalSource{path: name, read: read, scopes: maps.Clone(scopes)}, nil
}

// Changes returns one event per flag touched by an entry in [from, to].
func (j *JournalSource) Changes(ctx context.Context, from, to time.Time) ([]Event, error) {
	var rd io.Reader
	if j.read != nil {
		data, err := j.read(ctx)
		if err != nil {
			return nil, fmt.Errorf("flag journal %s: %w", j.path, err)
		}
		rd = bytes.NewReader(data)
	} else {
		f, err := os.Open(j.path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("open flag journal: %w", err)
		}
		defer f.Close()
		rd = f
	}
	entries, err := ParseJournal(rd)
	if err != nil {
		return nil, fmt.Errorf("flag journal %s: %w", j.path, err)
	}
	var out []Event
	for _, e := range entries {
		if e.Time.Before(from) || e.Time.After(to) {
			continue
		}
		out = append(out, j.events(e)...)
	}
	return out, nil
}

func (j *JournalSource) events(e JournalEntry) []Event {
	keys := slices.Clone(e.Flags)
	byKey := map[string]JournalChange{}
	for _, c := range e.Changes {
		if c.Kind != "" && c.Kind != "flag" {
			continue
		}
		byKey[c.Key] = c
		if !slices.Contains(keys, c.Key) {
			keys = append(keys, c.Key)
		}
	}
	var out []Event
	for _, key := range keys {
		if key == "" {
			continue
		}
		ev := Event{
			ID:        NewID(KindFlag, key, e.Time),
			Time:      e.Time,
			Kind:      KindFlag,
			Component: key,
			Actor:     e.Actor,
			Reason:    e.Reason,
			Incident:  e.Incident,
			Sources:   []string{"journal:" + j.path},
		}
		if e.Action != "" {
			ev.Reason = strings.TrimSpace(e.Action + ": " + e.Reason)
			ev.Reason = strings.TrimSuffix(ev.Reason, ":")
		}
		fs := j.scopes[key]
		if len(fs.Scope) > 0 {
			ev.Scope = maps.Clone(fs.Scope)
		}
		if c, ok := byKey[key]; ok {
			before, after := parseFlag(c.Before), parseFlag(c.After)
			ev.From, ev.To = before.describe(), after.describe()
			if fs.Label != "" {
				if v, ok := newVariantValue(before, after); ok {
					if ev.Scope == nil {
						ev.Scope = map[string]string{}
					}
					ev.Scope[fs.Label] = v
				}
			}
			if fs.KeyLabel != "" {
				if k, ok := changedEntry(before, after); ok {
					if ev.Scope == nil {
						ev.Scope = map[string]string{}
					}
					ev.Scope[fs.KeyLabel] = k
				}
			}
		}
		out = append(out, ev)
	}
	return out
}

// changedEntry returns the one entry of the served object value (the
// default variant's) that differs between before and after, when exactly
// one does and it is itself an object: the per-strategy entry of a
// constants flag, not a field of a flat one.
func changedEntry(before, after flagState) (string, bool) {
	entries := func(f flagState) map[string]json.RawMessage {
		if f.DefaultVariant == nil {
			return nil
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(f.Variants[*f.DefaultVariant], &m) != nil {
			return nil
		}
		return m
	}
	b, a := entries(before), entries(after)
	if a == nil {
		return "", false
	}
	compact := func(raw json.RawMessage) string {
		var buf bytes.Buffer
		if json.Compact(&buf, raw) != nil {
			return string(raw)
		}
		return buf.String()
	}
	var changed []string
	for k := range mapsKeysUnion(a, b) {
		if compact(a[k]) != compact(b[k]) {
			changed = append(changed, k)
		}
	}
	if len(changed) != 1 {
		return "", false
	}
	v, ok := a[changed[0]]
	if !ok {
		v = b[changed[0]]
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(v, &obj) != nil {
		return "", false
	}
	return changed[0], true
}

func mapsKeysUnion(a, b map[string]json.RawMessage) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// flagState is the part of a flagd flag object that matters here.
type flagState struct {
	present        bool
	State          string                     `json:"state"`
	Variants       map[string]json.RawMessage `json:"variants"`
	DefaultVariant *string                    `json:"defaultVariant"`
	Targeting      json.RawMessage            `json:"targeting"`
}

func parseFlag(raw json.RawMessage) flagState {
	var f flagState
	if len(raw) == 0 || string(raw) == "null" {
		return f
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return f
	}
	f.present = true
	return f
}

// value returns a variant's value as text: the string itself for string
// variants, compact JSON otherwise.
func (f flagState) value(variant string) (string, bool) {
	raw, ok := f.Variants[variant]
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return string(raw), true
	}
	return buf.String(), true
}

// describe renders the flag's effective setting: the values of the
// variants it can serve, default first ("exponential+decorrelated
// (targeted)"), or "disabled" / "absent". Non-string values are shown by
// variant name.
func (f flagState) describe() string {
	if !f.present {
		return "absent"
	}
	if strings.EqualFold(f.State, "DISABLED") {
		return "disabled"
	}
	var parts []string
	for _, n := range f.used() {
		d := n
		if v, ok := f.value(n); ok && len(v) <= 40 && !strings.HasPrefix(v, "{") && !strings.HasPrefix(v, "[") {
			d = v
		}
		parts = append(parts, d)
	}
	if len(parts) == 0 {
		return "no default"
	}
	d := strings.Join(parts, "+")
	if len(f.Targeting) > 0 && string(f.Targeting) != "null" && string(f.Targeting) != "{}" {
		d += " (targeted)"
	}
	return d
}

// used returns the variant names the flag can serve: the default variant
// and every targeting string naming a variant (fractional splits, if/else
// branches).
func (f flagState) used() []string {
	if !f.present || strings.EqualFold(f.State, "DISABLED") {
		return nil
	}
	var out []string
	if f.DefaultVariant != nil {
		out = append(out, *f.DefaultVariant)
	}
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case string:
			if _, ok := f.Variants[t]; ok && !slices.Contains(out, t) {
				out = append(out, t)
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		case map[string]any:
			for _, x := range t {
				walk(x)
			}
		}
	}
	var tree any
	if len(f.Targeting) > 0 && json.Unmarshal(f.Targeting, &tree) == nil {
		walk(tree)
	}
	return out
}

// newVariantValue returns the value of the one variant the flag can serve
// after the change but could not before (the new cohort), or else the value
// of the new default variant.
func newVariantValue(before, after flagState) (string, bool) {
	if !after.present || strings.EqualFold(after.State, "DISABLED") {
		return "", false
	}
	prev := map[string]bool{}
	for _, n := range before.used() {
		if v, ok := before.value(n); ok {
			prev[v] = true
		}
	}
	var fresh []string
	for _, n := range after.used() {
		if v, ok := after.value(n); ok && !prev[v] && !slices.Contains(fresh, v) {
			fresh = append(fresh, v)
		}
	}
	if len(fresh) == 1 {
		return fresh[0], true
	}
	if after.DefaultVariant != nil {
		return after.value(*after.DefaultVariant)
	}
	return "", false
}
