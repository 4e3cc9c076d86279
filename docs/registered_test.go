package docs_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature/isolated"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/backoff"
	"github.com/tailguard/tailguard/backoff/flagbind"
	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/detector/promapi"
	"github.com/tailguard/tailguard/docs"
	"github.com/tailguard/tailguard/flags/provider"
	"github.com/tailguard/tailguard/loop"
	"github.com/tailguard/tailguard/querycost"
	"github.com/tailguard/tailguard/webhook"
)

// documentedNotYetChecked are metrics documented in metrics.md whose
// registering code is not built by TestRegisteredMetricsAreDocumented: the
// sidecar's own metrics, which only a running daemon registers. The
// sidecar's TestMetricsAreDocumented checks them against this catalogue;
// this test checks that they stay documented and that none of them is
// registered by the packages it builds.
var documentedNotYetChecked = []string{
	"tailguard_config_last_reload_successful",
	"tailguard_config_last_reload_success_timestamp_seconds",
	"tailguard_flag_variant_info",
	"tailguard_ready",
	"tailguard_prometheus_up",
	"tailguard_kubernetes_up",
	"tailguard_leader",
	"tailguard_annotations_total",
	"tailguard_alert_triggers_total",
}

// ownPrefixes are the prefixes of the metrics tailguard's packages define;
// every documented metric with one of them must be registered by
// registerAll or listed in documentedNotYetChecked.
var ownPrefixes = []string{"tailguard_", "backoff_"}

// minimalPolicy is the smallest valid controller policy.
const minimalPolicy = `
services:
  - name: shop
    upstream: payments
    slos:
      - name: checkout-latency
        signal: latency
        selector: {endpoint: /checkout}
        objective: {quantile: 0.99, threshold: 400ms, window: 5m}
    flags:
      strategy: {key: backoff-strategy, newVariant: decorrelated, oldVariant: exponential, rollout: [100, 50, 0]}
      constants: {key: backoff-constants}
`

