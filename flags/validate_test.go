package flags

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	goldenfile "github.com/tailguard/tailguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite golden files")

func newValidator(t testing.TB) *Validator {
	t.Helper()
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// golden compares got with testdata/golden/name, rewriting it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	goldenfile.Check(t, filepath.Join("testdata", "golden", name), got, *update)
}

// TestSchemaExamples runs flagd's own positive and negative schema
// examples: flag files through Parse, targeting rules through
// ValidateTargeting. The messages for the negative ones are kept in a
// golden file so their wording (flag and field named) is reviewed.
func TestSchemaExamples(t *testing.T) {
	v := newValidator(t)
	var report bytes.Buffer
	for _, kind := range []string{"flags", "targeting"} {
		for _, outcome := range []string{"positive", "negative"} {
			files, err := filepath.Glob(filepath.Join("testdata", "examples", kind, outcome, "*.json"))
			if err != nil || len(files) == 0 {
				t.Fatalf("no %s/%s examples: %v", kind, outcome, err)
			}
			for _, file := range files {
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if kind == "flags" {
					_, err = v.Parse(data)
				} else {
					err = v.ValidateTargeting(data)
				}
				name := kind + "/" + outcome + "/" + filepath.Base(file)
				switch {
				case outcome == "positive" && err != nil:
					t.Errorf("%s: rejected: %v", name, err)
				case outcome == "negative" && err == nil:
					t.Errorf("%s: accepted", name)
				case outcome == "negative":
					if !errors.Is(err, ErrInvalid) {
						t.Errorf("%s: error %v does not wrap ErrInvalid", name, err)
					}
					fmt.Fprintf(&report, "%s:\n", name)
					var ve *ValidationError
					if errors.As(err, &ve) {
						for _, p := range ve.Problems {
							fmt.Fprintf(&report, "  %s\n", p)
						}
					}
				}
			}
		}
	}
	golden(t, "negative-examples.txt", report.Bytes())
}

