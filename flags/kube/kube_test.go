package kube_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/flags/kube"
	"github.com/tailguard/tailguard/internal/kubetest"
)

const seed = `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "backoff-strategy": {
      "state": "ENABLED",
      "variants": {"exponential": "exponential", "decorrelated": "decorrelated"},
      "defaultVariant": "decorrelated"
    },
    "backoff-constants": {
      "state": "ENABLED",
      "variants": {"release-3.0": {"decorrelated": {"base": "300ms", "cap": "3s", "maxAttempts": 6}}},
      "defaultVariant": "release-3.0"
    }
  }
}`

// cluster starts an API server with the FeatureFlag CRD and a FeatureFlag
// holding seed in namespace "shop".
func cluster(t *testing.T, users ...string) (*kubetest.Cluster, *unstructured.Unstructured) {
	t.Helper()
	c := kubetest.Start(t, users...)
	c.InstallFeatureFlagCRD(t)
	ctx := context.Background()
	admin := c.Clients(t, kubetest.Admin, "shop")
	if err := c.Apply(ctx, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"), "", false); err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal([]byte(seed), &spec); err != nil {
		t.Fatal(err)
	}
	delete(spec, "$schema")
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "core.openfeature.dev/v1beta1", "kind": "FeatureFlag",
		"metadata": map[string]any{"name": "shop-flags", "namespace": "shop"},
		"spec":     map[string]any{"flagSpec": spec},
	}}
	created, err := admin.Dynamic.Resource(kube.FeatureFlags).Namespace("shop").Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c, created
}

