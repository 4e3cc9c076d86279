package eval

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// The cases where flagd's reference evaluator (and so this one) differs
// from textbook JsonLogic or from a loose reading of it. Each expectation
// was checked against @openfeature/flagd-core 4.0.1; the differential test
// in flags/provider checks many more.
func TestLogicSemantics(t *testing.T) {
	tests := []struct {
		name    string
		rule    string
		data    string
		want    any
		wantErr bool
	}{
		{"in: a number is not in a list of strings", `{"in": [{"var": "country"}, ["DE", "FR"]]}`, `{"country": 0}`, false, false},
		{"in: string containment converts the item", `{"in": [{"var": "n"}, "a1b"]}`, `{"n": 1}`, true, false},
		{"in: a number as the haystack is an error", `{"in": ["x", {"var": "n"}]}`, `{"n": 5}`, nil, true},
		{"==: number against a word is an error", `{"==": [{"var": "color"}, "yellow"]}`, `{"color": 0}`, nil, true},
		{"==: a var on the right is checked against itself", `{"==": ["yellow", {"var": "color"}]}`, `{"color": 0}`, false, false},
		{"==: numeric strings compare as numbers", `{"==": [{"var": "n"}, 1]}`, `{"n": "1"}`, true, false},
		{"==: null equals 0", `{"==": [{"var": "missing"}, 0]}`, `{}`, true, false},
		{"<: two strings compare as strings", `{"<": [{"var": "a"}, "b"]}`, `{"a": "a"}`, true, false},
		{"<: an array operand is an error", `{"<": [{"var": "a"}, 1]}`, `{"a": [1]}`, nil, true},
		{"===: type and value", `{"===": [{"var": "n"}, "1"]}`, `{"n": 1}`, false, false},
		{"cat: a missing var is null", `{"cat": ["a", {"var": "nope"}]}`, `{}`, "anull", false},
		{"cat: numbers in JavaScript notation", `{"cat": [1.5, 10, 1e21]}`, `{}`, "1.5101e+21", false},
		{"cat: arrays joined by commas", `{"cat": [{"var": "l"}]}`, `{"l": ["a", null, 2]}`, "a,,2", false},
		{"if with two arguments is interpreted: cat skips nulls", `{"if": [true, {"cat": ["a", {"var": "nope"}]}]}`, `{}`, "a", false},
		{"if with two arguments is interpreted: var on the right is checked", `{"if": [{"==": ["yellow", {"var": "c"}]}, "y"]}`, `{"c": 0}`, nil, true},
		{"an operator's null is false", `{"if": [{"starts_with": [{"var": "n"}, "a"]}, "yes", "no"]}`, `{"n": 1}`, "no", false},
		{"fractional with zero weights is null", `{"if": [{"fractional": ["k", ["a", 0]]}, "yes", "no"]}`, `{}`, "no", false},
		{"sem_ver on numbers", `{"sem_ver": [{"var": "v"}, "=", "1.2.0"]}`, `{"v": 1.2}`, true, false},
		{"sem_ver with an upper-case V", `{"sem_ver": ["V1.0.0", "=", "1.0.0"]}`, `{}`, true, false},
		{"sem_ver: unknown operator is null", `{"sem_ver": ["1.0.0", "===", "1.0.0"]}`, `{}`, nil, false},
		{"sem_ver: four parts is null", `{"sem_ver": ["1.0.0.0", ">", "1.0.0"]}`, `{}`, nil, false},
		{"arithmetic on a word is an error", `{"+": [{"var": "a"}, 1]}`, `{"a": "x"}`, nil, true},
		{"arithmetic converts numeric strings", `{"*": [{"var": "a"}, 2]}`, `{"a": " 3 "}`, 6.0, false},
		{"division by zero is an error", `{"/": [1, {"var": "z"}]}`, `{"z": 0}`, nil, true},
		{"min of a string is an error", `{"min": [1, {"var": "s"}]}`, `{"s": "0"}`, nil, true},
		{"cat of a literal null and a null var", `{"cat": ["a", null, {"var": "x"}]}`, `{"x": null}`, "anullnull", false},
		{"all of an empty array is false", `{"all": [[], true]}`, `{}`, false, false},
		{"all of null is true when compiled", `{"all": [{"var": "x"}, true]}`, `{}`, true, false},
		{"some of a string is an error", `{"some": [{"var": "s"}, true]}`, `{"s": "abc"}`, nil, true},
		{"empty object is falsy", `{"if": [{"var": "o"}, "yes", "no"]}`, `{"o": {}}`, "no", false},
		{"var with a default for null", `{"var": ["a", "d"]}`, `{"a": null}`, "d", false},
		{"var through an array index", `{"var": "l.1"}`, `{"l": ["a", "b"]}`, "b", false},
		{"var with an escaped dot", `{"var": "a\\.b"}`, `{"a.b": 1}`, 1.0, false},
		{"missing counts null as present", `{"missing": ["a", "b"]}`, `{"a": null}`, []any{"b"}, false},
		{"substr with a negative length", `{"substr": ["abcdef", 1, -2]}`, `{}`, "bcd", false},
		{"merge flattens one level", `{"merge": [[1], 2, [[3]]]}`, `{}`, []any{1.0, 2.0, []any{3.0}}, false},
		{"reduce", `{"reduce": [[1, 2, 3], {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}`, `{}`, 6.0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rule, data any
			if err := json.Unmarshal([]byte(tt.rule), &rule); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.data), &data); err != nil {
				t.Fatal(err)
			}
			n, err := compileLogic(rule)
			if err != nil {
				t.Fatal(err)
			}
			e := &env{root: data.(map[string]any)}
			got, err := n.eval(data, e)
			if tt.wantErr {
				var ee evalError
				if !errors.As(err, &ee) {
					t.Fatalf("got %#v, %v; want an evaluation error", got, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, %v; want %#v", got, err, tt.want)
			}
		})
	}
}

