package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// StateStore keeps the controller's state of each service across
// restarts: incidents with their verifications, notes and recovery
// tracking, cooldowns and the action budget. The flag journal is the
// record of what was written (JournalReader); the state store adds what
// the controller learnt in between. Losing it loses no write and repeats
// none, but a restarted replica then resumes incidents from the journal
// alone, with their hold and verification clocks started again.
type StateStore interface {
	LoadStates(ctx context.Context) ([]State, error)
	SaveState(ctx context.Context, st State) error
}

// FileStates is a StateStore in one JSON file, replaced atomically
// (temporary file, fsync, rename, directory fsync) on every save, so that a
// crash leaves the previous or the new version, never a torn one. It is
// safe for concurrent use within a process; replicas on one file would
// overwrite each other's states and must each have their own.
type FileStates struct {
	path string

	mu     sync.Mutex
	states map[string]State
}

// fileStatesFormat is the file's content.
type fileStatesFormat struct {
	Version  int     `json:"version"`
	Services []State `json:"services"`
}

// NewFileStates returns a store at path; the file need not exist yet.
func NewFileStates(path string) (*FileStates, error) {
	if path == "" {
		return nil, errors.New("state file: path is required")
	}
	return &FileStates{path: path, states: map[string]State{}}, nil
}

// LoadStates reads the file; a missing file holds no state.
func (f *FileStates) LoadStates(ctx context.Context) ([]State, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	var doc fileStatesFormat
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("state file %s: %w", f.path, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("state file %s: version %d, want 1", f.path, doc.Version)
	}
	for _, st := range doc.Services {
		f.states[st.Service] = st
	}
	return doc.Services, nil
}

// SaveState replaces the service's state and writes the file.
func (f *FileStates) SaveState(ctx context.Context, st State) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states[st.Service] = st
	doc := fileStatesFormat{Version: 1}
	for _, name := range slices.Sorted(maps.Keys(f.states)) {
		doc.Services = append(doc.Services, f.states[name])
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return writeAtomic(f.path, b)
}

func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write state file: sync directory: %w", err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("write state file: sync directory: %w", err)
	}
	return nil
}