func store(t *testing.T, c *kubetest.Cluster, user string) (*flags.Store, *kube.Backend) {
	t.Helper()
	cl := c.Clients(t, user, "shop")
	s, b, err := kube.NewStore(kube.Config{Dynamic: cl.Dynamic, Namespace: "shop", Name: "shop-flags"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

func setDefault(key, variant string) func(*flags.Document) error {
	return func(d *flags.Document) error {
		f, err := d.Flag(key)
		if err != nil {
			return err
		}
		return f.SetDefault(variant)
	}
}

func meta(key string) flags.ChangeMeta {
	return flags.ChangeMeta{Actor: flags.ActorController, Action: flags.ActionSet, Reason: "test", IdempotencyKey: key}
}

// TestStoreOnRealAPIServer: a change is journaled in the ConfigMap and
// lands in the FeatureFlag; its flagd content equals what the file backend
// writes for the same change; the object passes the operator CRD's schema
// (the API server validated it); a key is applied once.
func TestStoreOnRealAPIServer(t *testing.T) {
	c, _ := cluster(t)
	ctx := context.Background()
	s, b := store(t, c, kubetest.Admin)

	snap, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Update(ctx, snap.Revision, setDefault("backoff-strategy", "exponential"), meta("inc-1/shrink/1#a"))
	if err != nil {
		t.Fatal(err)
	}
	if e.RevisionAfter != 1 || e.Seq != 1 {
		t.Errorf("entry %+v", e)
	}
	if _, err := s.Update(ctx, flags.AnyRevision, setDefault("backoff-strategy", "decorrelated"), meta("inc-1/shrink/1#a")); !errors.Is(err, flags.ErrDuplicate) {
		t.Errorf("same key again: %v, want ErrDuplicate", err)
	}

	// The same change through the file backend.
	dir := t.TempDir()
	path := filepath.Join(dir, "flags.json")
	if err := os.WriteFile(path, []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, err := flags.NewStore(flags.StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Update(ctx, 0, setDefault("backoff-strategy", "exponential"), meta("inc-1/shrink/1#a")); err != nil {
		t.Fatal(err)
	}
	fileData, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kubeData, err := b.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var fromFile, fromKube map[string]any
	if err := json.Unmarshal(fileData, &fromFile); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(kubeData, &fromKube); err != nil {
		t.Fatal(err)
	}
	delete(fromFile, "$schema")
	if !reflect.DeepEqual(fromFile, fromKube) {
		t.Errorf("flagd content differs:\nfile: %s\nkube: %s", fileData, kubeData)
	}

	h, err := s.History(ctx, flags.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 1 || h[0].IdempotencyKey != "inc-1/shrink/1#a" || len(h[0].Changes) != 1 {
		t.Errorf("history %+v", h)
	}

	// The API server refuses what the CRD's schema forbids: the store's
	// own validation stops it first, the server would too.
	admin := c.Clients(t, kubetest.Admin, "shop")
	obj, err := admin.Dynamic.Resource(kube.FeatureFlags).Namespace("shop").Get(ctx, "shop-flags", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := obj.DeepCopy()
	if err := unstructured.SetNestedField(bad.Object, "SOMETIMES", "spec", "flagSpec", "flags", "backoff-strategy", "state"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Dynamic.Resource(kube.FeatureFlags).Namespace("shop").Update(ctx, bad, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("state SOMETIMES: %v, want the CRD schema to refuse it", err)
	}
}

// TestConcurrentOperatorEdit: an operator's update (kubectl edit) between
// tailguard's read and write makes the write fail with a conflict, the
// operator's change survives, and a re-read and re-plan then succeeds.
func TestConcurrentOperatorEdit(t *testing.T) {
	c, _ := cluster(t)
	ctx := context.Background()
	_, b := store(t, c, kubetest.Admin)
	admin := c.Clients(t, kubetest.Admin, "shop")

	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The operator disables the constants flag meanwhile.
	obj, err := admin.Dynamic.Resource(kube.FeatureFlags).Namespace("shop").Get(ctx, "shop-flags", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(obj.Object, "DISABLED", "spec", "flagSpec", "flags", "backoff-constants", "state"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Dynamic.Resource(kube.FeatureFlags).Namespace("shop").Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// tailguard writes what it planned on the old read.
	next := strings.Replace(string(tx.Data()), `"defaultVariant":"decorrelated"`, `"defaultVariant":"exponential"`, 1)
	err = tx.Commit(ctx, []byte(next), []flags.Entry{{Seq: 1, Time: time.Now(), Actor: "controller", Action: "set", Flags: []string{"backoff-strategy"}, RevisionAfter: 1}})
	var ce *kube.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, flags.ErrConflict) {
		t.Fatalf("write after a concurrent edit: %v, want a conflict", err)
	}
	got, err := b.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), `"DISABLED"`) || strings.Contains(string(got), `"defaultVariant":"exponential"`) {
		t.Fatalf("operator's change lost or stale write landed: %s", got)
	}

	// Through the store: re-read, re-plan, write; the operator's change is
	// still there, and the journaled entry that never landed reads as
	// aborted.
	s, _ := store(t, c, kubetest.Admin)
	snap, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, snap.Revision, setDefault("backoff-strategy", "exponential"), meta("k2")); err != nil {
		t.Fatal(err)
	}
	got, _ = b.Read(ctx)
	if !strings.Contains(string(got), `"DISABLED"`) || !strings.Contains(string(got), `"defaultVariant":"exponential"`) {
		t.Errorf("after re-plan: %s", got)
	}
	h, err := s.History(ctx, flags.HistoryFilter{IncludeAborted: true})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range h {
		a := e.Action
		if e.Aborted {
			a += "(aborted)"
		}
		actions = append(actions, a)
	}
	if got := strings.Join(actions, ","); got != "set(aborted),abort,set" {
		t.Errorf("journal %s, want set(aborted),abort,set", got)
	}
}

// TestConcurrentWriters: replicas racing on one FeatureFlag never lose an
// update: each write is planned on what the previous one left, and every
// applied change is journaled exactly once.
func TestConcurrentWriters(t *testing.T) {
	c, _ := cluster(t)
	ctx := context.Background()
	const writers, each = 3, 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for w := range writers {
		s, _ := store(t, c, kubetest.Admin)
		wg.Go(func() {
			for i := 0; i < each; {
				snap, err := s.Load(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				variant := []string{"exponential", "decorrelated"}[int(snap.Revision)%2]
				_, err = s.Update(ctx, snap.Revision, setDefault("backoff-strategy", variant), meta(""))
				switch {
				case errors.Is(err, flags.ErrConflict):
					continue // another writer won: re-read, re-plan
				case err != nil:
					t.Errorf("writer %d: %v", w, err)
					return
				}
				mu.Lock()
				applied++
				mu.Unlock()
				i++
			}
		})
	}
	wg.Wait()
	s, _ := store(t, c, kubetest.Admin)
	snap, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, flags.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if applied != writers*each || snap.Revision != int64(applied) || len(h) != applied {
		t.Errorf("applied %d, revision %d, journaled %d; want %d each", applied, snap.Revision, len(h), writers*each)
	}
	for i, e := range h {
		if e.RevisionBefore != int64(i) || e.RevisionAfter != int64(i+1) {
			t.Errorf("entry %d: revisions %d→%d", i, e.RevisionBefore, e.RevisionAfter)
		}
	}
}

// TestJournalIsBounded keeps the newest entries only.
func TestJournalIsBounded(t *testing.T) {
	c, _ := cluster(t)
	ctx := context.Background()
	cl := c.Clients(t, kubetest.Admin, "shop")
	s, _, err := kube.NewStore(kube.Config{Dynamic: cl.Dynamic, Namespace: "shop", Name: "shop-flags", MaxEntries: 4}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if _, err := s.Update(ctx, flags.AnyRevision, setDefault("backoff-strategy", []string{"exponential", "decorrelated"}[i%2]), meta("")); err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.History(ctx, flags.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 4 || h[0].Seq != 4 || h[3].Seq != 7 {
		t.Errorf("kept %d entries from seq %d", len(h), h[0].Seq)
	}
}
