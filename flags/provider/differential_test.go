package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/tailguard/tailguard/flags"
)

// The differential test resolves every flag file of the repository, and
// files written through the same operations as tailguardctl, over generated
// evaluation contexts with this provider and with @openfeature/flagd-core
// (flagd's JavaScript evaluator, run under Node), and requires the same
// value, variant, reason and error code. It needs node and npm; the npm
// package is installed once into the tailguard cache directory.

const flagdCoreVersion = "4.0.1"

// differentialNow is $flagd.timestamp on both sides.
var differentialNow = time.Unix(1770000000, 0)

type diffCase struct {
	File    int            `json:"file"`
	Flag    string         `json:"flag"`
	Type    string         `json:"type"`
	Default any            `json:"default"`
	Context map[string]any `json:"context"`
}

type diffResult struct {
	Value     any    `json:"value"`
	Variant   string `json:"variant"`
	Reason    string `json:"reason"`
	ErrorCode string `json:"errorCode"`
	Refused   string `json:"refused"`
	Thrown    string `json:"thrown"`
}

func cacheDir() string {
	if d := os.Getenv("TAILGUARD_CACHE"); d != "" {
		return d
	}
	if c, err := os.UserCacheDir(); err == nil {
		return filepath.Join(c, "tailguard")
	}
	return filepath.Join(os.TempDir(), "tailguard-cache")
}

// installFlagdCore installs the reference evaluator and returns its
// node_modules directory, or skips the test saying why.
func installFlagdCore(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("SKIP: differential test against @openfeature/flagd-core: %s not found (install Node.js and npm)\n", tool)
			t.Skipf("%s not found", tool)
		}
	}
	dir := filepath.Join(cacheDir(), "flagd-core-"+flagdCoreVersion)
	modules := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "@openfeature", "flagd-core", "package.json")); err == nil {
		return modules
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pkg, err := os.ReadFile(filepath.Join("testdata", "flagd-core", "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), pkg, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--no-package-lock")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Printf("SKIP: differential test against @openfeature/flagd-core: npm install failed: %v\n", err)
		t.Skipf("npm install @openfeature/flagd-core@%s: %v\n%s", flagdCoreVersion, err, out)
	}
	return modules
}

// repoFlagFiles returns every JSON file in the repository that decodes as
// a flag file, relative to the repository root.
func repoFlagFiles(t *testing.T) (root string, files []string) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".json") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// flagd-core reads the map form only; the array form is the
		// flagd daemon's import format.
		if doc, err := flags.Decode(data); err == nil && !bytes.Contains(data, []byte(`"flags": [`)) && !bytes.Contains(data, []byte(`"flags":[`)) && doc != nil {
			rel, _ := filepath.Rel(root, path)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return root, files
}

