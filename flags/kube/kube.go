// Package kube keeps a flag set in a Kubernetes cluster, so that every
// replica of tailguard, tailguardctl and the services' flagd read and write
// one state.
//
// The flags live in the OpenFeature Operator's FeatureFlag resource
// (core.openfeature.dev/v1beta1): spec.flagSpec holds them in flagd's
// format, which flagd's kubernetes sync and the operator's injected flagd
// serve. The journal (who, why, before, after, the controller's record)
// lives in a ConfigMap beside it, "<name>-journal", owned by the
// FeatureFlag, bounded to the newest MaxEntries entries.
//
// A change is planned by flags.Store like any other: against the revision
// the caller read, with idempotency keys and validation. The backend writes
// it journal first, then the FeatureFlag, each with the resourceVersion it
// read (compare-and-swap): a concurrent writer — another replica, an
// operator's kubectl edit — makes the write fail with an error wrapping
// flags.ErrConflict, never a blind retry; the caller re-reads and re-plans.
// A journaled change whose FeatureFlag write failed is found unapplied by
// the next reader, as with the file backend.
package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/tailguard/tailguard/flags"
)

// FeatureFlags is the OpenFeature Operator's FeatureFlag resource.
var FeatureFlags = schema.GroupVersionResource{Group: "core.openfeature.dev", Version: "v1beta1", Resource: "featureflags"}

// ConfigMaps are read and written through the dynamic client too: the
// typed clients would link every Kubernetes API type into the sidecar.
var ConfigMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// Defaults.
const (
	DefaultMaxEntries = 500
	// maxJournalBytes keeps the journal ConfigMap well below the API
	// server's 1 MiB object limit.
	maxJournalBytes = 768 << 10
	journalKey      = "journal.jsonl"
)

// Config says where the flag set lives.
type Config struct {
	// Dynamic reads and writes the FeatureFlag and the journal ConfigMap.
	Dynamic dynamic.Interface
	// Namespace and Name of the FeatureFlag. Required.
	Namespace, Name string
	// MaxEntries bounds the journal (oldest entries are dropped). Default
	// DefaultMaxEntries.
	MaxEntries int
	// FieldManager names tailguard in managedFields. Default "tailguard".
	FieldManager string
	// Observe, if set, is told the outcome of every API call (nil error:
	// the API server answered), for readiness.
	Observe func(error)
}

// Backend is a flags.Backend over a FeatureFlag and its journal ConfigMap.
type Backend struct {
	cfg Config
}

