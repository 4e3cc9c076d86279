package golden

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder captures failures instead of failing the test.
type recorder struct {
	testing.TB
	errors []string
	fatal  bool
}

func (r *recorder) Helper()                   {}
func (r *recorder) Errorf(f string, a ...any) { r.errors = append(r.errors, f) }
func (r *recorder) Fatalf(f string, a ...any) { r.fatal = true; panic(r) }
func (r *recorder) Fatal(a ...any)            { r.fatal = true; panic(r) }

func check(r *recorder, path string, got []byte, update bool) {
	defer func() {
		if v := recover(); v != nil && v != r {
			panic(v)
		}
	}()
	Check(r, path, got, update)
}

func TestCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "out.golden")

	r := &recorder{TB: t}
	check(r, path, []byte("a\n"), false)
	if !r.fatal {
		t.Fatal("a missing golden file did not fail")
	}

	r = &recorder{TB: t}
	check(r, path, []byte("a\nb\n"), true)
	if r.fatal || len(r.errors) > 0 {
		t.Fatalf("update failed: %+v", r)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "a\nb\n" {
		t.Fatalf("golden file = %q, %v", b, err)
	}

	r = &recorder{TB: t}
	check(r, path, []byte("a\nb\n"), false)
	if r.fatal || len(r.errors) > 0 {
		t.Fatalf("equal output failed: %+v", r)
	}

	r = &recorder{TB: t}
	check(r, path, []byte("a\nc\n"), false)
	if len(r.errors) != 1 {
		t.Fatalf("different output: %d errors, want 1", len(r.errors))
	}
}

func TestFirstDiff(t *testing.T) {
	for _, tc := range []struct{ want, got, has string }{
		{"a\nb", "a\nb", ""},
		{"a\nb", "a\nc", "line 2"},
		{"a", "a\nextra", "line 2"},
	} {
		d := FirstDiff(tc.want, tc.got)
		if (tc.has == "") != (d == "") || !strings.Contains(d, tc.has) {
			t.Errorf("FirstDiff(%q, %q) = %q, want %q", tc.want, tc.got, d, tc.has)
		}
	}
}