func TestParseProblems(t *testing.T) {
	v := newValidator(t)
	const ok = `"ok": {"state": "ENABLED", "variants": {"a": true, "b": false}, "defaultVariant": "a"}`
	tests := []struct {
		name string
		file string
		want []string // substrings, one per expected problem, in order
	}{
		{"valid", `{"flags": {` + ok + `}}`, nil},
		{"syntax error names the line", "{\n  \"flags\": {\n    \"x\": \n  }\n}", []string{"line 4, column 3"}},
		{"empty file", ``, []string{"file is empty"}},
		{"not an object", `[1]`, []string{"top level: must be a JSON object"}},
		{"flags missing", `{}`, []string{"flags: is required"}},
		{"default variant missing", `{"flags": {"backoff-strategy": {"state": "ENABLED", "variants": {"exponential": "exponential"}, "defaultVariant": "x"}}}`,
			[]string{`flag "backoff-strategy": defaultVariant "x" is not a variant (have ["exponential"])`}},
		{"null default is fine", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": null}}}`, nil},
		{"absent state", `{"flags": {"f": {"variants": {"a": 1}}}}`, []string{`flag "f": state: is required`}},
		{"mixed variant types", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1, "b": "1", "c": 2}}}}`,
			[]string{`flag "f": variants must all have one type, got number ["a" "c"], string ["b"]`}},
		{"array variant", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": [1]}}}}`, []string{`flag "f": variants.a: array values are not allowed`}},
		{"number out of range", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1e999}}}}`, []string{`flag "f": variants.a: number out of range`}},
		{"default variant of wrong type", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": 1}}}`, []string{`flag "f": defaultVariant: must be a string or null`}},
		{"targeting returns unknown variant", `{"flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "targeting": {"if": [{"var": "x"}, "on", "of"]}}}}`,
			[]string{`flag "f": targeting.if[2]: returns "of", which is not a variant (have ["off" "on"])`}},
		{"fractional names unknown variant", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "targeting": {"fractional": [["a", 50], ["c", 50]]}}}}`,
			[]string{`flag "f": targeting.fractional[1][0]: returns "c", which is not a variant`}},
		{"fractional weights", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "targeting": {"fractional": [["a", 0], ["b", 0]]}}}}`,
			[]string{`flag "f": targeting.fractional: all bucket weights are zero`}},
		{"fractional weight sum", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "targeting": {"fractional": [["a", 2147483647], ["b", 1]]}}}}`,
			[]string{`weights sum to 2147483648, more than the maximum 2147483647`}},
		{"fractional computed weight is fine", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "targeting": {"fractional": [["a", {"var": "w"}], ["b", 1]]}}}}`, nil},
		{"boolean result needs variant true", `{"flags": {"f": {"state": "ENABLED", "variants": {"on": 1}, "targeting": {"if": [{"var": "x"}, true, null]}}}}`,
			[]string{`returns true, but there is no variant "true"`}},
		{"unknown operator", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"if": [{"matches": ["a", "b"]}, "a", null]}}}}`,
			[]string{`flag "f": targeting.if[0]: unknown operator "matches"`}},
		{"two operators in one rule", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"if": [true, "a"], "==": [1, 1]}}}}`,
			[]string{`a rule must have exactly one operator`}},
		{"dangling $ref", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"if": [{"$ref": "nope"}, "a", null]}}}}`,
			[]string{`flag "f": targeting.if[0].$ref: references unknown evaluator "nope"`}},
		{"$ref cycle", `{"flags": {` + ok + `}, "$evaluators": {"a": {"!": {"$ref": "b"}}, "b": {"!": {"$ref": "a"}}}}`,
			[]string{`$evaluators "a": $ref: reference cycle a -> b -> a`}},
		{"$ref self cycle", `{"flags": {` + ok + `}, "$evaluators": {"e": {"$ref": "e"}}}`,
			[]string{`$evaluators "e": $ref: reference cycle e -> e`}},
		{"$ref diamond is no cycle", `{"flags": {` + ok + `}, "$evaluators": {"a": {"and": [{"$ref": "b"}, {"$ref": "c"}]}, "b": {"!": {"$ref": "d"}}, "c": {"!": {"$ref": "d"}}, "d": {"var": "x"}}}`, nil},
		{"$ref result checked against variants", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"$ref": "pick"}}}, "$evaluators": {"pick": {"if": [{"var": "x"}, "b", null]}}}`,
			[]string{`flag "f": targeting.$ref(pick).if[1]: returns "b", which is not a variant`}},
		{"sem_ver operator", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"if": [{"sem_ver": [{"var": "v"}, "=~", "1.0.0"]}, "a", null]}}}}`,
			[]string{`targeting.if[0].sem_ver[1]: operator must be one of`}},
		{"$flagd property", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"if": [{"var": "$flagd.flagkey"}, "a", null]}}}}`,
			[]string{`"$flagd.flagkey" is not a flagd property`}},
		{"flag-set metadata", `{"metadata": {"version": 2, "tailguard.revision": -1}, "flags": {` + ok + `}}`,
			[]string{`metadata.tailguard.revision: must be a non-negative integer`, `metadata.version: must be a string`}},
		{"schema catches what semantics do not", `{"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"if": [{"missing_some": [1]}, "a", null]}}}}`,
			[]string{`flag "f": targeting.if[0].missing_some: minItems: got 1, want 2`}},
		{"array form without the flagd schema", `{"flags": [{"key": "f", "state": "ENABLED", "variants": {"a": 1}}]}`, []string{`flags: got array, want object`}},
		{"array form with the flagd schema", `{"$schema": "https://flagd.dev/schema/v0/flagd.json", "flags": [{"key": "f", "state": "ENABLED", "variants": {"a": 1}}]}`, nil},
		{"array form duplicate key", `{"$schema": "https://flagd.dev/schema/v0/flagd.json", "flags": [{"key": "f", "state": "ENABLED", "variants": {"a": 1}}, {"key": "f", "state": "ENABLED", "variants": {"a": 1}}]}`,
			[]string{`flag "f": key: is defined more than once`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Parse([]byte(tt.file))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid")
			}
			if len(ve.Problems) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(ve.Problems), len(tt.want), err)
			}
			for i, w := range tt.want {
				if got := ve.Problems[i].String(); !strings.Contains(got, w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got, w)
				}
			}
		})
	}
}

func TestValidateTargetingSkipsRefs(t *testing.T) {
	v := newValidator(t)
	if err := v.ValidateTargeting([]byte(`{"if": [{"$ref": "somewhere"}, "a", null]}`)); err != nil {
		t.Errorf("a standalone rule may reference evaluators defined elsewhere: %v", err)
	}
}