// New validates cfg and returns the backend.
func New(cfg Config) (*Backend, error) {
	switch {
	case cfg.Dynamic == nil:
		return nil, errors.New("kube flag store: a dynamic client is required")
	case cfg.Namespace == "":
		return nil, errors.New("kube flag store: field namespace is empty")
	case cfg.Name == "":
		return nil, errors.New("kube flag store: field feature_flag (the FeatureFlag's name) is empty")
	case cfg.MaxEntries < 0:
		return nil, fmt.Errorf("kube flag store: field max_journal_entries (%d) must not be negative", cfg.MaxEntries)
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.FieldManager == "" {
		cfg.FieldManager = "tailguard"
	}
	return &Backend{cfg: cfg}, nil
}

// NewStore returns a flags.Store over the backend.
func NewStore(cfg Config, v *flags.Validator, now func() time.Time) (*flags.Store, *Backend, error) {
	b, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	s, err := flags.NewBackendStore(b, v, now)
	if err != nil {
		return nil, nil, err
	}
	return s, b, nil
}

// Name names the flag set in messages.
func (b *Backend) Name() string {
	return fmt.Sprintf("FeatureFlag %s/%s", b.cfg.Namespace, b.cfg.Name)
}

// JournalName is the name of the journal ConfigMap.
func (b *Backend) JournalName() string { return b.cfg.Name + "-journal" }

func (b *Backend) flagsClient() dynamic.ResourceInterface {
	return b.cfg.Dynamic.Resource(FeatureFlags).Namespace(b.cfg.Namespace)
}

func (b *Backend) journalClient() dynamic.ResourceInterface {
	return b.cfg.Dynamic.Resource(ConfigMaps).Namespace(b.cfg.Namespace)
}

// Read returns spec.flagSpec as flagd JSON.
func (b *Backend) Read(ctx context.Context) ([]byte, error) {
	obj, err := b.flagsClient().Get(ctx, b.cfg.Name, metav1.GetOptions{})
	b.observe(err)
	if err != nil {
		return nil, b.apiErr("read", err)
	}
	return FlagSpec(obj)
}

// FlagSpec returns a FeatureFlag's spec.flagSpec as flagd JSON.
func FlagSpec(obj *unstructured.Unstructured) ([]byte, error) {
	spec, ok, err := unstructured.NestedMap(obj.Object, "spec", "flagSpec")
	if err != nil || !ok {
		return nil, fmt.Errorf("FeatureFlag %s/%s: no spec.flagSpec", obj.GetNamespace(), obj.GetName())
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("FeatureFlag %s/%s: spec.flagSpec: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	return data, nil
}

// Entries reads the journal ConfigMap; a missing one is an empty journal.
func (b *Backend) Entries(ctx context.Context) ([]flags.Entry, error) {
	cm, err := b.journalClient().Get(ctx, b.JournalName(), metav1.GetOptions{})
	b.observe(err)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, b.apiErr("read the journal of", err)
	}
	return parse(cm)
}

func parse(cm *unstructured.Unstructured) ([]flags.Entry, error) {
	data, _, err := unstructured.NestedString(cm.Object, "data", journalKey)
	if err != nil {
		return nil, fmt.Errorf("journal ConfigMap %s/%s: data.%s: %w", cm.GetNamespace(), cm.GetName(), journalKey, err)
	}
	entries, err := flags.ParseJournal(bytes.NewReader([]byte(data)))
	if err != nil {
		return nil, fmt.Errorf("journal ConfigMap %s/%s: %w", cm.GetNamespace(), cm.GetName(), err)
	}
	return entries, nil
}

// Begin reads the FeatureFlag and the journal and keeps their
// resourceVersions for the compare-and-swap.
func (b *Backend) Begin(ctx context.Context) (flags.Tx, error) {
	obj, err := b.flagsClient().Get(ctx, b.cfg.Name, metav1.GetOptions{})
	b.observe(err)
	if err != nil {
		return nil, b.apiErr("read", err)
	}
	data, err := FlagSpec(obj)
	if err != nil {
		return nil, err
	}
	tx := &tx{b: b, obj: obj, data: data}
	cm, err := b.journalClient().Get(ctx, b.JournalName(), metav1.GetOptions{})
	b.observe(err)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, b.apiErr("read the journal of", err)
	default:
		if tx.entries, err = parse(cm); err != nil {
			return nil, err
		}
		tx.cm = cm
	}
	return tx, nil
}

type tx struct {
	b       *Backend
	obj     *unstructured.Unstructured
	cm      *unstructured.Unstructured // nil: no journal yet
	data    []byte
	entries []flags.Entry
}

func (t *tx) Data() []byte           { return t.data }
func (t *tx) Entries() []flags.Entry { return t.entries }
func (t *tx) Close()                 {}

// Commit journals the entries, then writes the FeatureFlag, each against
// the resourceVersion Begin read.
func (t *tx) Commit(ctx context.Context, data []byte, entries []flags.Entry) error {
	b := t.b
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("%s: encode flags: %w", b.Name(), err)
	}
	// The CRD has no place for the JSON schema reference of a flag file.
	delete(spec, "$schema")

	all := append(append([]flags.Entry(nil), t.entries...), entries...)
	all = trim(all, b.cfg.MaxEntries)
	journal, err := flags.AppendJournal(nil, all...)
	if err != nil {
		return err
	}
	for len(journal) > maxJournalBytes && len(all) > len(entries) {
		all = all[1:]
		if journal, err = flags.AppendJournal(nil, all...); err != nil {
			return err
		}
	}
	cms := b.journalClient()
	opts := metav1.UpdateOptions{FieldManager: b.cfg.FieldManager}
	if t.cm == nil {
		cm := b.newJournal(t.obj, journalKey, string(journal))
		_, err := cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: b.cfg.FieldManager})
		b.observe(err)
		if err != nil {
			if apierrors.IsAlreadyExists(err) {
				return conflict(b, "journal", err)
			}
			return b.apiErr("journal a change to", err)
		}
	} else {
		cm := t.cm.DeepCopy()
		if err := unstructured.SetNestedField(cm.Object, string(journal), "data", journalKey); err != nil {
			return fmt.Errorf("journal ConfigMap: %w", err)
		}
		_, err := cms.Update(ctx, cm, opts)
		b.observe(err)
		if err != nil {
			if apierrors.IsConflict(err) {
				return conflict(b, "journal", err)
			}
			return b.apiErr("journal a change to", err)
		}
	}

	obj := t.obj.DeepCopy()
	if err := unstructured.SetNestedField(obj.Object, spec, "spec", "flagSpec"); err != nil {
		return fmt.Errorf("%s: %w", b.Name(), err)
	}
	_, err = b.flagsClient().Update(ctx, obj, opts)
	b.observe(err)
	if err != nil {
		if apierrors.IsConflict(err) {
			// Journaled, not applied: the next reader finds the entry's
			// revision unreached and records its abort.
			return conflict(b, "FeatureFlag", err)
		}
		return b.apiErr("write", err)
	}
	return nil
}

// newJournal is the journal ConfigMap of the FeatureFlag ff, owned by it
// (deleted with it), holding value under key.
func (b *Backend) newJournal(ff *unstructured.Unstructured, key, value string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{
			"name": b.JournalName(), "namespace": b.cfg.Namespace,
			"labels": map[string]any{"app.kubernetes.io/managed-by": "tailguard", "tailguard.dev/journal-of": b.cfg.Name},
			"ownerReferences": []any{map[string]any{
				"apiVersion": FeatureFlags.GroupVersion().String(), "kind": "FeatureFlag", "name": ff.GetName(), "uid": string(ff.GetUID()),
			}},
		},
		"data": map[string]any{key: value},
	}}
}

