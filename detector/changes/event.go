// Package changes discovers what changed, when, and what it touches: the
// candidate causes the detector ranks when a signal regresses.
//
// Events come from three kinds of source, each a Source:
//
//   - BuildInfoSource watches *_build_info metrics in Prometheus and reports
//     a version change when a new value of the version label appears
//     (count by (version) over a range, diffed step by step).
//   - JournalSource reads the flag store's journal (<flagfile>.journal.jsonl,
//     written by package flags) and reports one event per flag touched.
//   - Static holds declared changes: an upgrade Manifest read from a file, or
//     posted by CI/CD to the sidecar.
//
// Multi merges them, dropping duplicates: a declared upgrade and the build
// info change that shows it landing are one event, timed by the observation.
//
// Every Event has a scope: the labels of the slices it touches, for example
// {strategy="decorrelated"} for the backoff-strategy flag moving to the
// decorrelated variant, or {upstream="payments"} for a payments client. The
// detector uses scopes to localise a regression.
package changes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// Kind says where a change comes from.
type Kind string

// Kinds of change.
const (
	// KindVersion is a version label change seen in a *_build_info metric.
	KindVersion Kind = "version"
	// KindFlag is a feature flag change from the flag journal.
	KindFlag Kind = "flag"
	// KindDeclared is an upgrade declared by a manifest or by CI/CD.
	KindDeclared Kind = "declared"
	// KindConfig is a declared configuration change.
	KindConfig Kind = "config"
)

// Event is one change.
type Event struct {
	// ID identifies the event stably: kind, component and time.
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Kind Kind      `json:"kind"`
	// Component is the component that changed, or the flag key.
	Component string `json:"component"`
	// From and To describe the change: versions, or flag variants.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Scope holds the slice labels the change touches. Empty means the
	// whole service.
	Scope    map[string]string `json:"scope,omitempty"`
	Actor    string            `json:"actor,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Incident string            `json:"incident,omitempty"`
	// Sources names where the event was seen, e.g.
	// "prometheus:dten_gateway_build_info" or "journal:/etc/flags.json.journal.jsonl".
	Sources []string `json:"sources"`
}

// NewID returns the ID for a change of kind to component at t.
func NewID(kind Kind, component string, t time.Time) string {
	return fmt.Sprintf("%s/%s@%s", kind, component, t.UTC().Format(time.RFC3339))
}

// String describes the event on one line.
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Kind, e.Component)
	if e.From != "" || e.To != "" {
		fmt.Fprintf(&b, " %s→%s", orDash(e.From), orDash(e.To))
	}
	fmt.Fprintf(&b, " at %s", e.Time.UTC().Format(time.RFC3339))
	if len(e.Scope) > 0 {
		fmt.Fprintf(&b, " scope %s", FormatLabels(e.Scope))
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// FormatLabels renders labels as {a="1",b="2"}, sorted by name.
func FormatLabels(ls map[string]string) string {
	keys := slices.Sorted(maps.Keys(ls))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, ls[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// Source lists the changes in [from, to].
type Source interface {
	Changes(ctx context.Context, from, to time.Time) ([]Event, error)
}

// Static is a fixed list of events, e.g. declared upgrades.
type Static []Event

// Changes returns the events in [from, to].
func (s Static) Changes(_ context.Context, from, to time.Time) ([]Event, error) {
	var out []Event
	for _, e := range s {
		if !e.Time.Before(from) && !e.Time.After(to) {
			out = append(out, e)
		}
	}
	return out, nil
}

// Multi combines sources and merges their events.
type Multi struct {
	sources []Source
	names   []string
	window  time.Duration
}

// NewMulti returns a Source over sources (named for error messages);
// events describing the same change within window are merged (see Merge).
func NewMulti(window time.Duration, sources map[string]Source) *Multi {
	m := &Multi{window: window}
	for _, name := range slices.Sorted(maps.Keys(sources)) {
		m.names = append(m.names, name)
		m.sources = append(m.sources, sources[name])
	}
	return m
}

// Changes queries every source. It fails if any source fails: a change
// that cannot be seen must not be silently left out of attribution.
func (m *Multi) Changes(ctx context.Context, from, to time.Time) ([]Event, error) {
	var all []Event
	var errs []error
	for i, s := range m.sources {
		evs, err := s.Changes(ctx, from, to)
		if err != nil {
			errs = append(errs, fmt.Errorf("changes from %s: %w", m.names[i], err))
			continue
		}
		all = append(all, evs...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return Merge(all, m.window), nil
}

// kindRank orders kinds by how precisely they time a change: an observed
// version change beats a journaled flag write beats a declaration.
var kindRank = map[Kind]int{KindVersion: 0, KindFlag: 1, KindConfig: 2, KindDeclared: 3}

// Merge sorts events by time and merges those that describe the same
// change: same component and same To, at most window apart. The merged
// event keeps the time, kind and ID of the most precise observation (see
// kindRank), the union of sources and scopes, and the first non-empty From,
// actor and reason.
func Merge(events []Event, window time.Duration) []Event {
	evs := slices.Clone(events)
	sort.SliceStable(evs, func(i, j int) bool {
		if !evs[i].Time.Equal(evs[j].Time) {
			return evs[i].Time.Before(evs[j].Time)
		}
		return evs[i].ID < evs[j].ID
	})
	var out []Event
	for _, e := range evs {
		merged := false
		for i := range out {
			o := &out[i]
			if o.Component != e.Component || o.To != e.To || o.To == "" {
				continue
			}
			if d := e.Time.Sub(o.Time); d < -window || d > window {
				continue
			}
			*o = mergeTwo(*o, e)
			merged = true
			break
		}
		if !merged {
			e.Sources = slices.Clone(e.Sources)
			e.Scope = maps.Clone(e.Scope)
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

func mergeTwo(a, b Event) Event {
	best, other := a, b
	if kindRank[b.Kind] < kindRank[a.Kind] {
		best, other = b, a
	}
	out := best
	out.Sources = nil
	for _, s := range append(slices.Clone(a.Sources), b.Sources...) {
		if !slices.Contains(out.Sources, s) {
			out.Sources = append(out.Sources, s)
		}
	}
	out.Scope = maps.Clone(best.Scope)
	for k, v := range other.Scope {
		if out.Scope == nil {
			out.Scope = map[string]string{}
		}
		if _, ok := out.Scope[k]; !ok {
			out.Scope[k] = v
		}
	}
	if out.From == "" {
		out.From = other.From
	}
	if out.Actor == "" {
		out.Actor = other.Actor
	}
	if out.Reason == "" {
		out.Reason = other.Reason
	}
	if out.Incident == "" {
		out.Incident = other.Incident
	}
	return out
}
