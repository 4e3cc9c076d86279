package provider

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tailguard/tailguard/flags"
)

// eventTimeout bounds how long a test waits for a provider event; it is a
// failure guard, not a latency assertion (reloads take ~the debounce).
const eventTimeout = 10 * time.Second

func copyFixture(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("testdata/flags.json")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "flags.json")
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	return path
}

// harness registers a provider with an isolated OpenFeature API and
// collects its events. The SDK runs each handler on its own goroutine, so
// events may arrive out of order; waitFor looks through all of them.
type harness struct {
	api      *openfeature.EvaluationAPI
	client   *openfeature.Client
	provider *Provider
	events   chan event
	pending  []event
}

type event struct {
	typ     openfeature.EventType
	details openfeature.EventDetails
}

func newHarness(t *testing.T, path string, wantInitErr bool) *harness {
	t.Helper()
	p, err := New(Config{Path: path, Debounce: 20 * time.Millisecond, Resync: -1})
	if err != nil {
		t.Fatal(err)
	}
	return newHarnessFor(t, p, wantInitErr)
}

func newHarnessFor(t *testing.T, p *Provider, wantInitErr bool) *harness {
	t.Helper()
	h := &harness{
		api:      isolated.NewAPI(),
		provider: p,
		events:   make(chan event, 64),
	}
	for _, et := range []openfeature.EventType{openfeature.ProviderConfigChange, openfeature.ProviderError, openfeature.ProviderReady, openfeature.ProviderStale} {
		cb := func(d openfeature.EventDetails) { h.events <- event{et, d} }
		h.api.AddHandler(et, &cb)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = h.api.Shutdown(ctx) })
	err := h.api.SetProviderAndWait(ctx, p)
	if wantInitErr != (err != nil) {
		t.Fatalf("SetProviderAndWait error = %v, want error %v", err, wantInitErr)
	}
	h.client = h.api.NewClient()
	// The SDK announces the outcome of Init.
	if wantInitErr {
		h.waitFor(t, openfeature.ProviderError)
	} else {
		h.waitFor(t, openfeature.ProviderReady)
	}
	return h
}

// waitFor returns the first event of type et, keeping the others.
func (h *harness) waitFor(t *testing.T, et openfeature.EventType) openfeature.EventDetails {
	t.Helper()
	deadline := time.After(eventTimeout)
	for {
		for i, e := range h.pending {
			if e.typ == et {
				h.pending = slices.Delete(h.pending, i, i+1)
				return e.details
			}
		}
		select {
		case e := <-h.events:
			h.pending = append(h.pending, e)
		case <-deadline:
			t.Fatalf("no %s event (have %v)", et, h.pending)
		}
	}
}

