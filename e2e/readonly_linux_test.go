package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestMakeReadOnly(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "flags.json")
	if err := os.WriteFile(file, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	how, undo, err := MakeReadOnly(dir)
	if errors.Is(err, ErrReadOnlyUnsupported) {
		t.Skipf("SKIP: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var undoErr error
	restore := func() { once.Do(func() { undoErr = undo() }) }
	t.Cleanup(restore)
	t.Logf("read-only by %s", how)

	// The way the flag store writes: a temporary file renamed over the file.
	if err := os.WriteFile(filepath.Join(dir, "flags.json.tmp"), []byte("{}"), 0o644); err == nil {
		t.Errorf("%s: a new file could be created", how)
	}
	if err := os.Rename(file, file+".moved"); err == nil {
		t.Errorf("%s: the file could be renamed", how)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "{}" {
		t.Errorf("the file is not readable as before: %q, %v", b, err)
	}

	restore()
	if undoErr != nil {
		t.Fatalf("undo: %v", undoErr)
	}
	if err := os.WriteFile(filepath.Join(dir, "after"), nil, 0o644); err != nil {
		t.Errorf("still read-only after undo: %v", err)
	}
}
