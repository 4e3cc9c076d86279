package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tailguard/tailguard/flags"

	goldenfile "github.com/tailguard/tailguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite golden files")

type step struct {
	args []string
	code int
}

func cmd(code int, args ...string) step { return step{args: args, code: code} }

var timestamp = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

// TestCLI runs command sequences through run() and compares the
// transcript (stdout, stderr and exit code of every step) with a golden
// file; -update rewrites them. The flag file is a copy of
// testdata/flags.json named by TAILGUARD_FLAG_FILE; its directory shows
// as $DIR and journal times as TIME.
func TestCLI(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"usage", []step{
			cmd(2),
			cmd(0, "--help"),
			cmd(2, "flags", "frobnicate"),
			cmd(2, "flags", "set", "backoff-strategy", "decorrelated"),
			cmd(2, "-o", "yaml", "flags", "list"),
		}},
		{"list", []step{
			cmd(0, "flags", "list"),
			cmd(0, "-o", "json", "flags", "list"),
		}},
		{"get", []step{
			cmd(0, "flags", "get", "new-checkout"),
			cmd(0, "flags", "get", "backoff-constants"),
			cmd(0, "-o", "json", "flags", "get", "backoff-strategy"),
			cmd(1, "flags", "get", "nope"),
		}},
		{"set", []step{
			cmd(0, "flags", "set", "backoff-strategy", "decorrelated", "--reason", "new strategy fixes brown-outs"),
			cmd(0, "flags", "set", "backoff-strategy", "decorrelated", "--reason", "again"),
			cmd(5, "flags", "set", "backoff-strategy", "grpc", "--reason", "typo"),
			cmd(1, "flags", "set", "nope", "a", "--reason", "typo"),
			cmd(0, "-o", "json", "flags", "set", "backoff-constants", "safe", "--reason", "cap attempts", "--incident", "inc-7"),
			cmd(0, "flags", "get", "backoff-strategy"),
		}},
		{"enable-disable", []step{
			cmd(0, "flags", "enable", "new-checkout", "--reason", "launch"),
			cmd(0, "-o", "json", "flags", "disable", "new-checkout", "--reason", "errors", "--incident", "inc-1"),
			cmd(0, "flags", "disable", "new-checkout", "--reason", "errors"),
			cmd(1, "flags", "enable", "nope", "--reason", "x"),
		}},
		{"rollout", []step{
			cmd(0, "flags", "rollout", "backoff-strategy", "--variant", "decorrelated", "--percent", "25", "--reason", "canary"),
			cmd(0, "-o", "json", "flags", "rollout", "backoff-strategy", "--variant", "decorrelated", "--percent", "12.5", "--rest", "full-jitter", "--reason", "shrink"),
			cmd(5, "flags", "rollout", "backoff-strategy", "--variant", "decorrelated", "--percent", "120", "--reason", "x"),
			cmd(5, "flags", "rollout", "backoff-strategy", "--variant", "grpc", "--percent", "10", "--reason", "x"),
			cmd(2, "flags", "rollout", "backoff-strategy", "--variant", "decorrelated", "--reason", "x"),
			cmd(0, "flags", "list"),
		}},
		{"conflict-and-idempotency", []step{
			cmd(3, "flags", "set", "backoff-strategy", "decorrelated", "--reason", "stale view", "--if-revision", "0"),
			cmd(0, "--actor", "controller", "flags", "rollout", "backoff-strategy", "--variant", "decorrelated", "--percent", "50",
				"--reason", "shrink", "--incident", "inc-2", "--idempotency-key", "inc-2/shrink"),
			cmd(0, "--actor", "controller", "flags", "rollout", "backoff-strategy", "--variant", "decorrelated", "--percent", "50",
				"--reason", "shrink", "--incident", "inc-2", "--idempotency-key", "inc-2/shrink"),
			cmd(0, "-o", "json", "--actor", "controller", "flags", "rollout", "backoff-strategy", "--variant", "decorrelated", "--percent", "50",
				"--reason", "shrink", "--incident", "inc-2", "--idempotency-key", "inc-2/shrink"),
			cmd(5, "--actor", "robot", "flags", "enable", "new-checkout", "--reason", "x"),
		}},
		{"history", []step{
			cmd(0, "flags", "history"),
			cmd(0, "--actor", "controller", "flags", "rollout", "backoff-strategy", "--variant", "decorrelated", "--percent", "25", "--reason", "p99 regression", "--incident", "inc-1"),
			cmd(0, "flags", "enable", "new-checkout", "--reason", "launch"),
			cmd(0, "--actor", "controller", "flags", "set", "backoff-constants", "safe", "--reason", "cap attempts", "--incident", "inc-1"),
			cmd(0, "flags", "history"),
			cmd(0, "flags", "history", "--changes", "backoff-strategy"),
			cmd(0, "flags", "history", "--by", "controller", "--limit", "1"),
			cmd(0, "-o", "json", "flags", "history", "--incident", "inc-1", "--limit", "1"),
			cmd(2, "flags", "history", "--since", "yesterday"),
		}},
		{"rollback", []step{
			cmd(0, "--actor", "controller", "flags", "rollout", "backoff-strategy", "--variant", "decorrelated", "--percent", "25", "--reason", "p99 regression", "--incident", "inc-1"),
			cmd(0, "--actor", "controller", "flags", "set", "backoff-constants", "safe", "--reason", "cap attempts", "--incident", "inc-1"),
			cmd(0, "flags", "set", "backoff-strategy", "full-jitter", "--reason", "manual override"),
			cmd(2, "flags", "rollback", "--reason", "x"),
			cmd(2, "flags", "rollback", "--reason", "x", "--to", "1", "--incident", "inc-1"),
			cmd(3, "flags", "rollback", "--incident", "inc-1", "--reason", "incident closed"),
			cmd(0, "flags", "rollback", "--incident", "inc-1", "--reason", "incident closed", "--force", "--dry-run"),
			cmd(0, "flags", "rollback", "--incident", "inc-1", "--reason", "incident closed", "--force"),
			cmd(1, "flags", "rollback", "--incident", "inc-1", "--reason", "again"),
			cmd(0, "-o", "json", "flags", "rollback", "--to", "3", "--reason", "restore revision 3"),
			cmd(0, "flags", "history"),
			cmd(0, "flags", "rollback", "--incident", "inc-1", "--reason", "the rollback of a rollback re-applied them"),
			cmd(1, "flags", "rollback", "--since", "1h", "--reason", "nothing left"),
			cmd(0, "flags", "list"),
		}},
		{"rollback-since", []step{
			cmd(0, "flags", "enable", "new-checkout", "--reason", "launch"),
			cmd(0, "--actor", "controller", "flags", "disable", "new-checkout", "--reason", "errors", "--incident", "inc-3"),
			cmd(0, "flags", "rollback", "--since", "1h", "--reason", "false alarm"),
			cmd(0, "flags", "get", "new-checkout"),
		}},
		{"validate", []step{
			cmd(0, "flags", "validate"),
			cmd(5, "flags", "validate", "testdata/invalid.json"),
			cmd(5, "-o", "json", "flags", "validate", "testdata/invalid.json"),
			cmd(4, "flags", "validate", "testdata/missing.json"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := copyFixture(t, dir)
			t.Setenv("TAILGUARD_FLAG_FILE", path)
			t.Setenv("TAILGUARD_URL", "")
			t.Setenv("USER", "alice")
			var transcript bytes.Buffer
			for _, s := range tt.steps {
				var stdout, stderr bytes.Buffer
				code := run(s.args, strings.NewReader(""), &stdout, &stderr)
				fmt.Fprintf(&transcript, "$ tailguardctl %s\n[exit %d]\n%s", shellJoin(s.args), code, stdout.String())
				if stderr.Len() > 0 {
					fmt.Fprintf(&transcript, "--- stderr\n%s", stderr.String())
				}
				transcript.WriteString("\n")
				if code != s.code {
					t.Errorf("tailguardctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(s.args, " "), code, s.code, stdout.String(), stderr.String())
				}
			}
			out := strings.ReplaceAll(transcript.String(), dir, "$DIR")
			out = timestamp.ReplaceAllString(out, "TIME")
			golden(t, tt.name+".txt", []byte(out))
		})
	}
}

