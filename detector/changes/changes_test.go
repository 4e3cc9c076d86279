package changes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/tailguard/tailguard/promembed"
)

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

const journal = `{"seq":1,"time":"2025-03-01T10:00:00Z","actor":"operator:alice","action":"rollout","reason":"vendor upgrade","flags":["backoff-strategy"],"changes":[{"kind":"flag","key":"backoff-strategy","before":{"state":"ENABLED","variants":{"legacy":"exponential","new":"decorrelated"},"defaultVariant":"legacy"},"after":{"state":"ENABLED","variants":{"legacy":"exponential","new":"decorrelated"},"defaultVariant":"legacy","targeting":{"fractional":[["new",50],["legacy",50]]}}}],"revisionBefore":1,"revisionAfter":2,"unknownField":{"x":1}}

{"seq":2,"time":"2025-03-01T10:05:00Z","actor":"controller","action":"update","incident":"abc","reason":"tune cap","flags":["backoff-constants"],"changes":[{"kind":"flag","key":"backoff-constants","before":{"state":"ENABLED","variants":{"v":{"cap":"2s"}},"defaultVariant":"v"},"after":{"state":"ENABLED","variants":{"v":{"cap":"1s"}},"defaultVariant":"v"}},{"kind":"metadata","before":null,"after":{}}]}
{"seq":3,"time":"2025-03-01T10:06:00Z","actor":"controller","action":"set","flags":["backoff-strategy"]}
{"seq":4,"time":"2025-03-01T10:06:01Z","actor":"system","action":"abort","aborts":3,"flags":[]}
{"seq":5,"time":"2025-03-01T10:10:00Z","actor":"operator:bob","action":"disable","flags":["backoff-strategy"],"changes":[{"kind":"flag","key":"backoff-strategy","before":{"state":"ENABLED","variants":{"legacy":"exponential","new":"decorrelated"},"defaultVariant":"new"},"after":{"state":"DISABLED","variants":{"legacy":"exponential","new":"decorrelated"},"defaultVariant":"new"}}]}
{"seq":6,"time":"2025-03-01T10:11:00Z","actor":"cont`

