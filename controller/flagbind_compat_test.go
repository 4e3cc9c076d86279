package controller

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/tailguard/tailguard/backoff"
	"github.com/tailguard/tailguard/backoff/flagbind"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/flags/provider"
)

// allConstants sets every field of Constants to a value that differs from
// the zero value and from the backoff package's defaults, so that a field
// lost or renamed on the way shows.
var allConstants = Constants{
	Base: ms(120), Cap: 3 * time.Second, Multiplier: 2.5, Jitter: 0.3,
	MaxAttempts: 7, MaxElapsed: 15 * time.Second, RetryBudget: 0.07,
}

// constantsKeys are the keys flagbind decodes, one per field of Constants.
var constantsKeys = map[string]string{
	"Base": "base", "Cap": "cap", "Multiplier": "multiplier", "Jitter": "jitter",
	"MaxAttempts": "maxAttempts", "MaxElapsed": "maxElapsed", "RetryBudget": "retryBudget",
}

// flagbindView is what flagbind decoded, in the shape of Constants.
func flagbindView(k flagbind.Constants) Constants {
	c := k.Config
	return Constants{Base: c.Base, Cap: c.Cap, Multiplier: c.Multiplier, Jitter: c.Jitter,
		MaxAttempts: c.MaxAttempts, MaxElapsed: c.MaxElapsed, RetryBudget: k.RetryBudget}
}

// TestConstantsDecodeWithFlagbind proves that the backoff-constants flag
// the controller writes is what the services' binding decodes, field by
// field, for every strategy, keyed and flat.
func TestConstantsDecodeWithFlagbind(t *testing.T) {
	// Every field is covered: a new field must get a key here and in
	// flagbind.
	typ := reflect.TypeFor[Constants]()
	for i := range typ.NumField() {
		if _, ok := constantsKeys[typ.Field(i).Name]; !ok {
			t.Errorf("Constants.%s has no flag key in this test; add it here and teach backoff/flagbind to decode it", typ.Field(i).Name)
		}
	}
	if typ.NumField() != len(constantsKeys) {
		t.Errorf("Constants has %d fields, the test knows %d", typ.NumField(), len(constantsKeys))
	}
	b, err := json.Marshal(allConstants)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	var keys, want []string
	for k := range obj {
		keys = append(keys, k)
	}
	for _, k := range constantsKeys {
		want = append(want, k)
	}
	slices.Sort(keys)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("Constants marshals keys %v, want %v", keys, want)
	}

	for _, name := range policy.Strategies {
		s, err := backoff.ParseStrategy(name)
		if err != nil {
			t.Fatalf("policy strategy %q: %v", name, err)
		}
		keyed, err := json.Marshal(map[string]Constants{name: allConstants})
		if err != nil {
			t.Fatal(err)
		}
		for form, data := range map[string][]byte{"keyed": keyed, "flat": b} {
			got, err := flagbind.ParseConstants(data, backoff.Config{Strategy: s})
			if err != nil {
				t.Fatalf("%s %s: flagbind rejects %s: %v", name, form, data, err)
			}
			if got.Config.Strategy != s || flagbindView(got) != allConstants {
				t.Errorf("%s %s: flagbind decoded %+v from %s, want %+v", name, form, got, data, allConstants)
			}
			var back Constants
			if form == "flat" {
				err = json.Unmarshal(data, &back)
			} else {
				var m map[string]Constants
				err = json.Unmarshal(data, &m)
				back = m[name]
			}
			if err != nil || back != allConstants {
				t.Errorf("%s %s: controller reads %+v (%v), want %+v", name, form, back, err, allConstants)
			}
		}
	}
}

// TestFlagsWriterConstantsReachService writes constants with the
// FlagsWriter and reads them back the way a service does: flag file,
// OpenFeature provider, flagbind binding, retrier and retry budget.
func TestFlagsWriterConstantsReachService(t *testing.T) {
	path := flagFile(t)
	w, _ := newFlagsWriter(t, path, nil)
	ctx := context.Background()
	k := allConstants
	applied, err := w.Apply(ctx, FlagChange{
		Service: "shop", IncidentID: "inc-1", IdempotencyKey: "inc-1/tune/1", Rung: RungTune, Reason: "compat test",
		Mutation: Mutation{Kind: MutationSetConstants, FlagKey: "backoff-constants", Strategy: "decorrelated", Constants: &k},
	})
	if err != nil || !applied {
		t.Fatalf("Apply = %v, %v", applied, err)
	}

	prov, err := provider.New(provider.Config{Path: path, Resync: -1})
	if err != nil {
		t.Fatal(err)
	}
	api := isolated.NewAPI()
	if err := api.SetProviderAndWait(ctx, prov); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Shutdown(ctx) })

	// The service: legacy compiled-in policy, a 10% retry budget.
	legacy := backoff.Config{Strategy: backoff.FullJitter, Base: ms(50), Cap: ms(500), MaxAttempts: 3}
	budget, err := backoff.NewRatioBudget(backoff.RatioBudgetConfig{Ratio: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	retrier, err := backoff.NewRetrier(backoff.RetrierConfig{Policy: backoff.MustNew(legacy), Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	binding, err := flagbind.New(flagbind.Config{
		Client: api.NewClient(), Targets: []flagbind.Target{retrier}, Budgets: []flagbind.BudgetTarget{budget}, Default: legacy,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := binding.Reload(ctx); err != nil {
		t.Fatalf("the service rejects the flags the controller wrote: %v", err)
	}
	got := retrier.Policy().Config()
	// Jitter applies to grpc only; decorrelated drops it.
	want := backoff.Config{Strategy: backoff.Decorrelated, Base: k.Base, Cap: k.Cap, Multiplier: k.Multiplier,
		MaxAttempts: k.MaxAttempts, MaxElapsed: k.MaxElapsed}
	if got != want {
		t.Errorf("service policy %+v, want %+v", got, want)
	}
	if budget.Ratio() != k.RetryBudget {
		t.Errorf("service retry budget %v, want %v", budget.Ratio(), k.RetryBudget)
	}
	// The controller reads back what it wrote.
	fs, err := w.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := fs.ConstantsFor("decorrelated"); c != k {
		t.Errorf("controller reads %+v, want %+v", c, k)
	}
}