func TestEvaluationThroughClient(t *testing.T) {
	h := newHarness(t, copyFixture(t), false)
	ctx := context.Background()
	c := h.client

	b, err := c.BooleanValueDetails(ctx, "new-checkout", false, openfeature.NewEvaluationContext("u1", map[string]any{"email": "a@example.com"}))
	if err != nil || !b.Value || b.Reason != openfeature.TargetingMatchReason || b.Variant != "on" {
		t.Errorf("new-checkout targeted: %+v, %v", b, err)
	}
	b, err = c.BooleanValueDetails(ctx, "new-checkout", true, openfeature.NewEvaluationContext("u1", map[string]any{"email": "a@other.com"}))
	if err != nil || b.Value || b.Reason != openfeature.DefaultReason || b.Variant != "off" {
		t.Errorf("new-checkout untargeted: %+v, %v", b, err)
	}

	// Without a targeting key the fractional split has nothing to hash and
	// falls back to the default variant.
	s, err := c.StringValueDetails(ctx, "backoff-strategy", "none", openfeature.NewTargetlessEvaluationContext(nil))
	if err != nil || s.Value != "exponential" || s.Reason != openfeature.DefaultReason {
		t.Errorf("backoff-strategy without targeting key: %+v, %v", s, err)
	}
	owner, _ := s.FlagMetadata.GetString("owner")
	set, _ := s.FlagMetadata.GetString("flagSetId")
	rev, _ := s.FlagMetadata.GetInt("tailguard.revision")
	if owner != "payments" || set != "shop" || rev != 1 {
		t.Errorf("backoff-strategy metadata %v", s.FlagMetadata)
	}

	counts := map[string]int{}
	for i := range 400 {
		v, err := c.StringValue(ctx, "backoff-strategy", "none", openfeature.NewEvaluationContext(fmt.Sprintf("user-%d", i), nil))
		if err != nil {
			t.Fatal(err)
		}
		counts[v]++
	}
	if counts["decorrelated"] < 60 || counts["decorrelated"] > 140 || counts["none"] > 0 {
		t.Errorf("25%% rollout over 400 subjects: %v", counts)
	}

	o, err := c.ObjectValueDetails(ctx, "backoff-constants", nil, openfeature.EvaluationContext{})
	want := map[string]any{
		"decorrelated": map[string]any{"base": "100ms", "cap": "2s", "maxAttempts": 6.0},
		"exponential":  map[string]any{"base": "50ms", "cap": "500ms", "maxAttempts": 3.0},
	}
	if err != nil || !reflect.DeepEqual(o.Value, want) || o.Reason != openfeature.StaticReason {
		t.Errorf("backoff-constants: %+v, %v", o, err)
	}

	tests := []struct {
		name     string
		eval     func() (any, openfeature.EvaluationDetails, error)
		value    any
		reason   openfeature.Reason
		code     openfeature.ErrorCode
		variants string
	}{
		{"int", func() (any, openfeature.EvaluationDetails, error) {
			d, err := c.IntValueDetails(ctx, "max-attempts", 1, openfeature.EvaluationContext{})
			return d.Value, d.EvaluationDetails, err
		}, int64(6), openfeature.StaticReason, "", "six"},
		{"float", func() (any, openfeature.EvaluationDetails, error) {
			d, err := c.FloatValueDetails(ctx, "jitter", 1, openfeature.EvaluationContext{})
			return d.Value, d.EvaluationDetails, err
		}, 0.2, openfeature.StaticReason, "", "fifth"},
		{"int flag as float", func() (any, openfeature.EvaluationDetails, error) {
			d, err := c.FloatValueDetails(ctx, "max-attempts", 1, openfeature.EvaluationContext{})
			return d.Value, d.EvaluationDetails, err
		}, 6.0, openfeature.StaticReason, "", "six"},
		{"string flag as int", func() (any, openfeature.EvaluationDetails, error) {
			d, err := c.IntValueDetails(ctx, "backoff-strategy", 7, openfeature.EvaluationContext{})
			return d.Value, d.EvaluationDetails, err
		}, int64(7), openfeature.ErrorReason, openfeature.TypeMismatchCode, ""},
		{"bool flag as string", func() (any, openfeature.EvaluationDetails, error) {
			d, err := c.StringValueDetails(ctx, "new-checkout", "x", openfeature.EvaluationContext{})
			return d.Value, d.EvaluationDetails, err
		}, "x", openfeature.ErrorReason, openfeature.TypeMismatchCode, ""},
		{"object flag as bool", func() (any, openfeature.EvaluationDetails, error) {
			d, err := c.BooleanValueDetails(ctx, "backoff-constants", true, openfeature.EvaluationContext{})
			return d.Value, d.EvaluationDetails, err
		}, true, openfeature.ErrorReason, openfeature.TypeMismatchCode, ""},
		{"missing", func() (any, openfeature.EvaluationDetails, error) {
			d, err := c.BooleanValueDetails(ctx, "missing", true, openfeature.EvaluationContext{})
			return d.Value, d.EvaluationDetails, err
		}, true, openfeature.ErrorReason, openfeature.FlagNotFoundCode, ""},
		{"disabled", func() (any, openfeature.EvaluationDetails, error) {
			d, err := c.BooleanValueDetails(ctx, "legacy", false, openfeature.EvaluationContext{})
			return d.Value, d.EvaluationDetails, err
		}, false, openfeature.DisabledReason, "", ""},
		{"no default variant", func() (any, openfeature.EvaluationDetails, error) {
			d, err := c.StringValueDetails(ctx, "no-default", "code", openfeature.EvaluationContext{})
			return d.Value, d.EvaluationDetails, err
		}, "code", openfeature.DefaultReason, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, d, err := tt.eval()
			if (err != nil) != (tt.code != "") {
				t.Errorf("error %v, want code %q", err, tt.code)
			}
			if !reflect.DeepEqual(v, tt.value) || d.Reason != tt.reason || d.ErrorCode != tt.code || d.Variant != tt.variants {
				t.Errorf("got %#v %+v, want %#v reason %s code %q variant %q", v, d, tt.value, tt.reason, tt.code, tt.variants)
			}
		})
	}
}

