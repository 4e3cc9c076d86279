package flags_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/flags/eval"
)

// FuzzParse feeds arbitrary bytes to the flag-file parser. It must never
// panic; a file it accepts must survive serialising and parsing again
// unchanged, stay valid, and evaluate without panicking.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "examples", "flags", "*", "*.json"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"flags": {"a": {"state": "ENABLED", "variants": {"x": 1}, "targeting": {"fractional": [["x", 1]]}}}}`))
	f.Add([]byte(`{"flags": {}, "$evaluators": {"e": {"$ref": "e"}}}`))
	f.Add([]byte(`{"flags": {"a": {"state": "ENABLED", "variants": {"x": "x"}, "targeting": {"if": [{"sem_ver": [{"var": "v"}, "^", "1.0.0"]}, "x", null]}}}}`))
	v, err := flags.NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1770000000, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = flags.Decode(data)
		doc, err := v.Parse(data)
		if err != nil {
			return
		}
		out, err := flags.Marshal(doc)
		if err != nil {
			t.Fatalf("marshal a valid document: %v", err)
		}
		again, err := v.Parse(out)
		if err != nil {
			t.Fatalf("re-serialised document is invalid: %v\n%s", err, out)
		}
		out2, err := flags.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the document:\n%s\n%s", out, out2)
		}
		set, err := eval.Compile(again)
		if err != nil {
			t.Fatalf("compile a valid document: %v", err)
		}
		for _, key := range set.Keys() {
			set.Resolve(key, map[string]any{"targetingKey": "subject", "email": "a@b.c", "version": "1.2.3"}, now)
		}
	})
}