// recorder is a prometheus.Registerer that remembers what was registered,
// so that the test sees every collector, including vectors without series.
type recorder struct {
	reg        *prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool {
	i := slices.Index(r.collectors, c)
	if i >= 0 {
		r.collectors = slices.Delete(r.collectors, i, i+1)
	}
	return r.reg.Unregister(c)
}

// registerAll builds the metrics of every package that defines some, with
// their public constructors and minimal valid configurations.
func registerAll(t *testing.T, reg prometheus.Registerer) {
	t.Helper()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// backoff: the service-side retry metrics.
	_, err := backoff.NewMetrics(reg)
	must("backoff.NewMetrics", err)

	// backoff/flagbind: the policy metrics, with a retry budget bound.
	legacy := backoff.Config{Strategy: backoff.FullJitter, Base: 50 * time.Millisecond, Cap: 500 * time.Millisecond, MaxAttempts: 3}
	retrier, err := backoff.NewRetrier(backoff.RetrierConfig{Policy: backoff.MustNew(legacy)})
	must("backoff.NewRetrier", err)
	budget, err := backoff.NewRatioBudget(backoff.RatioBudgetConfig{})
	must("backoff.NewRatioBudget", err)
	_, err = flagbind.New(flagbind.Config{
		Client: isolated.NewAPI().NewClient(), Targets: []flagbind.Target{retrier},
		Budgets: []flagbind.BudgetTarget{budget}, Default: legacy, Registerer: reg,
	})
	must("flagbind.New", err)

	// controller.
	pol, err := policy.Parse([]byte(minimalPolicy))
	must("policy.Parse", err)
	_, err = controller.New(controller.Config{
		Policy: pol, Writer: controller.NewMemoryFlags("backoff-strategy", "backoff-constants", controller.FlagState{DefaultVariant: "decorrelated"}),
		Registerer: reg,
	})
	must("controller.New", err)

	// loop.
	_, err = loop.NewMetrics(reg)
	must("loop.NewMetrics", err)

	// querycost: series appear with the first metered query.
	meter, err := querycost.NewMeter(reg)
	must("querycost.NewMeter", err)
	_, _, _ = meter.Wrap("shop", emptyQuerier{}).Query(context.Background(), "up", time.Time{})

	// webhook.
	_, err = webhook.New(webhook.Config{QueueSize: 1, Registerer: reg})
	must("webhook.New", err)

	// detector/promapi: no query is sent.
	_, err = promapi.New(promapi.Config{URL: "http://127.0.0.1:9090", Registerer: reg})
	must("promapi.New", err)

	// flags/provider: the service-side provider; nothing is read before Init.
	_, err = provider.New(provider.Config{Path: "flags.json", Registerer: reg})
	must("provider.New", err)

	// cmd/tailguard registers the build information with client_golang's
	// version collector.
	must("version collector", reg.Register(versioncollector.NewCollector("tailguard")))
}

// registered is a metric as the registry exposes it.
type registered struct {
	name, typ string
	labels    []string // sorted
}

// TestRegisteredMetricsAreDocumented builds every package's metrics into a
// fresh registry and checks each against metrics.md: documented by its own
// row (not only by a pattern), with the same type and the same label names.
// It fails when a package adds an undocumented metric or label.
func TestRegisteredMetricsAreDocumented(t *testing.T) {
	cat, err := docs.Load()
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{reg: prometheus.NewPedanticRegistry()}
	registerAll(t, rec)
	got, err := gatherAll(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 20 {
		t.Fatalf("only %d metrics registered; the test does not see the packages' metrics", len(got))
	}

	for _, problem := range compare(cat, got, documentedNotYetChecked) {
		t.Error(problem)
	}
}

// compare checks registered metrics against the catalogue and returns the
// problems found.
func compare(cat *docs.Catalogue, got []registered, notYetChecked []string) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	rows := map[string]docs.Metric{}
	for _, m := range cat.Metrics() {
		if !m.IsPattern() {
			rows[m.Name] = m
		}
	}
	for _, r := range got {
		m, ok := rows[r.name]
		if !ok {
			add("%s (%s %v) is registered but not documented in docs/metrics.md", r.name, r.typ, r.labels)
			continue
		}
		if m.Type != r.typ {
			add("%s: registered as %s, documented as %s (metrics.md line %d)", r.name, r.typ, m.Type, m.Line)
		}
		doc := slices.Sorted(slices.Values(m.Labels))
		if !slices.Equal(doc, r.labels) {
			add("%s: registered with labels %v, documented with %v (metrics.md line %d)", r.name, r.labels, doc, m.Line)
		}
	}
	isRegistered := func(name string) bool {
		return slices.ContainsFunc(got, func(r registered) bool { return r.name == name })
	}
	for _, name := range notYetChecked {
		if _, ok := rows[name]; !ok {
			add("%s is listed as documented but is not in docs/metrics.md", name)
		}
		if isRegistered(name) {
			add("%s is registered by a checked package: remove it from documentedNotYetChecked", name)
		}
	}
	for _, m := range cat.Metrics() {
		own := slices.ContainsFunc(ownPrefixes, func(p string) bool { return strings.HasPrefix(m.Name, p) })
		if own && !isRegistered(m.Name) && !slices.Contains(notYetChecked, m.Name) {
			add("%s is documented (metrics.md line %d) but no package registers it; remove the row or list it in documentedNotYetChecked", m.Name, m.Line)
		}
	}
	return problems
}

func TestCompare(t *testing.T) {
	cat, err := docs.Parse(strings.NewReader(`
| name | type | labels | meaning |
|---|---|---|---|
| ` + "`tailguard_a_total`" + ` | counter | ` + "`kind`, `result`" + ` | a |
| ` + "`tailguard_b`" + ` | gauge | — | b |
| ` + "`tailguard_later`" + ` | gauge | — | not built yet |
| ` + "`<component>_build_info`" + ` | gauge | ` + "`version`" + ` | pattern |
| ` + "`up`" + ` | gauge | — | not ours |
`))
	if err != nil {
		t.Fatal(err)
	}
	a := registered{name: "tailguard_a_total", typ: "counter", labels: []string{"kind", "result"}}
	b := registered{name: "tailguard_b", typ: "gauge"}
	tests := []struct {
		name          string
		got           []registered
		notYetChecked []string
		want          []string // substrings, one per problem
	}{
		{name: "all documented", got: []registered{a, b}, notYetChecked: []string{"tailguard_later"}},
		{name: "undocumented metric", got: []registered{a, b, {name: "tailguard_new_total", typ: "counter"}}, notYetChecked: []string{"tailguard_later"},
			want: []string{"tailguard_new_total (counter []) is registered but not documented"}},
		{name: "covered by a pattern only", got: []registered{a, b, {name: "tailguard_build_info", typ: "gauge", labels: []string{"version"}}}, notYetChecked: []string{"tailguard_later"},
			want: []string{"tailguard_build_info (gauge [version]) is registered but not documented"}},
		{name: "wrong type", got: []registered{a, {name: "tailguard_b", typ: "counter"}}, notYetChecked: []string{"tailguard_later"},
			want: []string{"tailguard_b: registered as counter, documented as gauge"}},
		{name: "extra label", got: []registered{{name: "tailguard_a_total", typ: "counter", labels: []string{"kind", "result", "service"}}, b}, notYetChecked: []string{"tailguard_later"},
			want: []string{"tailguard_a_total: registered with labels [kind result service], documented with [kind result]"}},
		{name: "documented, never registered", got: []registered{a, b},
			want: []string{"tailguard_later is documented (metrics.md line 6) but no package registers it"}},
		{name: "stale not-yet-checked entries", got: []registered{a, b, {name: "tailguard_later", typ: "gauge"}}, notYetChecked: []string{"tailguard_later", "tailguard_gone"},
			want: []string{"tailguard_later is registered by a checked package", "tailguard_gone is listed as documented but is not in docs/metrics.md"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			problems := compare(cat, tc.got, tc.notYetChecked)
			if len(problems) != len(tc.want) {
				t.Fatalf("compare = %q, want %d problems %q", problems, len(tc.want), tc.want)
			}
			for _, w := range tc.want {
				if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, w) }) {
					t.Errorf("compare = %q, want a problem containing %q", problems, w)
				}
			}
		})
	}
}

