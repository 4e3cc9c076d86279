package eval

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/twmb/murmur3"

	"github.com/tailguard/tailguard/flags"
)

// testNow is the evaluation time used by the tests ($flagd.timestamp).
var testNow = time.Unix(1770000000, 0)

func loadSet(t testing.TB, path string) *Set {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Decode without validation: the conformance fixture deliberately
	// contains definitions flagd serves but the schema rejects (v-prefixed
	// versions, unknown sem_ver operators, dangling $refs).
	doc, err := flags.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	set, err := Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

type want struct {
	value      any
	variant    string
	reason     openfeature.Reason
	code       openfeature.ErrorCode
	useDefault bool
}

func match(v any, variant string) want {
	return want{value: v, variant: variant, reason: openfeature.TargetingMatchReason}
}

func static(v any, variant string) want {
	return want{value: v, variant: variant, reason: openfeature.StaticReason}
}

// dflt is the default variant chosen because targeting returned null or a
// custom operation rejected its input.
func dflt(v any, variant string) want {
	return want{value: v, variant: variant, reason: openfeature.DefaultReason}
}

var codeDefault = want{reason: openfeature.DefaultReason, useDefault: true}

func failure(code openfeature.ErrorCode) want {
	return want{reason: openfeature.ErrorReason, code: code, useDefault: true}
}

func user(name string) map[string]any { return map[string]any{"user": map[string]any{"name": name}} }

func tk(key string, kv ...string) map[string]any {
	m := map[string]any{"targetingKey": key}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func kv(k string, v any) map[string]any { return map[string]any{k: v} }

// TestResolve covers flagd's evaluation semantics. Expected values for the
// fractional, sem_ver and string operations are the vectors of flagd's
// conformance suite (flagd-testbed, evaluator gherkin, "fractional-v2").
func TestResolve(t *testing.T) {
	set := loadSet(t, "testdata/conformance.flagd.json")
	tests := []struct {
		name string
		flag string
		ctx  map[string]any
		want want
	}{
		{"boolean static", "boolean-flag", nil, static(true, "on")},
		{"string static", "string-flag", nil, static("hi", "greeting")},
		{"integer static", "integer-flag", nil, static(int64(10), "ten")},
		{"float static", "float-flag", nil, static(0.5, "half")},
		{"object static", "object-flag", nil, static(map[string]any{"showImages": true, "title": "Check out these pics!", "imagesPerPage": 100.0}, "template")},
		{"int32 max keeps precision", "large-integer-flag", nil, static(int64(2147483647), "max")},
		{"2^53-1 keeps precision", "huge-integer-flag", nil, static(int64(9007199254740991), "max")},
		{"integral float stays float", "integral-float-flag", nil, static(10.0, "ten")},
		{"empty targeting is static", "empty-targeting-flag", nil, static(false, "off")},

		{"missing flag", "missing-flag", nil, failure(openfeature.FlagNotFoundCode)},
		{"disabled flag", "disabled-flag", nil, want{reason: openfeature.DisabledReason, useDefault: true}},
		{"null default variant", "null-default-flag", nil, codeDefault},
		{"undefined default variant", "undefined-default-flag", nil, codeDefault},
		{"no default, targeting null", "no-default-flag-null-targeting-variant", kv("email", "wozniak@orange.com"), codeDefault},
		{"no default, targeting match", "no-default-flag-null-targeting-variant", kv("email", "jobs@orange.com"), match("CEO", "special")},
		{"no default, if without else", "no-default-flag-undefined-targeting-variant", kv("email", "wozniak@orange.com"), codeDefault},

		{"$ref match", "some-email-targeted-flag", kv("email", "ballmer@macrosoft.com"), match("hi", "hi")},
		{"$ref no match", "some-email-targeted-flag", kv("email", "user@example.com"), match("bye", "bye")},
		{"$ref to missing evaluator", "ref-to-nonexistent-evaluator-flag", nil, failure(openfeature.ParseErrorCode)},
		{"targeting key hit", "targeting-key-flag", tk("5c3d8535-f81a-4478-a6d3-afaa4d51199e"), match("hit", "hit")},
		{"targeting key miss falls to default", "targeting-key-flag", tk("f20bd32d-703b-48b6-bc8e-79d53c85134a"), dflt("miss", "miss")},

		{"fractional jack", "fractional-flag", user("jack"), match("hearts", "hearts")},
		{"fractional queen", "fractional-flag", user("queen"), match("spades", "spades")},
		{"fractional ten", "fractional-flag", user("ten"), match("clubs", "clubs")},
		{"fractional nine", "fractional-flag", user("nine"), match("diamonds", "diamonds")},
		{"fractional 3", "fractional-flag", user("3"), match("clubs", "clubs")},
		{"fractional shorthand jon", "fractional-flag-shorthand", tk("jon@company.com"), match("heads", "heads")},
		{"fractional shorthand jane", "fractional-flag-shorthand", tk("jane@company.com"), match("tails", "tails")},
		{"shared seed A seven", "fractional-flag-A-shared-seed", user("seven"), match("hearts", "hearts")},
		{"shared seed A eight", "fractional-flag-A-shared-seed", user("eight"), match("diamonds", "diamonds")},
		{"shared seed A nine", "fractional-flag-A-shared-seed", user("nine"), match("clubs", "clubs")},
		{"shared seed A two", "fractional-flag-A-shared-seed", user("two"), match("spades", "spades")},
		{"shared seed B seven", "fractional-flag-B-shared-seed", user("seven"), match("ace-of-hearts", "hearts")},
		{"shared seed B eight", "fractional-flag-B-shared-seed", user("eight"), match("ace-of-diamonds", "diamonds")},
		{"shared seed B nine", "fractional-flag-B-shared-seed", user("nine"), match("ace-of-clubs", "clubs")},
		{"shared seed B two", "fractional-flag-B-shared-seed", user("two"), match("ace-of-spades", "spades")},
		{"hash edge ejOoVL", "fractional-hash-edge-flag", tk("ejOoVL"), match("lower", "lower")},
		{"hash edge bY9fO-", "fractional-hash-edge-flag", tk("bY9fO-"), match("lower", "lower")},
		{"hash edge SI7p-", "fractional-hash-edge-flag", tk("SI7p-"), match("lower", "lower")},
		{"hash edge 6LvT0", "fractional-hash-edge-flag", tk("6LvT0"), match("upper", "upper")},
		{"hash edge ceQdGm", "fractional-hash-edge-flag", tk("ceQdGm"), match("upper", "upper")},
		{"nested if variant premium", "fractional-nested-if-flag", tk("jon@company.com", "tier", "premium"), match("premium", "premium")},
		{"nested if variant basic", "fractional-nested-if-flag", tk("jon@company.com", "tier", "basic"), match("standard", "standard")},
		{"nested if other bucket premium", "fractional-nested-if-flag", tk("user1", "tier", "premium"), match("standard", "standard")},
		{"nested if other bucket basic", "fractional-nested-if-flag", tk("user1", "tier", "basic"), match("standard", "standard")},
		{"nested var red", "fractional-nested-var-flag", tk("jon@company.com", "color", "red"), match("red", "red")},
		{"nested var green", "fractional-nested-var-flag", tk("jon@company.com", "color", "green"), match("green", "green")},
		{"nested var other bucket", "fractional-nested-var-flag", tk("user1", "color", "red"), match("blue", "blue")},
		{"nested var not a variant", "fractional-nested-var-flag", tk("jon@company.com", "color", "yellow"), failure(openfeature.GeneralCode)},
		{"nested var empty", "fractional-nested-var-flag", tk("jon@company.com", "color", ""), failure(openfeature.GeneralCode)},
		{"nested weight premium jon", "fractional-nested-weight-flag", tk("jon@company.com", "tier", "premium"), match("red", "red")},
		{"nested weight basic jon", "fractional-nested-weight-flag", tk("jon@company.com", "tier", "basic"), match("blue", "blue")},
		{"nested weight premium user1", "fractional-nested-weight-flag", tk("user1", "tier", "premium"), match("red", "red")},
		{"nested weight basic user1", "fractional-nested-weight-flag", tk("user1", "tier", "basic"), match("blue", "blue")},
		{"fractional as condition", "fractional-as-condition-flag", tk("some-targeting-key"), match("hundreds", "big")},
		{"fractional as false condition", "fractional-as-condition-false-flag", tk("some-targeting-key"), match("ones", "small")},
		{"fractional single entry", "fractional-single-entry-flag", tk("anyone"), match("single", "single")},
		{"fractional without bucketing value is false", "fractional-null-bucket-key-flag", nil, match("false", "false")},
		{"fractional all weights zero is false", "fractional-zero-weights-flag", tk("any-user"), match("false", "false")},
		{"fractional negative weight clamps to zero", "fractional-negative-weight-flag", tk("any-user"), match("two", "two")},

		{"starts_with", "starts-ends-flag", kv("id", "abcdef"), match("prefix", "prefix")},
		{"ends_with", "starts-ends-flag", kv("id", "uvwxyz"), match("postfix", "postfix")},
		{"starts_with wins", "starts-ends-flag", kv("id", "abcxyz"), match("prefix", "prefix")},
		{"neither", "starts-ends-flag", kv("id", "lmnopq"), match("none", "none")},
		{"starts_with on a number is false", "starts-with-non-string-flag", kv("num", 123), match("false", "false")},
		{"ends_with with one argument is false", "ends-with-wrong-args-flag", nil, match("false", "false")},

		{"sem_ver equal", "equal-greater-lesser-version-flag", kv("version", "2.0.0"), match("equal", "equal")},
		{"sem_ver greater", "equal-greater-lesser-version-flag", kv("version", "2.1.0"), match("greater", "greater")},
		{"sem_ver lesser", "equal-greater-lesser-version-flag", kv("version", "1.9.0"), match("lesser", "lesser")},
		{"sem_ver prerelease is lesser", "equal-greater-lesser-version-flag", kv("version", "2.0.0-alpha"), match("lesser", "lesser")},
		{"sem_ver invalid version", "equal-greater-lesser-version-flag", kv("version", "2.0.0.0"), match("none", "none")},
		{"sem_ver tilde", "major-minor-version-flag", kv("version", "3.0.1"), match("minor", "minor")},
		{"sem_ver caret", "major-minor-version-flag", kv("version", "3.1.0"), match("major", "major")},
		{"sem_ver neither", "major-minor-version-flag", kv("version", "4.0.0"), match("none", "none")},
		{"sem_ver unknown operator is false", "semver-invalid-operator-flag", kv("version", "1.0.0"), match("false", "false")},
		{"sem_ver v prefix plain", "semver-v-prefix-flag", kv("version", "1.0.0"), match("match", "match")},
		{"sem_ver v prefix prefixed", "semver-v-prefix-flag", kv("version", "v1.0.0"), match("match", "match")},
		{"sem_ver v prefix other", "semver-v-prefix-flag", kv("version", "2.0.0"), match("no-match", "no-match")},
		{"sem_ver partial 1.5.0", "semver-partial-version-flag", kv("version", "1.5.0"), match("match", "match")},
		{"sem_ver partial 1.0.0", "semver-partial-version-flag", kv("version", "1.0.0"), match("match", "match")},
		{"sem_ver partial 2.0.0", "semver-partial-version-flag", kv("version", "2.0.0"), match("no-match", "no-match")},
		{"sem_ver build metadata", "semver-build-metadata-flag", kv("version", "1.0.0"), match("match", "match")},
		{"sem_ver other build metadata", "semver-build-metadata-flag", kv("version", "1.0.0+other"), match("match", "match")},
		{"sem_ver build metadata other version", "semver-build-metadata-flag", kv("version", "2.0.0"), match("no-match", "no-match")},

		{"and guards sem_ver: missing", "guarded-semver-flag", nil, match("old", "old")},
		{"and guards sem_ver: new", "guarded-semver-flag", kv("version", "2.1.0"), match("new", "new")},
		// flagd's operations return null on bad input, and null is false.
		{"and guards sem_ver: invalid", "guarded-semver-flag", kv("version", "garbage"), match("old", "old")},
		{"branch not taken is not evaluated", "untaken-branch-error-flag", kv("tier", "stable"), match("stable", "stable")},
		{"branch taken fails", "untaken-branch-error-flag", kv("tier", "beta"), dflt("fallback", "fallback")},
		{"or short-circuits", "or-flag", kv("a", 1), match("yes", "yes")},
		{"or second operand", "or-flag", map[string]any{"a": 2, "b": "xyz"}, match("yes", "yes")},
		{"or operand fails", "or-flag", kv("a", 2), match("no", "no")},
		{"boolean result names variant true", "boolean-targeting-flag", kv("country", "DE"), match(int64(1), "true")},
		{"boolean result names variant false", "boolean-targeting-flag", kv("country", "US"), match(int64(0), "false")},
		{"result is not a variant", "unknown-variant-flag", kv("pick", "c"), failure(openfeature.GeneralCode)},
		{"result is a variant", "unknown-variant-flag", kv("pick", "b"), match("b", "b")},
		{"result is null", "unknown-variant-flag", nil, dflt("a", "a")},
		{"in on a number is an evaluation error", "type-error-flag", kv("n", 5), failure(openfeature.GeneralCode)},
		{"object by targeting", "object-targeting-flag", kv("upstream", "payments"), match(map[string]any{"base": "100ms", "maxAttempts": 6.0}, "slow")},
		{"context ints and typed slices", "boolean-targeting-flag", map[string]any{"country": "FR", "ids": []string{"a"}, "n": int64(3)}, match(int64(1), "true")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := set.Resolve(tt.flag, tt.ctx, testNow)
			if got.Reason != tt.want.reason || got.ErrorCode != tt.want.code || got.UseDefault != tt.want.useDefault ||
				got.Variant != tt.want.variant || !reflect.DeepEqual(got.Value, tt.want.value) {
				t.Errorf("Resolve(%q, %v):\n got value=%#v variant=%q reason=%s code=%q useDefault=%v (%s%s)\nwant value=%#v variant=%q reason=%s code=%q useDefault=%v",
					tt.flag, tt.ctx, got.Value, got.Variant, got.Reason, got.ErrorCode, got.UseDefault, got.ErrorMessage, got.Detail,
					tt.want.value, tt.want.variant, tt.want.reason, tt.want.code, tt.want.useDefault)
			}
			if tt.want.code != "" && got.ErrorMessage == "" {
				t.Errorf("error %s without a message", got.ErrorCode)
			}
		})
	}
}

func TestResolveDynamicWeights(t *testing.T) {
	set := loadSet(t, "testdata/conformance.flagd.json")
	const flag = "fractional-timestamp-weight-flag"
	ctx := tk("someone")
	// At 1740000000 "on" weighs 0: everyone is off. At 1800000000 "off"
	// weighs 0: everyone is on.
	if got := set.Resolve(flag, ctx, time.Unix(1740000000, 0)); got.Variant != "off" {
		t.Errorf("at start: variant %q, want off", got.Variant)
	}
	if got := set.Resolve(flag, ctx, time.Unix(1800000000, 0)); got.Variant != "on" {
		t.Errorf("at end: variant %q, want on", got.Variant)
	}
	// In between, the split follows the clock; count a population.
	on := 0
	mid := time.Unix(1740000000+45000000, 0) // 75% of the way
	for i := range 2000 {
		if set.Resolve(flag, tk("user-"+strconv.Itoa(i)), mid).Variant == "on" {
			on++
		}
	}
	if on < 1300 || on > 1700 {
		t.Errorf("at 75%% of the ramp, %d/2000 evaluations are on, want about 1500", on)
	}
}

// TestFastSplitMatchesJsonLogic checks the fast path for literal
// fractional rules against the general JsonLogic evaluation.
func TestFastSplitMatchesJsonLogic(t *testing.T) {
	doc, err := flags.Decode([]byte(`{"flags": {
		"a": {"state": "ENABLED", "variants": {"x": 1, "y": 2, "z": 3}, "defaultVariant": "x",
		      "targeting": {"fractional": [["x", 1250], ["y", 0], ["z", 8750]]}},
		"b": {"state": "ENABLED", "variants": {"x": 1, "y": 2}, "defaultVariant": "x",
		      "targeting": {"fractional": [["x"], ["y", 3]]}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	set, err := Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a", "b"} {
		f := set.flags[key]
		if f.split == nil {
			t.Fatalf("flag %s: no fast path", key)
		}
		for i := range 2000 {
			ctx := tk("subject-" + strconv.Itoa(i))
			fast := set.Resolve(key, ctx, testNow)
			e := &env{root: evaluationData(key, ctx, testNow)}
			slow, err := f.rule.eval(e.root, e)
			if err != nil || fast.Variant != slow {
				t.Fatalf("flag %s, %v: fast path %q, JsonLogic %v (%v)", key, ctx, fast.Variant, slow, err)
			}
		}
		if r := set.Resolve(key, nil, testNow); r.Reason != openfeature.DefaultReason || r.Variant != "x" || r.Detail == "" {
			t.Errorf("flag %s without targeting key: %+v", key, r)
		}
	}
	for _, rule := range []string{
		`{"fractional": [{"var": "email"}, ["x", 1]]}`,
		`{"fractional": [["x", 1.5]]}`,
		`{"fractional": [[true, 1]]}`,
		`{"fractional": [["x", {"var": "w"}]]}`,
		`{"fractional": [["x", 0]]}`,
		`{"if": [true, "x"]}`,
	} {
		r, _ := decodeJSONForTest(rule)
		if compileSplit(r) != nil {
			t.Errorf("fast path taken for %s", rule)
		}
	}
}

func decodeJSONForTest(s string) (any, error) {
	var v any
	err := json.Unmarshal([]byte(s), &v)
	return v, err
}

func TestResolveMetadata(t *testing.T) {
	set := loadSet(t, "testdata/conformance.flagd.json")
	got := set.Resolve("metadata-flag", nil, testNow)
	want := map[string]any{
		"flagSetId":          "conformance",
		"version":            "flag-level", // the flag's metadata wins
		"tailguard.revision": int64(7),
		"string":             "1.0.2",
		"integer":            int64(2),
		"boolean":            true,
		"float":              0.1,
	}
	if !reflect.DeepEqual(got.Metadata, want) {
		t.Errorf("metadata %#v, want %#v", got.Metadata, want)
	}
	// Flag-not-found still carries the flag-set metadata; "$"-prefixed keys
	// are internal and hidden.
	nf := set.Resolve("nope", nil, testNow)
	if nf.Metadata["flagSetId"] != "conformance" {
		t.Errorf("flag not found metadata %v lacks flagSetId", nf.Metadata)
	}
	if _, ok := nf.Metadata["$internal"]; ok {
		t.Errorf("internal metadata leaked: %v", nf.Metadata)
	}
	dis := set.Resolve("disabled-flag", nil, testNow)
	if dis.Metadata["owner"] != "team-a" {
		t.Errorf("disabled flag metadata %v lacks owner", dis.Metadata)
	}
}

func TestResolveObjectIsCopied(t *testing.T) {
	set := loadSet(t, "testdata/conformance.flagd.json")
	first := set.Resolve("object-flag", nil, testNow).Value.(map[string]any)
	first["title"] = "changed"
	second := set.Resolve("object-flag", nil, testNow).Value.(map[string]any)
	if second["title"] != "Check out these pics!" {
		t.Errorf("caller's change leaked into the flag set: %v", second)
	}
}

func TestMurmur3Vectors(t *testing.T) {
	// Reference values of MurmurHash3_x86_32 with seed 0.
	for in, want := range map[string]uint32{
		"":      0,
		"hello": 0x248bfa47,
		"The quick brown fox jumps over the lazy dog": 0x2e4ff723,
	} {
		if got := murmur3.StringSum32(in); got != want {
			t.Errorf("murmur3(%q) = %#x, want %#x", in, got, want)
		}
	}
	// Bucket points quoted in flagd's conformance suite.
	for in, want := range map[string]int64{"jon@company.com": 36, "user1": 76} {
		if got := Bucket(in, 100); got != want {
			t.Errorf("Bucket(%q, 100) = %d, want %d", in, got, want)
		}
	}
}

func TestBucketDistribution(t *testing.T) {
	// 25/75 over 10000 subjects lands within a few percent of the weights.
	counts := [2]int{}
	for i := range 10000 {
		if Bucket("flag"+strconv.Itoa(i), 100) < 25 {
			counts[0]++
		} else {
			counts[1]++
		}
	}
	if counts[0] < 2300 || counts[0] > 2700 {
		t.Errorf("25%% bucket got %d of 10000", counts[0])
	}
}

func TestChanged(t *testing.T) {
	parse := func(s string) *Set {
		doc, err := flags.Decode([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		set, err := Compile(doc)
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	base := `{"metadata": {"tailguard.revision": %d}, "flags": {
		"a": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"},
		"b": {"state": "ENABLED", "variants": {"x": 1, "y": 2}, "defaultVariant": "x", "targeting": {"if": [{"$ref": "r"}, "y"]}},
		"c": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"}
	}, "$evaluators": {"r": {"==": [{"var": "k"}, %q]}}}`
	old := parse(fmt.Sprintf(base, 1, "v1"))
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"revision only", fmt.Sprintf(base, 2, "v1"), nil},
		{"evaluator changes flags using it", fmt.Sprintf(base, 2, "v2"), []string{"b"}},
		{"flag removed and added", `{"flags": {
			"a": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"},
			"b": {"state": "ENABLED", "variants": {"x": 1, "y": 2}, "defaultVariant": "x", "targeting": {"if": [{"$ref": "r"}, "y"]}},
			"d": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"}},
			"$evaluators": {"r": {"==": [{"var": "k"}, "v1"]}}}`, []string{"c", "d"}},
		{"inlining a $ref changes the definition", `{"flags": {
			"a": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"},
			"b": {"state": "ENABLED", "variants": {"x": 1, "y": 2}, "defaultVariant": "x", "targeting": {"if": [{"==": [{"var": "k"}, "v1"]}, "y"]}},
			"c": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"}}}`, []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parse(tt.doc).Changed(old)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Changed = %q, want %q", got, tt.want)
			}
		})
	}
	if got := old.Changed(nil); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("Changed(nil) = %q", got)
	}
}

