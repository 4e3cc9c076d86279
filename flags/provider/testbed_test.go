package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/cucumber/godog"
	messages "github.com/cucumber/messages/go/v34"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
)

// The flagd-testbed evaluator suite (open-feature/flagd-testbed, Apache-2.0)
// run through the OpenFeature Go SDK against this provider. The suite is
// data of another project and is not part of this repository: the test
// looks for a checkout of the release named by testbedRelease in
// $FLAGD_TESTBED, in ../shared/flagd-testbed beside the repository, and in
// the tailguard cache directory, and prints a SKIP line when none is there.

// testbedRelease is the flagd-testbed release whose semantics the provider
// follows.
const testbedRelease = "3.9.0"

// testbedSkipTags are the scenarios not run, with the reason.
var testbedSkipTags = map[string]string{
	"@fractional-v1": "legacy float-based fractional bucketing; flagd replaced it with the high-precision " +
		"((hash * totalWeight) >> 32) bucketing that @fractional-v2 tests",
}

func findTestbed(t *testing.T) string {
	t.Helper()
	var candidates []string
	if d := os.Getenv("FLAGD_TESTBED"); d != "" {
		candidates = append(candidates, d)
	}
	candidates = append(candidates, filepath.Join("..", "..", "..", "shared", "flagd-testbed"))
	cache := os.Getenv("TAILGUARD_CACHE")
	if cache == "" {
		if c, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(c, "tailguard")
		}
	}
	if cache != "" {
		candidates = append(candidates, filepath.Join(cache, "flagd-testbed-v"+testbedRelease))
	}
	for _, dir := range candidates {
		v, err := os.ReadFile(filepath.Join(dir, "version.txt"))
		if err != nil {
			continue
		}
		if got := strings.TrimSpace(string(v)); got != testbedRelease {
			t.Logf("flagd-testbed at %s is release %s, want %s; ignored", dir, got, testbedRelease)
			continue
		}
		return dir
	}
	fmt.Printf("SKIP: flagd-testbed evaluator suite: no checkout of release %s found (looked in %s); "+
		"put the release's version.txt and evaluator/ directory there or point FLAGD_TESTBED at them\n",
		testbedRelease, strings.Join(candidates, ", "))
	t.Skipf("flagd-testbed %s not found", testbedRelease)
	return ""
}

func TestFlagdTestbed(t *testing.T) {
	dir := findTestbed(t)
	flagData, err := os.ReadFile(filepath.Join(dir, "evaluator", "flags", "testkit-flags.json"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "testkit-flags.json")
	if err := os.WriteFile(path, flagData, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Path: path, Resync: -1})
	if err != nil {
		t.Fatal(err)
	}
	api := isolated.NewAPI()
	ctx := context.Background()
	t.Cleanup(func() { _ = api.Shutdown(ctx) })
	if err := api.SetProviderAndWait(ctx, p); err != nil {
		t.Fatalf("the testbed's flag file does not load: %v", err)
	}
	client := api.NewClient()

	var tags []string
	for tag, why := range testbedSkipTags {
		tags = append(tags, "~"+tag)
		t.Logf("skipped: %s: %s", tag, why)
	}
	var out bytes.Buffer
	suite := godog.TestSuite{
		Name: "flagd-testbed-evaluator",
		ScenarioInitializer: func(sc *godog.ScenarioContext) {
			s := &testbedScenario{client: client}
			s.register(sc)
		},
		Options: &godog.Options{
			Format:    "progress",
			Output:    &out,
			Paths:     []string{filepath.Join(dir, "evaluator", "gherkin")},
			Tags:      strings.Join(tags, " && "),
			Strict:    true,
			Randomize: 0,
			NoColors:  true,
		},
	}
	status := suite.Run()
	// The progress formatter ends with "N scenarios (…)" and "N steps (…)".
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if strings.Contains(line, "scenarios") || strings.Contains(line, "steps") {
			t.Logf("flagd-testbed %s: %s", testbedRelease, strings.TrimSpace(line))
		}
	}
	if status != 0 {
		t.Fatalf("flagd-testbed evaluator suite failed (status %d):\n%s", status, out.String())
	}
}

// testbedScenario is the state of one scenario.
type testbedScenario struct {
	client   *openfeature.Client
	flagType string
	key      string
	fallback string
	attrs    map[string]any
	tk       string
	details  openfeature.InterfaceEvaluationDetails
}

func (s *testbedScenario) register(sc *godog.ScenarioContext) {
	sc.Step(`^an evaluator$`, func() error { return nil })
	sc.Step(`^a ([A-Za-z]+)-flag with key "([^"]*)" and a fallback value "(.*)"$`, s.aFlag)
	sc.Step(`^a context containing a key "([^"]*)", with type "([^"]*)" and with value "([^"]*)"$`, s.contextKey)
	sc.Step(`^a context containing a nested property with outer key "([^"]*)" and inner key "([^"]*)", with value "([^"]*)"$`, s.contextNested)
	sc.Step(`^a context containing a targeting key with value "([^"]*)"$`, func(v string) error { s.tk = v; return nil })
	sc.Step(`^the flag was evaluated with details$`, s.evaluate)
	sc.Step(`^the resolved details value should be "(.*)"$`, s.valueIs)
	sc.Step(`^the reason should be "([^"]*)"$`, func(v string) error {
		return expect("reason", string(s.details.Reason), v)
	})
	sc.Step(`^the error-code should be "([^"]*)"$`, func(v string) error {
		return expect("error code", string(s.details.ErrorCode), v)
	})
	sc.Step(`^the resolved metadata should contain$`, s.metadataContains)
	sc.Step(`^the resolved metadata is empty$`, func() error {
		if len(s.details.FlagMetadata) != 0 {
			return fmt.Errorf("metadata %v, want none", s.details.FlagMetadata)
		}
		return nil
	})
}