// gatherAll touches one series of every vector the recorder saw, so that
// vectors without series show in the registry, then gathers. It checks that
// every registered descriptor is gathered with the labels it declares.
func gatherAll(rec *recorder) ([]registered, error) {
	declared := map[string][]string{}
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		var descs []descInfo
		var errs []error
		for d := range ch {
			di, err := parseDesc(d.String())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			descs = append(descs, di)
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		for _, d := range descs {
			declared[d.name] = slices.Sorted(slices.Values(append(slices.Clone(d.constLabels), d.variableLabels...)))
		}
		if len(descs) == 1 {
			if err := touch(c, len(descs[0].variableLabels)); err != nil {
				return nil, fmt.Errorf("%s: %w", descs[0].name, err)
			}
		}
	}
	mfs, err := rec.reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather: %w", err)
	}
	var out []registered
	for _, mf := range mfs {
		r := registered{name: mf.GetName(), typ: strings.ToLower(mf.GetType().String())}
		if r.typ == "gauge_histogram" {
			r.typ = docs.TypeHistogram
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(r.labels, lp.GetName()) {
					r.labels = append(r.labels, lp.GetName())
				}
			}
		}
		slices.Sort(r.labels)
		want, ok := declared[r.name]
		if !ok {
			return nil, fmt.Errorf("%s gathered but described by no registered collector", r.name)
		}
		if !slices.Equal(want, r.labels) {
			return nil, fmt.Errorf("%s: gathered labels %v, declared %v", r.name, r.labels, want)
		}
		delete(declared, r.name)
		out = append(out, r)
	}
	for name := range declared {
		return nil, fmt.Errorf("%s is registered but has no series even after touching it; create one in registerAll", name)
	}
	return out, nil
}

// touch creates one series of a metric vector (any collector with a
// WithLabelValues(...string) method) with placeholder label values; other
// collectors are left alone.
func touch(c prometheus.Collector, labels int) error {
	m := reflect.ValueOf(c).MethodByName("WithLabelValues")
	if !m.IsValid() || labels == 0 {
		return nil
	}
	if mt := m.Type(); !mt.IsVariadic() || mt.NumIn() != 1 || mt.In(0) != reflect.TypeFor[[]string]() {
		return fmt.Errorf("WithLabelValues has an unexpected signature %v", mt)
	}
	args := make([]reflect.Value, labels)
	for i := range args {
		args[i] = reflect.ValueOf("docs_test")
	}
	m.Call(args)
	return nil
}