func TestResolveConcurrent(t *testing.T) {
	set := loadSet(t, "testdata/conformance.flagd.json")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				name := "u" + strconv.Itoa(g*1000+i)
				a := set.Resolve("fractional-nested-if-flag", tk(name, "tier", "premium"), testNow)
				b := set.Resolve("fractional-nested-if-flag", tk(name, "tier", "premium"), testNow)
				if a.Variant != b.Variant || a.Reason != openfeature.TargetingMatchReason {
					t.Errorf("unstable or failed evaluation for %s: %+v %+v", name, a, b)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkResolveStatic(b *testing.B) {
	set := loadSet(b, "testdata/conformance.flagd.json")
	ctx := tk("user-1")
	b.ReportAllocs()
	for b.Loop() {
		if r := set.Resolve("integer-flag", ctx, testNow); r.Reason != openfeature.StaticReason {
			b.Fatal(r)
		}
	}
}

// BenchmarkResolveFractional evaluates a fractional rule with an explicit
// bucketing expression, which goes through JsonLogic.
func BenchmarkResolveFractional(b *testing.B) {
	set := loadSet(b, "testdata/conformance.flagd.json")
	ctxs := make([]map[string]any, 1024)
	for i := range ctxs {
		ctxs[i] = tk("user-"+strconv.Itoa(i), "tier", "basic")
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if r := set.Resolve("fractional-hash-edge-flag", ctxs[i%len(ctxs)], testNow); r.Reason != openfeature.TargetingMatchReason {
			b.Fatal(r)
		}
		i++
	}
}

// BenchmarkResolveFractionalLiteral evaluates the rule tailguard writes
// for rollouts (literal buckets, default bucketing): the fast path.
func BenchmarkResolveFractionalLiteral(b *testing.B) {
	set := loadSet(b, "testdata/conformance.flagd.json")
	ctxs := make([]map[string]any, 1024)
	for i := range ctxs {
		ctxs[i] = tk("user-" + strconv.Itoa(i))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if r := set.Resolve("fractional-flag-shorthand", ctxs[i%len(ctxs)], testNow); r.Reason != openfeature.TargetingMatchReason {
			b.Fatal(r)
		}
		i++
	}
}