// cliFiles writes the fixture through the mutations tailguardctl's
// set, rollout, enable and disable perform and returns each result.
func cliFiles(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	type step struct {
		name   string
		mutate func(*flags.Document) error
	}
	var steps []step
	for _, pct := range []float64{0, 1, 10, 25, 33.3, 50, 75, 99, 100} {
		steps = append(steps, step{fmt.Sprintf("rollout %v%%", pct), flags.Rollout("backoff-strategy", "decorrelated", "exponential", pct)})
	}
	steps = append(steps,
		step{"set variant", flags.SetVariant("backoff-strategy", "exponential", false)},
		step{"set variant keeping targeting", flags.SetVariant("new-checkout", "off", true)},
		step{"disable", flags.SetState("legacy", flags.StateDisabled)},
		step{"enable", flags.SetState("legacy", flags.StateEnabled)},
	)
	path := copyFixture(t)
	s, err := flags.NewStore(flags.StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range steps {
		if _, err := s.Update(context.Background(), flags.AnyRevision, st.mutate, flags.ChangeMeta{Actor: "operator:test", Action: flags.ActionUpdate, Reason: st.name}); err != nil && !strings.Contains(err.Error(), "no change") {
			t.Fatalf("%s: %v", st.name, err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out["tailguardctl "+st.name] = data
	}
	return out
}

// varPaths returns the var paths a rule reads and the literals it holds.
func varPaths(rule any, paths map[string]bool, lits *[]any) {
	switch x := rule.(type) {
	case map[string]any:
		for op, a := range x {
			if op == "var" {
				switch k := a.(type) {
				case string:
					paths[k] = true
				case []any:
					if len(k) > 0 {
						if s, ok := k[0].(string); ok {
							paths[s] = true
						}
					}
				}
			}
			varPaths(a, paths, lits)
		}
	case []any:
		for _, e := range x {
			varPaths(e, paths, lits)
		}
	case string, float64, bool:
		*lits = append(*lits, x)
	}
}

var poolValues = []any{
	"", "DE", "FR", "abc", "1.2.3", "v1.0.0", "V2.0.0", "2.0.0-alpha", "1", "0", " 5 ", "yes", "true",
	"user@example.com", "jobs@orange.com", "premium",
	0.0, 1.0, -1.0, 2.5, 100.0, 1.2, 3.0, 2.0,
	true, false, nil,
	[]any{}, []any{"DE", "FR"}, []any{1.0, 2.0}, []any{"a"},
	map[string]any{}, map[string]any{"a": 1.0}, map[string]any{"name": "x"},
}

func genContext(r *rand.Rand, paths []string, lits []any) map[string]any {
	ctx := map[string]any{}
	if r.IntN(10) < 8 {
		keys := []string{"", "user-1", "user-2", "jon@company.com", "jane@company.com", "some-targeting-key", "5c3d8535-f81a-4478-a6d3-afaa4d51199e"}
		if r.IntN(2) == 0 {
			ctx["targetingKey"] = keys[r.IntN(len(keys))]
		} else {
			ctx["targetingKey"] = fmt.Sprintf("subject-%d", r.IntN(100000))
		}
	}
	for _, p := range paths {
		if p == "targetingKey" || strings.HasPrefix(p, "$flagd") || r.IntN(100) < 15 {
			continue
		}
		var v any
		if len(lits) > 0 && r.IntN(10) < 4 {
			v = lits[r.IntN(len(lits))]
		} else {
			v = poolValues[r.IntN(len(poolValues))]
		}
		parts := strings.Split(p, ".")
		m := ctx
		for _, part := range parts[:len(parts)-1] {
			next, ok := m[part].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[part] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = v
	}
	return ctx
}

func flagType(f *flags.Flag) string {
	for _, name := range f.VariantNames() {
		var v any
		if json.Unmarshal(f.Variants[name], &v) != nil {
			continue
		}
		switch v.(type) {
		case bool:
			return "boolean"
		case float64:
			return "number"
		case map[string]any:
			return "object"
		case string:
			return "string"
		}
	}
	return "string"
}

var typeDefaults = map[string]any{"boolean": false, "string": "dflt", "number": -1.0, "object": map[string]any{"dflt": true}}

func TestDifferentialFlagdCore(t *testing.T) {
	modules := installFlagdCore(t)
	root, paths := repoFlagFiles(t)
	type source struct {
		name string
		data []byte
	}
	var sources []source
	for _, p := range paths {
		data, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, source{p, data})
	}
	generated := cliFiles(t)
	for _, name := range slices.Sorted(maps.Keys(generated)) {
		sources = append(sources, source{name, generated[name]})
	}

	r := rand.New(rand.NewPCG(20261204, 13))
	const perFlag = 150
	var cases []diffCase
	files := make([]string, len(sources))
	for i, src := range sources {
		files[i] = string(src.data)
		doc, err := flags.Decode(src.data)
		if err != nil {
			t.Fatalf("%s: %v", src.name, err)
		}
		evaluators := map[string]any{}
		for k, raw := range doc.Evaluators {
			var v any
			_ = json.Unmarshal(raw, &v)
			evaluators[k] = v
		}
		keys := append(doc.Keys(), "no-such-flag")
		for _, key := range keys {
			typ := "string"
			pathSet := map[string]bool{}
			var lits []any
			if f, ok := doc.Flags[key]; ok {
				typ = flagType(f)
				var rule any
				_ = json.Unmarshal(f.Targeting, &rule)
				varPaths(rule, pathSet, &lits)
				varPaths(evaluators, pathSet, &lits)
			}
			ps := slices.Sorted(maps.Keys(pathSet))
			for range perFlag {
				cases = append(cases, diffCase{File: i, Flag: key, Type: typ, Default: typeDefaults[typ], Context: genContext(r, ps, lits)})
			}
		}
	}

	want := runFlagdCore(t, modules, files, cases)
	if len(want.Results) != len(cases) {
		t.Fatalf("flagd-core returned %d results for %d cases", len(want.Results), len(cases))
	}
	providers := make([]*Provider, len(sources))
	notCompared, compared, mismatches := 0, 0, 0
	var report []string
	classes := map[string]int{}
	for i, src := range sources {
		path := filepath.Join(t.TempDir(), "flags.json")
		if err := os.WriteFile(path, src.data, 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := New(Config{Path: path, Resync: -1, Now: func() time.Time { return differentialNow }})
		if err != nil {
			t.Fatal(err)
		}
		initErr := p.Init(openfeature.EvaluationContext{})
		t.Cleanup(p.Shutdown)
		refused := want.Files[i] != nil
		switch {
		case initErr != nil && refused:
			notCompared++
			continue
		case initErr != nil:
			t.Errorf("%s: tailguard refuses the file, flagd-core serves it: %v", src.name, initErr)
			continue
		case refused:
			// flagd-core refuses a file with one structurally broken flag
			// as a whole; tailguard serves the others (and reports the
			// broken one), so there is nothing to compare.
			t.Logf("%s: flagd-core refuses the file (%s); tailguard serves it with invalid flags %v", src.name, *want.Files[i], p.InvalidFlags())
			notCompared++
			continue
		}
		providers[i] = p
	}
	ctx := context.Background()
	for i, c := range cases {
		p := providers[c.File]
		if p == nil {
			continue
		}
		compared++
		got := resolveLike(ctx, p, c)
		w := want.Results[i]
		if w.Thrown != "" {
			t.Fatalf("flagd-core threw on case %d: %s", i, w.Thrown)
		}
		if !sameResult(got, w) {
			mismatches++
			classes[fmt.Sprintf("%s %s: tailguard %s/%s, flagd-core %s/%s", sources[c.File].name, c.Flag, got.Reason, got.ErrorCode, w.Reason, w.ErrorCode)]++
			if len(report) < 25 {
				ctxJSON, _ := json.Marshal(c.Context)
				report = append(report, fmt.Sprintf("%s flag %q (%s) context %s:\n  tailguard  %+v\n  flagd-core %+v",
					sources[c.File].name, c.Flag, c.Type, ctxJSON, got, w))
			}
		}
	}
	t.Logf("differential: %d files (%d from the tree, %d written as tailguardctl does), %d not compared (refused), %d cases compared, %d mismatches",
		len(sources), len(paths), len(generated), notCompared, compared, mismatches)
	fmt.Printf("differential test against @openfeature/flagd-core %s: %d cases over %d flag files, %d mismatches\n", flagdCoreVersion, compared, len(sources)-notCompared, mismatches)
	for _, k := range slices.Sorted(maps.Keys(classes)) {
		t.Logf("mismatch class (%d cases): %s", classes[k], k)
	}
	if mismatches > 0 {
		t.Errorf("%d of %d cases differ from flagd-core:\n%s", mismatches, compared, strings.Join(report, "\n"))
	}
	if compared < 5000 {
		t.Errorf("only %d cases compared", compared)
	}
}

type flagdCoreOutput struct {
	Files   []*string    `json:"files"`
	Results []diffResult `json:"results"`
}

func runFlagdCore(t *testing.T, modules string, files []string, cases []diffCase) flagdCoreOutput {
	t.Helper()
	in, err := json.Marshal(map[string]any{"now": differentialNow.Unix(), "files": files, "cases": cases})
	if err != nil {
		t.Fatal(err)
	}
	script, _ := filepath.Abs(filepath.Join("testdata", "flagd-core", "resolve.cjs"))
	cmd := exec.Command("node", script)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node resolve.cjs: %v\n%s", err, stderr.String())
	}
	var res flagdCoreOutput
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("flagd-core output: %v", err)
	}
	return res
}

// resolveLike evaluates a case through the provider's typed evaluation
// methods, as the OpenFeature SDK calls them.
func resolveLike(ctx context.Context, p *Provider, c diffCase) diffResult {
	flat := openfeature.FlattenedContext{}
	for k, v := range c.Context {
		flat[k] = v
	}
	var value any
	var d openfeature.ProviderResolutionDetail
	switch c.Type {
	case "boolean":
		r := p.BooleanEvaluation(ctx, c.Flag, c.Default.(bool), flat)
		value, d = r.Value, r.ProviderResolutionDetail
	case "string":
		r := p.StringEvaluation(ctx, c.Flag, c.Default.(string), flat)
		value, d = r.Value, r.ProviderResolutionDetail
	case "number":
		r := p.FloatEvaluation(ctx, c.Flag, c.Default.(float64), flat)
		value, d = r.Value, r.ProviderResolutionDetail
	case "object":
		r := p.ObjectEvaluation(ctx, c.Flag, c.Default, flat)
		value, d = r.Value, r.ProviderResolutionDetail
	}
	rd := d.ResolutionDetail()
	return diffResult{Value: value, Variant: rd.Variant, Reason: string(rd.Reason), ErrorCode: string(rd.ErrorCode)}
}

func sameResult(got, want diffResult) bool {
	norm := func(v any) any {
		b, _ := json.Marshal(v)
		var out any
		_ = json.Unmarshal(b, &out)
		return out
	}
	return reflect.DeepEqual(norm(got.Value), norm(want.Value)) && got.Variant == want.Variant &&
		got.Reason == want.Reason && got.ErrorCode == want.ErrorCode
}