// descInfo is what Desc.String tells about a descriptor.
type descInfo struct {
	name                        string
	constLabels, variableLabels []string
}

// parseDesc parses prometheus.Desc.String():
//
//	Desc{fqName: "x", help: "y", unit: "", constLabels: {a="b",c="d"}, variableLabels: {e,f}}
//
// Variable labels with a constraint print as c(name).
func parseDesc(s string) (descInfo, error) {
	var d descInfo
	p := descParser{s: s}
	p.expect("Desc{fqName: ")
	d.name = p.quoted()
	p.expect(", help: ")
	p.quoted()
	if strings.HasPrefix(p.s, ", unit: ") { // since client_golang 1.21
		p.expect(", unit: ")
		p.quoted()
	}
	p.expect(", constLabels: {")
	for p.err == nil && !strings.HasPrefix(p.s, "}") {
		name, rest, ok := strings.Cut(p.s, "=")
		if !ok {
			p.fail("const label")
			break
		}
		d.constLabels = append(d.constLabels, name)
		p.s = rest
		p.quoted()
		p.s = strings.TrimPrefix(p.s, ",")
	}
	p.expect("}, variableLabels: {")
	if list, ok := strings.CutSuffix(p.s, "}}"); ok && p.err == nil {
		if list != "" {
			for _, l := range strings.Split(list, ",") {
				if inner, ok := strings.CutPrefix(l, "c("); ok {
					l = strings.TrimSuffix(inner, ")")
				}
				d.variableLabels = append(d.variableLabels, l)
			}
		}
	} else {
		p.fail("variable labels")
	}
	if p.err != nil {
		return descInfo{}, fmt.Errorf("parse %s: %w", s, p.err)
	}
	return d, nil
}

type descParser struct {
	s   string
	err error
}

func (p *descParser) fail(what string) {
	if p.err == nil {
		p.err = fmt.Errorf("%s expected at %q", what, p.s)
	}
}

func (p *descParser) expect(prefix string) {
	if p.err != nil {
		return
	}
	rest, ok := strings.CutPrefix(p.s, prefix)
	if !ok {
		p.fail(strconv.Quote(prefix))
		return
	}
	p.s = rest
}

func (p *descParser) quoted() string {
	if p.err != nil {
		return ""
	}
	q, err := strconv.QuotedPrefix(p.s)
	if err != nil {
		p.fail("quoted string")
		return ""
	}
	p.s = p.s[len(q):]
	v, _ := strconv.Unquote(q)
	return v
}

func TestParseDesc(t *testing.T) {
	tests := []struct {
		desc *prometheus.Desc
		want descInfo
	}{
		{desc: prometheus.NewDesc("a_total", `help with "quotes", {braces} and a=b`, nil, nil), want: descInfo{name: "a_total"}},
		{desc: prometheus.NewDesc("b", "h", []string{"x", "y"}, prometheus.Labels{"k": `v"}`, "j": "w"}),
			want: descInfo{name: "b", constLabels: []string{"j", "k"}, variableLabels: []string{"x", "y"}}},
	}
	for _, tc := range tests {
		got, err := parseDesc(tc.desc.String())
		if err != nil {
			t.Errorf("parseDesc(%s) = %v", tc.desc, err)
			continue
		}
		if got.name != tc.want.name || !slices.Equal(got.constLabels, tc.want.constLabels) || !slices.Equal(got.variableLabels, tc.want.variableLabels) {
			t.Errorf("parseDesc(%s) = %+v, want %+v", tc.desc, got, tc.want)
		}
	}
	for _, bad := range []string{"", "Desc{fqName: x}", `Desc{fqName: "x", help: "y", constLabels: {a}, variableLabels: {}}`, `Desc{fqName: "x", help: "y", constLabels: {}, variableLabels: {a}`} {
		if _, err := parseDesc(bad); err == nil {
			t.Errorf("parseDesc(%q) accepted", bad)
		}
	}
}

// emptyQuerier answers every query with an empty vector.
type emptyQuerier struct{}

func (emptyQuerier) Query(context.Context, string, time.Time) (model.Value, v1.Warnings, error) {
	return model.Vector{}, nil, nil
}

func (emptyQuerier) QueryRange(context.Context, string, v1.Range) (model.Value, v1.Warnings, error) {
	return model.Matrix{}, nil, nil
}