func expect(what, got, want string) error {
	if got != want {
		return fmt.Errorf("%s %q, want %q", what, got, want)
	}
	return nil
}

func (s *testbedScenario) aFlag(typ, key, fallback string) error {
	switch typ {
	case "Boolean", "String", "Integer", "Float", "Object":
	default:
		return fmt.Errorf("unknown flag type %q", typ)
	}
	s.flagType, s.key, s.fallback = typ, key, fallback
	return nil
}

// typedValue converts a testbed table value to the named type.
func typedValue(typ, v string) (any, error) {
	switch typ {
	case "String":
		return v, nil
	case "Integer":
		return strconv.ParseInt(v, 10, 64)
	case "Float":
		return strconv.ParseFloat(v, 64)
	case "Boolean":
		return strconv.ParseBool(v)
	case "Object":
		var o any
		err := json.Unmarshal([]byte(strings.ReplaceAll(v, `\"`, `"`)), &o)
		return o, err
	}
	return nil, fmt.Errorf("unknown type %q", typ)
}

func (s *testbedScenario) contextKey(key, typ, value string) error {
	v, err := typedValue(typ, value)
	if err != nil {
		return fmt.Errorf("context key %q: %w", key, err)
	}
	if s.attrs == nil {
		s.attrs = map[string]any{}
	}
	s.attrs[key] = v
	return nil
}

func (s *testbedScenario) contextNested(outer, inner, value string) error {
	if s.attrs == nil {
		s.attrs = map[string]any{}
	}
	m, _ := s.attrs[outer].(map[string]any)
	if m == nil {
		m = map[string]any{}
		s.attrs[outer] = m
	}
	m[inner] = value
	return nil
}

func (s *testbedScenario) evaluate(ctx context.Context) error {
	ec := openfeature.NewEvaluationContext(s.tk, s.attrs)
	fb, err := typedValue(s.flagType, s.fallback)
	if err != nil {
		// A fallback that does not parse as the flag's type (the testbed's
		// "Integer" flag with fallback "13" parses) is the suite's own error.
		return fmt.Errorf("fallback %q: %w", s.fallback, err)
	}
	var res openfeature.InterfaceEvaluationDetails
	switch s.flagType {
	case "Boolean":
		d, _ := s.client.BooleanValueDetails(ctx, s.key, fb.(bool), ec)
		res = openfeature.InterfaceEvaluationDetails{Value: d.Value, EvaluationDetails: d.EvaluationDetails}
	case "String":
		d, _ := s.client.StringValueDetails(ctx, s.key, fb.(string), ec)
		res = openfeature.InterfaceEvaluationDetails{Value: d.Value, EvaluationDetails: d.EvaluationDetails}
	case "Integer":
		d, _ := s.client.IntValueDetails(ctx, s.key, fb.(int64), ec)
		res = openfeature.InterfaceEvaluationDetails{Value: d.Value, EvaluationDetails: d.EvaluationDetails}
	case "Float":
		d, _ := s.client.FloatValueDetails(ctx, s.key, fb.(float64), ec)
		res = openfeature.InterfaceEvaluationDetails{Value: d.Value, EvaluationDetails: d.EvaluationDetails}
	case "Object":
		d, _ := s.client.ObjectValueDetails(ctx, s.key, fb, ec)
		res = d
	}
	s.details = res
	return nil
}

func (s *testbedScenario) valueIs(want string) error {
	w, err := typedValue(s.flagType, want)
	if err != nil {
		return fmt.Errorf("expected value %q: %w", want, err)
	}
	got := s.details.Value
	if !reflect.DeepEqual(got, w) {
		return fmt.Errorf("value %#v, want %#v (reason %s, variant %q, error %s %s)",
			got, w, s.details.Reason, s.details.Variant, s.details.ErrorCode, s.details.ErrorMessage)
	}
	return nil
}

func (s *testbedScenario) metadataContains(table *godog.Table) error {
	rows := table.Rows
	if len(rows) < 2 {
		return errors.New("metadata table without rows")
	}
	col := map[string]int{}
	for i, c := range rows[0].Cells {
		col[c.Value] = i
	}
	cell := func(r *messages.PickleTableRow, name string) string { return r.Cells[col[name]].Value }
	for _, r := range rows[1:] {
		key, typ := cell(r, "key"), cell(r, "metadata_type")
		want, err := typedValue(typ, cell(r, "value"))
		if err != nil {
			return fmt.Errorf("metadata %q: %w", key, err)
		}
		got, ok := s.details.FlagMetadata[key]
		if !ok {
			return fmt.Errorf("metadata %q missing (have %v)", key, s.details.FlagMetadata)
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("metadata %q = %#v (%T), want %#v (%T)", key, got, got, want, want)
		}
	}
	return nil
}