// trim keeps the newest max entries. An idempotency key older than that is
// forgotten; the controller's keys are per incident and step, so only a
// change replayed after hundreds of others could apply twice.
func trim(entries []flags.Entry, max int) []flags.Entry {
	if len(entries) <= max {
		return entries
	}
	return entries[len(entries)-max:]
}

// ConflictError reports an object changed by another writer between read
// and write; it wraps flags.ErrConflict.
type ConflictError struct {
	Object string
	Err    error
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s changed since it was read (another replica or an operator wrote it): re-read and plan again: %v", e.Object, e.Err)
}

// Is makes errors.Is(err, flags.ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == flags.ErrConflict }

func (e *ConflictError) Unwrap() error { return e.Err }

func conflict(b *Backend, what string, err error) error {
	obj := b.Name()
	if what == "journal" {
		obj = fmt.Sprintf("journal ConfigMap %s/%s", b.cfg.Namespace, b.JournalName())
	}
	return &ConflictError{Object: obj, Err: err}
}

// observe reports an API call's outcome: answered (nil, or an error the
// server itself returned) or not.
func (b *Backend) observe(err error) {
	if b.cfg.Observe == nil {
		return
	}
	var status apierrors.APIStatus
	if err != nil && errors.As(err, &status) && !apierrors.IsServerTimeout(err) && !apierrors.IsServiceUnavailable(err) && !apierrors.IsTimeout(err) {
		err = nil // the server answered
	}
	b.cfg.Observe(err)
}

// apiErr names the object and, for a refusal by RBAC, what is missing.
func (b *Backend) apiErr(verb string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%s %s: forbidden: the service account needs get and update on featureflags.core.openfeature.dev and get, create and update on configmaps in namespace %s (deploy/kubernetes/rbac.yaml): %w", verb, b.Name(), b.cfg.Namespace, err)
	}
	return fmt.Errorf("%s %s: %w", verb, b.Name(), err)
}

// Approval is an operator's approval of an incident's pending plan,
// recorded in the cluster so that any replica can take it and the leader,
// which alone has the plan, applies it.
type Approval struct {
	Incident string    `json:"incident"`
	Plan     string    `json:"plan,omitempty"`
	Approver string    `json:"approver"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
}

const (
	approvalsKey = "approvals.jsonl"
	maxApprovals = 100
)

// RecordApproval appends a to the approvals kept in the journal ConfigMap
// (the newest maxApprovals). An append is safe to retry after a conflict:
// it re-reads and appends again.
func (b *Backend) RecordApproval(ctx context.Context, a Approval) error {
	line, err := json.Marshal(a)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		cm, err := b.journalClient().Get(ctx, b.JournalName(), metav1.GetOptions{})
		b.observe(err)
		if apierrors.IsNotFound(err) {
			ff, ferr := b.flagsClient().Get(ctx, b.cfg.Name, metav1.GetOptions{})
			b.observe(ferr)
			if ferr != nil {
				return b.apiErr("record an approval for", ferr)
			}
			cm = b.newJournal(ff, approvalsKey, string(line)+"\n")
			_, err = b.journalClient().Create(ctx, cm, metav1.CreateOptions{FieldManager: b.cfg.FieldManager})
		} else if err == nil {
			old, _, _ := unstructured.NestedString(cm.Object, "data", approvalsKey)
			lines := append(strings.Split(strings.TrimSpace(old), "\n"), string(line))
			if lines[0] == "" {
				lines = lines[1:]
			}
			lines = lines[max(0, len(lines)-maxApprovals):]
			if err := unstructured.SetNestedField(cm.Object, strings.Join(lines, "\n")+"\n", "data", approvalsKey); err != nil {
				return err
			}
			_, err = b.journalClient().Update(ctx, cm, metav1.UpdateOptions{FieldManager: b.cfg.FieldManager})
		}
		b.observe(err)
		switch {
		case err == nil:
			return nil
		case (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) && attempt < 5:
			continue
		default:
			return b.apiErr("record an approval for", err)
		}
	}
}

// Approvals returns the recorded approvals, oldest first.
func (b *Backend) Approvals(ctx context.Context) ([]Approval, error) {
	cm, err := b.journalClient().Get(ctx, b.JournalName(), metav1.GetOptions{})
	b.observe(err)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, b.apiErr("read the approvals of", err)
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", approvalsKey)
	var out []Approval
	for i, line := range strings.Split(data, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var a Approval
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			return nil, fmt.Errorf("journal ConfigMap %s/%s: %s line %d: %w", b.cfg.Namespace, b.JournalName(), approvalsKey, i+1, err)
		}
		out = append(out, a)
	}
	return out, nil
}
