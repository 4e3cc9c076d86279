package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ErrReadOnlyUnsupported is returned by MakeReadOnly when no method makes
// the directory refuse writes here.
var ErrReadOnlyUnsupported = errors.New("no way to make the directory read-only here")

// MakeReadOnly makes dir refuse new files, so that writing a file there by
// the usual temporary-file-and-rename fails, and returns the method used
// and a function that undoes it.
//
// chmod is not enough for root, who bypasses permission bits
// (CAP_DAC_OVERRIDE). The methods, tried in order until a probe file can no
// longer be created:
//
//   - not root: chmod 0555;
//   - root: chattr +i, the immutable attribute, which stops root too
//     (ext4, xfs, btrfs; needs CAP_LINUX_IMMUTABLE);
//   - root: a read-only bind mount of the directory onto itself (needs
//     CAP_SYS_ADMIN and a mount namespace that allows it).
//
// Existing files in dir stay writable in place; only creating, renaming
// and removing entries fails.
func MakeReadOnly(dir string) (how string, undo func() error, err error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return "", nil, err
	}
	type method struct {
		name     string
		apply    func() error
		undo     func() error
		rootOnly bool
	}
	mode := fi.Mode().Perm()
	methods := []method{
		{name: "chmod 0555", apply: func() error { return os.Chmod(dir, 0o555) }, undo: func() error { return os.Chmod(dir, mode) }},
		{name: "chattr +i", rootOnly: true, apply: func() error { return runCmd("chattr", "+i", dir) }, undo: func() error { return runCmd("chattr", "-i", dir) }},
		{name: "read-only bind mount", rootOnly: true,
			apply: func() error {
				if err := runCmd("mount", "--bind", dir, dir); err != nil {
					return err
				}
				if err := runCmd("mount", "-o", "remount,bind,ro", dir); err != nil {
					_ = runCmd("umount", dir)
					return err
				}
				return nil
			},
			undo: func() error { return runCmd("umount", dir) }},
	}
	root := os.Geteuid() == 0
	var tried []string
	for _, m := range methods {
		if root != m.rootOnly {
			continue
		}
		if err := m.apply(); err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", m.name, err))
			continue
		}
		if probe(dir) {
			return m.name, m.undo, nil
		}
		tried = append(tried, m.name+": a file could still be created")
		if err := m.undo(); err != nil {
			return "", nil, fmt.Errorf("undo %s on %s: %w", m.name, dir, err)
		}
	}
	return "", nil, fmt.Errorf("%w (%s)", ErrReadOnlyUnsupported, strings.Join(tried, "; "))
}

// probe reports whether creating a file in dir fails.
func probe(dir string) bool {
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return true
	}
	f.Close()
	os.Remove(f.Name())
	return false
}

func runCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