func TestCompileLogicRefusesUnknownOperators(t *testing.T) {
	for _, rule := range []string{
		`{"nope": [1]}`,
		`{"if": [{"bogus": []}, 1, 2]}`,
		`{"==": [1, 1], "!=": [1, 2]}`,
	} {
		var v any
		if err := json.Unmarshal([]byte(rule), &v); err != nil {
			t.Fatal(err)
		}
		if _, err := compileLogic(v); !errors.Is(err, errUnknownOperator) {
			t.Errorf("%s: %v, want errUnknownOperator", rule, err)
		}
	}
}

func TestCompileLogicFoldsConstants(t *testing.T) {
	compile := func(rule string) (node, error) {
		var v any
		if err := json.Unmarshal([]byte(rule), &v); err != nil {
			t.Fatal(err)
		}
		return compileLogic(v)
	}
	n, err := compile(`{"cat": ["a", null]}`)
	if l, ok := n.(literal); err != nil || !ok || l.v != "a" {
		t.Errorf("cat on constants: %#v, %v; want the interpreter's \"a\"", n, err)
	}
	if _, err := compile(`{"if": [{"==": [1, "a"]}, "x", "y"]}`); !errors.Is(err, errConstantRule) {
		t.Errorf("failing constant comparison: %v, want errConstantRule", err)
	}
	if n, err := compile(`{"if": [{"==": [{"var": "a"}, "a"]}, "x", "y"]}`); err != nil {
		t.Errorf("%v", err)
	} else if _, ok := n.(literal); ok {
		t.Error("a rule reading data was folded")
	}
}

func TestJSNumberString(t *testing.T) {
	for in, want := range map[float64]string{
		0: "0", 1: "1", -1.5: "-1.5", 0.1: "0.1", 1e21: "1e+21", 1.5e-7: "1.5e-7", 123456789012: "123456789012", 1e-7: "1e-7",
	} {
		if got := jsNumberString(in); got != want {
			t.Errorf("jsNumberString(%v) = %q, want %q", in, got, want)
		}
	}
}

// FuzzLogic checks that any rule and data either evaluate or fail with an
// error, never a panic.
func FuzzLogic(f *testing.F) {
	f.Add(`{"if": [{"==": [{"var": "a"}, 1]}, "x", {"cat": [{"var": "b"}, 2]}]}`, `{"a": 1, "b": [1, {"c": null}]}`)
	f.Add(`{"fractional": [{"var": "k"}, ["a", 1], ["b", {"+": [1, {"var": "w"}]}]]}`, `{"k": "x", "w": "2"}`)
	f.Add(`{"reduce": [{"var": "l"}, {"*": [{"var": "current"}, {"var": "accumulator"}]}]}`, `{"l": []}`)
	f.Add(`{"substr": [{"var": "s"}, -100, 1e300]}`, `{"s": "héllo"}`)
	f.Fuzz(func(t *testing.T, ruleJSON, dataJSON string) {
		var rule, data any
		if json.Unmarshal([]byte(ruleJSON), &rule) != nil || json.Unmarshal([]byte(dataJSON), &data) != nil {
			return
		}
		n, err := compileLogic(rule)
		if err != nil {
			return
		}
		root, _ := data.(map[string]any)
		for _, interpreted := range []bool{false, true} {
			_, _ = n.eval(data, &env{root: root, interpreted: interpreted})
		}
	})
}