// shellJoin renders args as a shell command line.
func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		quoted[i] = a
	}
	return strings.Join(quoted, " ")
}

func copyFixture(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile("testdata/flags.json")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "flags.json")
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	return path
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	goldenfile.Check(t, filepath.Join("testdata", "golden", name), got, *update)
}

func TestFlagFileRequiredAndIOErrors(t *testing.T) {
	t.Setenv("TAILGUARD_FLAG_FILE", "")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"flags", "list"}, nil, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "--flag-file") {
		t.Errorf("without a flag file: exit %d, %s", code, stderr.String())
	}
	stderr.Reset()
	missing := filepath.Join(t.TempDir(), "none.json")
	if code := run([]string{"--flag-file", missing, "flags", "list"}, nil, &stdout, &stderr); code != exitIO {
		t.Errorf("missing flag file: exit %d, %s", code, stderr.String())
	}
	stderr.Reset()
	// A journal that cannot be written (here: a directory in its place,
	// which fails even for root) is an I/O error, and the flag file stays.
	dir := t.TempDir()
	path := copyFixture(t, dir)
	if err := os.Mkdir(flags.JournalPath(path), 0o755); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if code := run([]string{"--flag-file", path, "flags", "enable", "new-checkout", "--reason", "x"}, nil, &stdout, &stderr); code != exitIO {
		t.Errorf("unwritable journal: exit %d, %s", code, stderr.String())
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Error("flag file changed although the journal could not be written")
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{usagef("x"), exitUsage},
		{fmt.Errorf("w: %w", &flags.ConflictError{Expected: 1, Actual: 2}), exitConflict},
		{&flags.RollbackConflictError{}, exitConflict},
		{reportedError{&flags.ValidationError{}}, exitInvalid},
		{fmt.Errorf("read: %w", &fs.PathError{Op: "open", Path: "x", Err: fs.ErrNotExist}), exitIO},
		{fmt.Errorf("flag: %w", flags.ErrNotFound), exitError},
		{errors.New("other"), exitError},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}
