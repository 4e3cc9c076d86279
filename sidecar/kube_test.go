package sidecar

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/flags/kube"
	"github.com/tailguard/tailguard/internal/kubeclient"
	"github.com/tailguard/tailguard/internal/kubetest"
	"github.com/tailguard/tailguard/promembed"
)

// serviceAccount is the user the shipped RoleBinding (deploy/kubernetes/
// rbac.yaml) binds: the pod's service account.
const serviceAccount = "system:serviceaccount:shop:shop-tailguard"

// kubeCluster starts an API server with the FeatureFlag CRD, the shop
// namespace, the shipped RBAC and FeatureFlag.
func kubeCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	c := kubetest.Start(t, serviceAccount)
	c.InstallFeatureFlagCRD(t)
	ctx := context.Background()
	if err := c.Apply(ctx, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"), "", false); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"rbac.yaml", "featureflag.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "deploy", "kubernetes", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(ctx, b, "shop", false); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return c
}

// newKubeDaemon runs a daemon on testdata with the flags in the cluster,
// authenticated as user.
func newKubeDaemon(t *testing.T, c *kubetest.Cluster, user, identity string) *Daemon {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"tailguard.yml", "policy.yml"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "tailguard.yml" {
			b = []byte(strings.Replace(string(b), "flag_file: flags.json", `kubernetes:
  feature_flag: shop-flags
  namespace: shop
  identity: `+identity+`
  lease_duration: 3s
  renew_deadline: 2s
  retry_period: 500ms`, 1))
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := promembed.Open(promembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	reg := prometheus.NewRegistry()
	d, err := New(Options{ConfigFile: filepath.Join(dir, "tailguard.yml"), Registerer: reg, Gatherer: reg, Querier: db,
		Kubernetes: func(k *KubernetesConfig) (*kubeclient.Clients, error) {
			return kubeclient.New(c.Config(user), k.Namespace)
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

func page(t *testing.T, d *Daemon) string {
	t.Helper()
	var b strings.Builder
	if err := d.renderer.Render(&b, d.statusView(context.Background())); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKubernetesReplicasAndOutage: two replicas with the shipped Role
// only: one leads, the other's status page and findings name it; the
// permissions check finds nothing missing; with the API server stopped for
// a minute, readiness reports it (degraded: the pod stays in rotation),
// cycles end early, no replica leads and nothing is written; once it is
// back, cycles and leadership return.
func TestKubernetesReplicasAndOutage(t *testing.T) {
	c := kubeCluster(t)
	a := newKubeDaemon(t, c, serviceAccount, "replica-a")
	b := newKubeDaemon(t, c, serviceAccount, "replica-b")
	ctx := context.Background()
	leads := func(d *Daemon) bool { return d.rt.Load().electors[0].Leading() }
	waitFor(t, 10*time.Second, "a leader", func() bool { return leads(a) || leads(b) })
	leaderD, standby := a, b
	if leads(b) {
		leaderD, standby = b, a
	}
	leaderID := leaderD.rt.Load().electors[0].Status().Identity
	for _, d := range []*Daemon{a, b} {
		if p := d.rt.Load().access.problem(); p != "" {
			t.Errorf("with the shipped Role: %s", p)
		}
		res, err := d.Evaluate(ctx, "shop", "manual")
		if err != nil {
			t.Fatalf("cycle: %v", err)
		}
		if d == standby && !strings.HasPrefix(res.Decision.Reason, "standby: "+leaderID+" leads shop") {
			t.Errorf("standby decision: %q", res.Decision.Reason)
		}
		if !d.Ready() {
			t.Errorf("not ready: %s", d.notReady())
		}
	}
	if body := page(t, standby); !strings.Contains(body, "<code>"+leaderID+"</code>") || !strings.Contains(body, "standby: detects and serves") {
		t.Errorf("standby's status page does not show the leader %s", leaderID)
	}
	if body := page(t, leaderD); !strings.Contains(body, "leads: decides and writes") {
		t.Error("leader's status page does not say it leads")
	}

	// With the shipped Role only, a write lands: journal ConfigMap created,
	// FeatureFlag updated, read back by both replicas.
	cl := c.Clients(t, serviceAccount, "shop")
	st, _, err := kube.NewStore(kube.Config{Dynamic: cl.Dynamic, Namespace: "shop", Name: "shop-flags"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(ctx, flags.AnyRevision, func(doc *flags.Document) error {
		f, err := doc.Flag("backoff-strategy")
		if err != nil {
			return err
		}
		return f.SetDefault("exponential")
	}, flags.ChangeMeta{Actor: flags.ActorController, Action: flags.ActionSet, Reason: "write with the shipped Role"}); err != nil {
		t.Fatalf("write as the service account with the shipped Role: %v", err)
	}
	for _, d := range []*Daemon{a, b} {
		snap, err := d.rt.Load().store.Load(ctx)
		if err != nil || snap.Doc.Flags["backoff-strategy"] == nil {
			t.Fatalf("read back: %v", err)
		}
		if v, _ := snap.Doc.Flags["backoff-strategy"].Default(); v != "exponential" {
			t.Errorf("replica reads default %q after the write", v)
		}
	}

	// An approval taken by the standby is recorded in the cluster for the
	// leader.
	srv := httptest.NewServer(standby.Handler())
	defer srv.Close()
	if code, body := do(t, "POST", srv.URL+"/api/v1/incidents/inc-1/approve", `{"approver":"operator:alice","reason":"checked"}`); code != 202 || !strings.Contains(body, "leader applies it") {
		t.Errorf("approve on the standby: %d %s", code, body)
	}
	as, err := leaderD.rt.Load().kubeBackend.Approvals(ctx)
	if err != nil || len(as) != 1 || as[0].Incident != "inc-1" || as[0].Approver != "operator:alice" {
		t.Errorf("approvals in the cluster: %+v, %v", as, err)
	}

	before := featureFlagVersion(t, c)
	c.StopAPIServer(t)
	outage := time.Now()
	for time.Since(outage) < time.Minute {
		for _, d := range []*Daemon{a, b} {
			if _, err := d.Evaluate(ctx, "shop", "manual"); err == nil {
				t.Fatal("a cycle succeeded without the API server")
			}
		}
		time.Sleep(5 * time.Second)
	}
	for _, d := range []*Daemon{a, b} {
		// Ready, degraded: the pod stays in rotation, the probe's body and
		// tailguard_kubernetes_up report the outage.
		rsrv := httptest.NewServer(d.Handler())
		code, body := do(t, "GET", rsrv.URL+"/-/ready", "")
		rsrv.Close()
		if code != 200 || !strings.Contains(body, "degraded: the Kubernetes API server does not answer") {
			t.Errorf("readiness during the outage: %d %q", code, body)
		}
		if !strings.Contains(page(t, d), "The Kubernetes API server is not answering") {
			t.Error("status page during the outage lacks the banner")
		}
		if leads(d) {
			t.Error("a replica still leads after a minute without the API server")
		}
	}
	c.StartAPIServer(t)
	waitFor(t, 20*time.Second, "recovery", func() bool {
		for _, d := range []*Daemon{a, b} {
			if _, err := d.Evaluate(ctx, "shop", "manual"); err != nil || !d.Ready() {
				return false
			}
		}
		return leads(a) || leads(b)
	})
	if after := featureFlagVersion(t, c); after != before {
		t.Errorf("the FeatureFlag changed across the outage: resourceVersion %s → %s", before, after)
	}
}

func featureFlagVersion(t *testing.T, c *kubetest.Cluster) string {
	t.Helper()
	obj, err := c.Clients(t, kubetest.Admin, "shop").Dynamic.Resource(kube.FeatureFlags).Namespace("shop").Get(context.Background(), "shop-flags", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return obj.GetResourceVersion()
}

// TestKubernetesWithoutUpdate: the Role without update on featureflags:
// the replica says loudly what is missing (log, status page, every
// cycle's error) and takes no action; the store's own write fails naming
// the permission.
func TestKubernetesWithoutUpdate(t *testing.T) {
	c := kubeCluster(t)
	ctx := context.Background()
	admin := c.Clients(t, kubetest.Admin, "shop")
	roles := admin.Dynamic.Resource(rolesGVR).Namespace("shop")
	role, err := roles.Get(ctx, "shop-tailguard", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	rules[0].(map[string]any)["verbs"] = []any{"get", "list", "watch"}
	if err := unstructured.SetNestedSlice(role.Object, rules, "rules"); err != nil {
		t.Fatal(err)
	}
	if _, err := roles.Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	d := newKubeDaemon(t, c, serviceAccount, "replica-a")
	want := "may not update featureflags.core.openfeature.dev in namespace shop"
	if p := d.rt.Load().access.problem(); !strings.Contains(p, want) {
		t.Fatalf("access problem %q, want %q", p, want)
	}
	waitFor(t, 10*time.Second, "leadership", func() bool { return d.rt.Load().electors[0].Leading() })
	res, err := d.Evaluate(ctx, "shop", "manual")
	if err == nil || !strings.Contains(res.Error, want) {
		t.Errorf("cycle without update: err %v, result error %q", err, res.Error)
	}
	if body := page(t, d); !strings.Contains(body, "Cannot act: the service account "+want) {
		t.Error("status page does not say why no action is taken")
	}

	cl := c.Clients(t, serviceAccount, "shop")
	st, _, err := kube.NewStore(kube.Config{Dynamic: cl.Dynamic, Namespace: "shop", Name: "shop-flags"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Update(ctx, flags.AnyRevision, func(doc *flags.Document) error {
		f, err := doc.Flag("backoff-strategy")
		if err != nil {
			return err
		}
		return f.SetDefault("exponential")
	}, flags.ChangeMeta{Actor: flags.ActorController, Action: flags.ActionSet, Reason: "test"})
	if err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), "rbac.yaml") {
		t.Errorf("write without update: %v", err)
	}
	var got map[string]any
	data, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(data.Doc.Flags["backoff-strategy"])
	_ = json.Unmarshal(raw, &got)
	if got["defaultVariant"] != "decorrelated" {
		t.Errorf("the flag changed without permission: %v", got)
	}
}

var rolesGVR = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"}