func TestParseJournal(t *testing.T) {
	entries, err := ParseJournal(strings.NewReader(journal))
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, e := range entries {
		seqs = append(seqs, e.Seq)
	}
	// Entry 3 was aborted, 4 is the abort marker, 6 is a torn tail.
	if want := []int64{1, 2, 5}; !equalInts(seqs, want) {
		t.Errorf("seqs = %v, want %v", seqs, want)
	}
	for _, bad := range []struct{ in, want string }{
		{"{not json}\n{\"time\":\"2025-03-01T10:00:00Z\"}\n", "journal line 1"},
		{"{\"seq\":1}\n{\"time\":\"2025-03-01T10:00:00Z\"}\n", "field time is missing"},
	} {
		if _, err := ParseJournal(strings.NewReader(bad.in)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseJournal(%q) err = %v, want %q", bad.in, err, bad.want)
		}
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestJournalSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json.journal.jsonl")
	if err := os.WriteFile(path, []byte(journal), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := NewJournalSource(path, map[string]FlagScope{
		"backoff-strategy":  {Label: "strategy"},
		"backoff-constants": {Scope: map[string]string{"upstream": "payments"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := src.Changes(context.Background(), t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 {
		t.Fatalf("events = %v, want 3", evs)
	}
	want := []struct {
		component, from, to, scope, reason string
	}{
		{"backoff-strategy", "exponential", "exponential+decorrelated (targeted)", `{strategy="decorrelated"}`, "rollout: vendor upgrade"},
		{"backoff-constants", "v", "v", `{upstream="payments"}`, "update: tune cap"},
		{"backoff-strategy", "decorrelated", "disabled", `{}`, "disable"},
	}
	for i, w := range want {
		e := evs[i]
		if e.Component != w.component || e.From != w.from || e.To != w.to || FormatLabels(e.Scope) != w.scope || e.Reason != w.reason || e.Kind != KindFlag {
			t.Errorf("event %d = %+v, want %+v", i, e, w)
		}
	}
	if evs[1].Incident != "abc" || evs[1].Actor != "controller" {
		t.Errorf("incident/actor lost: %+v", evs[1])
	}

	// Time filter and a missing file.
	evs, _ = src.Changes(context.Background(), t0.Add(time.Minute), t0.Add(6*time.Minute))
	if len(evs) != 1 || evs[0].Component != "backoff-constants" {
		t.Errorf("filtered events = %v", evs)
	}
	missing, _ := NewJournalSource(filepath.Join(t.TempDir(), "none"), nil)
	if evs, err := missing.Changes(context.Background(), t0, t0.Add(time.Hour)); err != nil || len(evs) != 0 {
		t.Errorf("missing journal: %v, %v", evs, err)
	}
	if _, err := NewJournalSource("", nil); err == nil {
		t.Error("empty path accepted")
	}
}

func TestManifest(t *testing.T) {
	for _, in := range []string{
		"time: 2025-03-01T09:58:00Z\nname: vendor-2025.1\nactor: ci\ncomponents:\n  - {name: dten-gateway, from: \"2.3\", to: \"3.0\", scope: {job: shop}}\n",
		`{"time":"2025-03-01T09:58:00Z","name":"vendor-2025.1","actor":"ci","components":[{"name":"dten-gateway","from":"2.3","to":"3.0","scope":{"job":"shop"}}]}`,
	} {
		m, err := ParseManifest(strings.NewReader(in))
		if err != nil {
			t.Fatalf("ParseManifest(%q): %v", in, err)
		}
		evs := m.Events("manifest:x")
		if len(evs) != 1 {
			t.Fatalf("events = %v", evs)
		}
		e := evs[0]
		if e.Kind != KindDeclared || e.Component != "dten-gateway" || e.From != "2.3" || e.To != "3.0" || e.Scope["job"] != "shop" ||
			!e.Time.Equal(t0.Add(-2*time.Minute)) || e.Reason != "vendor-2025.1" || e.ID != "declared/dten-gateway@2025-03-01T09:58:00Z" {
			t.Errorf("event = %+v", e)
		}
	}
	for _, bad := range []struct{ in, want string }{
		{"", "empty"},
		{"time: 2025-03-01T09:58:00Z\ncomponents: []\n", "components is empty"},
		{"components: [{name: a, to: b}]\n", "time is required"},
		{"time: 2025-03-01T09:58:00Z\ncomponents: [{name: a}]\n", "components[0].to"},
		{"time: 2025-03-01T09:58:00Z\ncomponents: [{to: b}]\n", "components[0].name"},
		{"time: 2025-03-01T09:58:00Z\ncomponents: [{name: a, to: b}, {name: a, to: c}]\n", "listed twice"},
		{"time: 2025-03-01T09:58:00Z\nkind: weird\ncomponents: [{name: a, to: b}]\n", "field kind"},
		{"time: 2025-03-01T09:58:00Z\nextra: 1\ncomponents: [{name: a, to: b}]\n", "field extra not found"},
	} {
		if _, err := ParseManifest(strings.NewReader(bad.in)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseManifest(%q) err = %v, want %q", bad.in, err, bad.want)
		}
	}

	dir := t.TempDir()
	p := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(p, []byte("time: 2025-03-01T09:58:00Z\ncomponents: [{name: a, to: b}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	evs, err := ManifestFile(p).Changes(context.Background(), t0.Add(-time.Hour), t0)
	if err != nil || len(evs) != 1 || evs[0].Sources[0] != "manifest:"+p {
		t.Errorf("ManifestFile = %v, %v", evs, err)
	}
	if evs, err := ManifestFile(filepath.Join(dir, "none")).Changes(context.Background(), t0, t0); err != nil || evs != nil {
		t.Errorf("missing manifest: %v, %v", evs, err)
	}
}

func TestMerge(t *testing.T) {
	declared := Event{ID: "declared/a@1", Time: t0.Add(-2 * time.Minute), Kind: KindDeclared, Component: "a", From: "1", To: "2", Actor: "ci", Reason: "upgrade", Scope: map[string]string{"job": "shop"}, Sources: []string{"manifest:m"}}
	observed := Event{ID: "version/a@2", Time: t0, Kind: KindVersion, Component: "a", To: "2", Sources: []string{"prometheus:a_build_info"}}
	other := Event{ID: "flag/f@3", Time: t0, Kind: KindFlag, Component: "f", To: "on", Sources: []string{"journal:j"}}
	late := Event{ID: "declared/a@4", Time: t0.Add(time.Hour), Kind: KindDeclared, Component: "a", To: "2", Sources: []string{"manifest:m2"}}
	got := Merge([]Event{observed, other, declared, late}, 15*time.Minute)
	if len(got) != 3 {
		t.Fatalf("Merge = %v, want 3 events", got)
	}
	m := got[0]
	if m.ID != "version/a@2" || !m.Time.Equal(t0) || m.Kind != KindVersion || m.From != "1" || m.Actor != "ci" ||
		m.Reason != "upgrade" || m.Scope["job"] != "shop" || len(m.Sources) != 2 {
		t.Errorf("merged = %+v", m)
	}
	if got[1].ID != "flag/f@3" || got[2].ID != "declared/a@4" {
		t.Errorf("order = %v", got)
	}
	if declared.Scope == nil || len(declared.Sources) != 1 {
		t.Error("Merge modified its input")
	}
}

type failing struct{}

func (failing) Changes(context.Context, time.Time, time.Time) ([]Event, error) {
	return nil, errors.New("boom")
}

func TestMulti(t *testing.T) {
	a := Static{{ID: "x", Time: t0, Component: "a", To: "1"}}
	b := Static{{ID: "y", Time: t0.Add(time.Hour), Component: "b", To: "1"}}
	m := NewMulti(time.Minute, map[string]Source{"a": a, "b": b})
	evs, err := m.Changes(context.Background(), t0, t0.Add(30*time.Minute))
	if err != nil || len(evs) != 1 || evs[0].ID != "x" {
		t.Errorf("Changes = %v, %v", evs, err)
	}
	m = NewMulti(time.Minute, map[string]Source{"a": a, "broken": failing{}})
	if _, err := m.Changes(context.Background(), t0, t0); err == nil || !strings.Contains(err.Error(), "changes from broken: boom") {
		t.Errorf("err = %v", err)
	}
	if s := (Event{Kind: KindFlag, Component: "f", To: "on", Time: t0, Scope: map[string]string{"s": "x"}}).String(); s != `flag f -→on at 2025-03-01T10:00:00Z scope {s="x"}` {
		t.Errorf("String = %q", s)
	}
}

func TestBuildInfoSource(t *testing.T) {
	db, err := promembed.Open(promembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	app := db.Appender(context.Background())
	series := func(instance, version string) labels.Labels {
		return labels.FromStrings("__name__", "dten_gateway_build_info", "job", "shop", "instance", instance, "version", version)
	}
	// Two instances on 2.3; shop-0 moves to 3.0 at t0, shop-1 at t0+10m.
	for ts := t0.Add(-30 * time.Minute); ts.Before(t0.Add(30 * time.Minute)); ts = ts.Add(15 * time.Second) {
		for i, at := range []time.Time{t0, t0.Add(10 * time.Minute)} {
			inst := []string{"shop-0", "shop-1"}[i]
			v := "2.3"
			if !ts.Before(at) {
				v = "3.0"
			}
			if err := app.Append(series(inst, v), ts, 1); err != nil {
				t.Fatal(err)
			}
			if !ts.Before(at) && ts.Add(-15*time.Second).Before(at) {
				if err := app.AppendStale(series(inst, "2.3"), ts); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	src, err := NewBuildInfoSource(db, time.Minute, BuildInfo{Component: "dten-gateway", Metric: "dten_gateway_build_info", Selector: `job="shop"`, Scope: map[string]string{"job": "shop"}})
	if err != nil {
		t.Fatal(err)
	}
	if q := src.Queries(); len(q) != 1 || q[0] != `count by (version) (dten_gateway_build_info{job="shop"})` {
		t.Errorf("queries = %v", q)
	}
	evs, err := src.Changes(context.Background(), t0.Add(-20*time.Minute), t0.Add(20*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	// The rolling update is one change: 3.0 appears once.
	if len(evs) != 1 {
		t.Fatalf("events = %v, want one", evs)
	}
	e := evs[0]
	if !e.Time.Equal(t0) || e.From != "2.3" || e.To != "3.0" || e.Kind != KindVersion || e.Scope["job"] != "shop" || e.ID != "version/dten-gateway@2025-03-01T10:00:00Z" {
		t.Errorf("event = %+v", e)
	}
	// Before the change: nothing.
	if evs, err := src.Changes(context.Background(), t0.Add(-20*time.Minute), t0.Add(-time.Minute)); err != nil || len(evs) != 0 {
		t.Errorf("events before the change = %v, %v", evs, err)
	}
	if _, err := src.Changes(context.Background(), t0, t0.Add(-time.Minute)); err == nil {
		t.Error("reversed range accepted")
	}

	for _, bad := range []BuildInfo{
		{Metric: "x_build_info"},
		{Component: "a", Metric: "bad-name"},
		{Component: "a", Metric: "x", Selector: "{job=}"},
		{Component: "a", Metric: "x", VersionLabel: "1x"},
	} {
		if _, err := NewBuildInfoSource(db, time.Minute, bad); err == nil {
			t.Errorf("NewBuildInfoSource(%+v) accepted", bad)
		}
	}
	if _, err := NewBuildInfoSource(nil, time.Minute); err == nil {
		t.Error("nil querier accepted")
	}
	if _, err := NewBuildInfoSource(db, 0); err == nil {
		t.Error("zero step accepted")
	}
}

type warnQuerier struct{ v model.Value }

func (w warnQuerier) QueryRange(context.Context, string, v1.Range) (model.Value, v1.Warnings, error) {
	return w.v, v1.Warnings{"partial response"}, nil
}

func TestBuildInfoWarnings(t *testing.T) {
	src, err := NewBuildInfoSource(warnQuerier{model.Matrix{}}, time.Minute, BuildInfo{Component: "a", Metric: "a_build_info"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Changes(context.Background(), t0, t0.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "partial response") {
		t.Errorf("err = %v, want the warning", err)
	}
}

func FuzzParseJournal(f *testing.F) {
	f.Add(journal)
	f.Add("")
	f.Add("{}\n")
	f.Add(`{"time":"2025-03-01T10:00:00Z","flags":["a"],"changes":[{"key":"a","before":1,"after":"x"}]}` + "\n")
	f.Fuzz(func(t *testing.T, in string) {
		entries, err := ParseJournal(strings.NewReader(in))
		if err != nil {
			return
		}
		src := &JournalSource{path: "fuzz", scopes: map[string]FlagScope{"a": {Label: "strategy"}}}
		for _, e := range entries {
			for _, ev := range src.events(e) {
				if ev.Component == "" || ev.ID == "" {
					t.Fatalf("event without component or id: %+v", ev)
				}
			}
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Add("time: 2025-03-01T09:58:00Z\ncomponents: [{name: a, to: b}]\n")
	f.Add(`{"time":"2025-03-01T09:58:00Z","components":[{"name":"a","to":"b"}]}`)
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		m, err := ParseManifest(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, e := range m.Events("fuzz") {
			if e.Component == "" || e.To == "" || e.Time.IsZero() {
				t.Fatalf("invalid event from a valid manifest: %+v", e)
			}
		}
	})
}

func TestDeclared(t *testing.T) {
	d := NewDeclared(2)
	m := Manifest{Time: t0, Components: []ManifestComponent{{Name: "a", To: "1"}, {Name: "b", To: "2"}, {Name: "c", To: "3"}}}
	if err := d.Add(m, "api:ci"); err != nil {
		t.Fatal(err)
	}
	if err := d.Add(Manifest{}, "api:ci"); err == nil {
		t.Error("invalid manifest accepted")
	}
	evs, err := d.Changes(context.Background(), t0, t0)
	if err != nil || len(evs) != 2 || evs[0].Component != "b" || evs[1].Sources[0] != "api:ci" {
		t.Errorf("Changes = %v, %v; want the newest two", evs, err)
	}
}

// TestJournalKeyLabel: a constants flag keyed by strategy scopes a change
// of one entry to that strategy's slices; a change of several entries, or
// of a flat object, keeps the fixed scope only.
func TestJournalKeyLabel(t *testing.T) {
	entry := func(seq int, before, after string) string {
		return fmt.Sprintf(`{"seq":%d,"time":"2025-03-01T10:0%d:00Z","actor":"operator:alice","action":"update","flags":["backoff-constants"],"changes":[{"kind":"flag","key":"backoff-constants","before":{"state":"ENABLED","variants":{"default":%s},"defaultVariant":"default"},"after":{"state":"ENABLED","variants":{"default":%s},"defaultVariant":"default"}}]}`+"\n", seq, seq, before, after)
	}
	lines := entry(1, `{"exponential":{"base":"50ms"},"decorrelated":{"base":"20ms"}}`, `{"exponential":{"base":"50ms"},"decorrelated":{"base":"100ms","cap":"2s"}}`) +
		entry(2, `{"exponential":{"base":"50ms"}}`, `{"exponential":{"base":"60ms"},"decorrelated":{"base":"20ms"}}`) +
		entry(3, `{"base":"50ms"}`, `{"base":"60ms"}`) +
		entry(4, `{"exponential":{"base":"50ms"}}`, `{"exponential":{"base":"50ms"},"decorrelated":{"base":"20ms"}}`)
	path := filepath.Join(t.TempDir(), "flags.json.journal.jsonl")
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := NewJournalSource(path, map[string]FlagScope{"backoff-constants": {Scope: map[string]string{"upstream": "payments"}, KeyLabel: "strategy"}})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := src.Changes(context.Background(), t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{strategy="decorrelated",upstream="payments"}`, `{upstream="payments"}`, `{upstream="payments"}`, `{strategy="decorrelated",upstream="payments"}`}
	if len(evs) != len(want) {
		t.Fatalf("events %v, want %d", evs, len(want))
	}
	for i, w := range want {
		if got := FormatLabels(evs[i].Scope); got != w {
			t.Errorf("entry %d: scope %s, want %s", i+1, got, w)
		}
	}
}