func TestIntCoercion(t *testing.T) {
	p, err := New(Config{Path: copyFixture(t), Resync: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Init(openfeature.EvaluationContext{}); err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown()
	// A fraction cannot become an integer without loss; 6 can.
	got := p.IntEvaluation(context.Background(), "jitter", 9, nil)
	if got.Value != 9 || got.Error() == nil || got.Reason != openfeature.ErrorReason {
		t.Errorf("0.2 as int: %+v", got)
	}
	if got := p.IntEvaluation(context.Background(), "max-attempts", 9, nil); got.Value != 6 || got.Error() != nil {
		t.Errorf("6 as int: %+v", got)
	}
}

func TestEventsWithoutSDK(t *testing.T) {
	path := copyFixture(t)
	p, err := New(Config{Path: path, Debounce: 10 * time.Millisecond, Resync: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Init(openfeature.EvaluationContext{}); err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown()
	next := func() openfeature.Event {
		t.Helper()
		select {
		case e := <-p.EventChannel():
			return e
		case <-time.After(eventTimeout):
			t.Fatal("no event")
			return openfeature.Event{}
		}
	}
	// A file whose only flag is invalid is still a file: the change is
	// announced with the invalid flag.
	writeAtomic(t, path, []byte(`{"flags": {"x": {"state": "ON", "variants": {"a": 1}}}}`))
	e := next()
	if e.EventType != openfeature.ProviderConfigChange || e.EventMetadata["invalidFlags"] != "x" ||
		!strings.Contains(p.InvalidFlags()["x"], `state "ON" is invalid`) {
		t.Errorf("invalid flag event: %+v (invalid: %v)", e, p.InvalidFlags())
	}
	writeAtomic(t, path, []byte(`{"flags": [}`))
	e = next()
	if e.EventType != openfeature.ProviderError || e.ErrorCode != openfeature.ParseErrorCode ||
		!strings.Contains(e.Message, "serving the last good flags") {
		t.Errorf("broken file event: %+v", e)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.EventType != openfeature.ProviderError || e.ErrorCode != openfeature.GeneralCode {
		t.Errorf("missing file event: %+v", e)
	}
	update := []byte(`{"metadata": {"tailguard.revision": 9}, "flags": {"x": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}}}`)
	writeAtomic(t, path, update)
	if e := next(); e.EventType != openfeature.ProviderReady {
		t.Errorf("recovery event: %+v", e)
	}
	e = next()
	if e.EventType != openfeature.ProviderConfigChange || e.EventMetadata["revision"] != int64(9) {
		t.Errorf("change event: %+v", e)
	}
	// x became valid.
	if want := []string{"x"}; !slices.Equal(e.FlagChanges, want) {
		t.Errorf("FlagChanges %q, want %q", e.FlagChanges, want)
	}
}

// update rewrites the flag file through the Store, as the controller and
// the CLI do (temp file + rename).
func update(t *testing.T, path string, mutate func(*flags.Document) error) {
	t.Helper()
	s, err := flags.NewStore(flags.StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(context.Background(), flags.AnyRevision, mutate, flags.ChangeMeta{Actor: "operator:test", Action: flags.ActionUpdate, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
}

func TestReloadEmitsChangedFlags(t *testing.T) {
	path := copyFixture(t)
	h := newHarness(t, path, false)
	ctx := context.Background()

	start := time.Now()
	update(t, path, flags.Rollout("backoff-strategy", "decorrelated", "exponential", 100))
	d := h.waitFor(t, openfeature.ProviderConfigChange)
	t.Logf("reload observed %s after the write", time.Since(start).Round(time.Millisecond))
	if !slices.Equal(d.FlagChanges, []string{"backoff-strategy"}) {
		t.Errorf("FlagChanges = %q, want [backoff-strategy]", d.FlagChanges)
	}
	v, _ := h.client.StringValue(ctx, "backoff-strategy", "none", openfeature.NewEvaluationContext("anyone", nil))
	if v != "decorrelated" {
		t.Errorf("after a 100%% rollout: %q", v)
	}
	if got := h.provider.Revision(); got != 2 {
		t.Errorf("revision %d, want 2", got)
	}

	// A second change to two flags reports both.
	update(t, path, func(d *flags.Document) error {
		if err := flags.SetState("legacy", flags.StateEnabled)(d); err != nil {
			return err
		}
		return flags.SetVariant("max-attempts", "three", false)(d)
	})
	d = h.waitFor(t, openfeature.ProviderConfigChange)
	if !slices.Equal(d.FlagChanges, []string{"legacy", "max-attempts"}) {
		t.Errorf("FlagChanges = %q", d.FlagChanges)
	}
}

func TestInvalidFlagKeepsLastGoodVersion(t *testing.T) {
	path := copyFixture(t)
	reg := prometheus.NewRegistry()
	p, err := New(Config{Path: path, Debounce: 20 * time.Millisecond, Resync: -1, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessFor(t, p, false)
	ctx := context.Background()

	// max-attempts turns invalid; a new flag is invalid from the start; the
	// other flags stay valid.
	good, _ := os.ReadFile("testdata/flags.json")
	bad := strings.Replace(string(good), `"defaultVariant": "six"`, `"defaultVariant": "ten"`, 1)
	bad = strings.Replace(bad, `"flags": {`, `"flags": {"brand-new": {"state": "ON", "variants": {"a": true}, "defaultVariant": "a"},`, 1)
	writeAtomic(t, path, []byte(bad))
	d := h.waitFor(t, openfeature.ProviderConfigChange)
	if d.EventMetadata["invalidFlags"] != "brand-new,max-attempts" {
		t.Errorf("event metadata %v, want invalidFlags brand-new,max-attempts", d.EventMetadata)
	}
	if h.client.State() != openfeature.ReadyState {
		t.Errorf("client state %s, want READY: the valid flags are served", h.client.State())
	}
	inv := h.provider.InvalidFlags()
	if m := inv["max-attempts"]; !strings.Contains(m, `defaultVariant "ten" is not a variant`) || !strings.Contains(m, "serving its last good version") {
		t.Errorf("InvalidFlags[max-attempts] = %q", m)
	}
	if m := inv["brand-new"]; !strings.Contains(m, `state "ON" is invalid`) || strings.Contains(m, "last good") {
		t.Errorf("InvalidFlags[brand-new] = %q", m)
	}
	if n, err := h.client.IntValue(ctx, "max-attempts", 1, openfeature.EvaluationContext{}); err != nil || n != 6 {
		t.Errorf("invalid max-attempts = %d, %v; want its last good 6", n, err)
	}
	if v, err := h.client.FloatValue(ctx, "jitter", 1, openfeature.EvaluationContext{}); err != nil || v != 0.2 {
		t.Errorf("valid jitter = %v, %v", v, err)
	}
	if d, err := h.client.BooleanValueDetails(ctx, "brand-new", false, openfeature.EvaluationContext{}); err == nil || d.ErrorCode != openfeature.ParseErrorCode {
		t.Errorf("never-valid flag: %+v, %v; want PARSE_ERROR", d, err)
	}
	want := `
# HELP tailguard_flag_provider_invalid_flag 1 for each flag of the flag file that is invalid; it keeps its last good version or resolves to PARSE_ERROR.
# TYPE tailguard_flag_provider_invalid_flag gauge
tailguard_flag_provider_invalid_flag{flag="brand-new"} 1
tailguard_flag_provider_invalid_flag{flag="max-attempts"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tailguard_flag_provider_invalid_flag"); err != nil {
		t.Error(err)
	}

	// Fixing the file serves the new version and clears the report.
	fixed := strings.Replace(string(good), `"defaultVariant": "six"`, `"defaultVariant": "three"`, 1)
	writeAtomic(t, path, []byte(fixed))
	d = h.waitFor(t, openfeature.ProviderConfigChange)
	if !slices.Equal(d.FlagChanges, []string{"brand-new", "max-attempts"}) {
		t.Errorf("FlagChanges after the fix = %q", d.FlagChanges)
	}
	if n, _ := h.client.IntValue(ctx, "max-attempts", 1, openfeature.EvaluationContext{}); n != 3 {
		t.Errorf("after the fix max-attempts = %d, want 3", n)
	}
	if inv := h.provider.InvalidFlags(); inv != nil {
		t.Errorf("InvalidFlags after the fix = %v", inv)
	}
	if n := testutil.CollectAndCount(reg, "tailguard_flag_provider_invalid_flag"); n != 0 {
		t.Errorf("%d invalid-flag series after the fix", n)
	}
}

func TestUnparsableFileKeepsLastGoodFlags(t *testing.T) {
	path := copyFixture(t)
	h := newHarness(t, path, false)
	ctx := context.Background()

	writeAtomic(t, path, []byte(`{"flags": {"max-attempts": `))
	d := h.waitFor(t, openfeature.ProviderError)
	if !strings.Contains(d.Message, "serving the last good flags") {
		t.Errorf("error message %q", d.Message)
	}
	if h.client.State() != openfeature.ErrorState {
		t.Errorf("client state %s, want ERROR", h.client.State())
	}
	n, err := h.client.IntValue(ctx, "max-attempts", 1, openfeature.EvaluationContext{})
	if err != nil || n != 6 {
		t.Errorf("with a broken file, max-attempts = %d, %v; want the last good 6", n, err)
	}
	fixed, _ := os.ReadFile("testdata/flags.json")
	fixed = []byte(strings.Replace(string(fixed), `"defaultVariant": "six"`, `"defaultVariant": "three"`, 1))
	writeAtomic(t, path, fixed)
	h.waitFor(t, openfeature.ProviderReady)
	d = h.waitFor(t, openfeature.ProviderConfigChange)
	if !slices.Equal(d.FlagChanges, []string{"max-attempts"}) {
		t.Errorf("FlagChanges after recovery = %q", d.FlagChanges)
	}
	if h.client.State() != openfeature.ReadyState {
		t.Errorf("client state %s, want READY", h.client.State())
	}
	if n, _ := h.client.IntValue(ctx, "max-attempts", 1, openfeature.EvaluationContext{}); n != 3 {
		t.Errorf("after recovery max-attempts = %d, want 3", n)
	}
}

func TestDeletedFileKeepsLastGoodFlags(t *testing.T) {
	path := copyFixture(t)
	h := newHarness(t, path, false)
	data, _ := os.ReadFile(path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	h.waitFor(t, openfeature.ProviderError)
	if v, _ := h.client.FloatValue(context.Background(), "jitter", 1, openfeature.EvaluationContext{}); v != 0.2 {
		t.Errorf("jitter %v after the file vanished, want the last good 0.2", v)
	}
	writeAtomic(t, path, data)
	h.waitFor(t, openfeature.ProviderReady)
}

func TestInitWithoutFileRecovers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	h := newHarness(t, path, true)
	if h.client.State() != openfeature.ErrorState {
		t.Errorf("state %s, want ERROR", h.client.State())
	}
	d, err := h.client.BooleanValueDetails(context.Background(), "new-checkout", true, openfeature.EvaluationContext{})
	if err == nil || d.ErrorCode != openfeature.ProviderNotReadyCode || !d.Value {
		t.Errorf("before any file: %+v, %v", d, err)
	}
	data, _ := os.ReadFile("testdata/flags.json")
	writeAtomic(t, path, data)
	h.waitFor(t, openfeature.ProviderReady)
	if v, err := h.client.IntValue(context.Background(), "max-attempts", 1, openfeature.EvaluationContext{}); err != nil || v != 6 {
		t.Errorf("after the file appeared: %d, %v", v, err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Path: "x", Debounce: 2 * time.Second}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
