package changes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// Manifest declares an upgrade: which components move to which versions,
// and when. It is read from a YAML or JSON file, and is also the body CI/CD
// posts to the sidecar to declare a change:
//
//	time: 2025-03-01T10:00:00Z
//	name: vendor-2025.1
//	actor: ci
//	components:
//	  - name: dten-gateway
//	    from: "2.3"
//	    to: "3.0"
//	    scope: {job: shop}
type Manifest struct {
	// Time is when the change was (or will be) applied. Required.
	Time time.Time `yaml:"time" json:"time"`
	// Name names the upgrade package or release.
	Name   string `yaml:"name,omitempty" json:"name,omitempty"`
	Actor  string `yaml:"actor,omitempty" json:"actor,omitempty"`
	Reason string `yaml:"reason,omitempty" json:"reason,omitempty"`
	// Kind is "declared" (default) or "config".
	Kind       Kind                `yaml:"kind,omitempty" json:"kind,omitempty"`
	Components []ManifestComponent `yaml:"components" json:"components"`
}

// ManifestComponent is one component of a declared change.
type ManifestComponent struct {
	Name  string            `yaml:"name" json:"name"`
	From  string            `yaml:"from,omitempty" json:"from,omitempty"`
	To    string            `yaml:"to" json:"to"`
	Scope map[string]string `yaml:"scope,omitempty" json:"scope,omitempty"`
}

// ParseManifest decodes a manifest (YAML or JSON) strictly: unknown fields
// are errors, and Validate must pass.
func ParseManifest(r io.Reader) (Manifest, error) {
	var m Manifest
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		if errors.Is(err, io.EOF) {
			return m, errors.New("manifest is empty")
		}
		return m, fmt.Errorf("decode manifest: %w", err)
	}
	return m, m.Validate()
}

// Validate checks the manifest, naming the offending field.
func (m Manifest) Validate() error {
	if m.Time.IsZero() {
		return errors.New("manifest: field time is required")
	}
	switch m.Kind {
	case "", KindDeclared, KindConfig:
	default:
		return fmt.Errorf("manifest: field kind %q must be %q or %q", m.Kind, KindDeclared, KindConfig)
	}
	if len(m.Components) == 0 {
		return errors.New("manifest: field components is empty")
	}
	seen := map[string]bool{}
	for i, c := range m.Components {
		if c.Name == "" {
			return fmt.Errorf("manifest: components[%d].name is empty", i)
		}
		if c.To == "" {
			return fmt.Errorf("manifest: components[%d].to is empty", i)
		}
		if seen[c.Name] {
			return fmt.Errorf("manifest: components[%d].name %q is listed twice", i, c.Name)
		}
		seen[c.Name] = true
		for k := range c.Scope {
			if k == "" {
				return fmt.Errorf("manifest: components[%d].scope has an empty label name", i)
			}
		}
	}
	return nil
}

// Events returns one event per component; source names where the manifest
// came from.
func (m Manifest) Events(source string) []Event {
	kind := m.Kind
	if kind == "" {
		kind = KindDeclared
	}
	reason := m.Reason
	if reason == "" {
		reason = m.Name
	}
	out := make([]Event, 0, len(m.Components))
	for _, c := range m.Components {
		out = append(out, Event{
			ID:        NewID(kind, c.Name, m.Time),
			Time:      m.Time,
			Kind:      kind,
			Component: c.Name,
			From:      c.From,
			To:        c.To,
			Scope:     maps.Clone(c.Scope),
			Actor:     m.Actor,
			Reason:    reason,
			Sources:   []string{source},
		})
	}
	return out
}

// ManifestFile is a Source reading a manifest file on every call, so a file
// dropped by a deploy job is picked up without a restart. A missing file has
// no changes.
type ManifestFile string

// Changes returns the manifest's events in [from, to].
func (p ManifestFile) Changes(ctx context.Context, from, to time.Time) ([]Event, error) {
	b, err := os.ReadFile(string(p))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	m, err := ParseManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", p, err)
	}
	return Static(m.Events("manifest:"+string(p))).Changes(ctx, from, to)
}

// Declared holds changes declared at run time, for example manifests
// POSTed by CI/CD to the sidecar. It keeps the newest max events. It is
// safe for concurrent use.
type Declared struct {
	mu     sync.Mutex
	max    int
	events []Event
}

// NewDeclared returns an empty store keeping at most max events (max < 1
// means 1000).
func NewDeclared(max int) *Declared {
	if max < 1 {
		max = 1000
	}
	return &Declared{max: max}
}

// Add validates m and records its events; source names the sender (e.g.
// "api:ci").
func (d *Declared) Add(m Manifest, source string) error {
	if err := m.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.events = append(d.events, m.Events(source)...)
	if over := len(d.events) - d.max; over > 0 {
		d.events = append([]Event(nil), d.events[over:]...)
	}
	return nil
}

// Changes returns the declared events in [from, to].
func (d *Declared) Changes(ctx context.Context, from, to time.Time) ([]Event, error) {
	d.mu.Lock()
	evs := Static(append([]Event(nil), d.events...))
	d.mu.Unlock()
	return evs.Changes(ctx, from, to)
}
