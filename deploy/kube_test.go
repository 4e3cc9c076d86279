package deploy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/tailguard/tailguard/internal/kubetest"
	"github.com/tailguard/tailguard/sidecar"
)

// clusterManifests are the cluster layout's files, kustomization.yaml
// aside.
func clusterManifests(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in kubernetes/ (%v)", err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		if filepath.Base(p) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

// TestClusterLayoutDryRun: every manifest of the cluster layout is
// accepted by a real API server (server-side dry run) with the OpenFeature
// Operator's CRDs installed. podmonitor.yaml needs the Prometheus
// Operator's CRD, which is not available here; it is left out.
func TestClusterLayoutDryRun(t *testing.T) {
	c := kubetest.Start(t)
	c.InstallFeatureFlagCRD(t)
	src := kubetest.FeatureFlagCRD()
	fs, err := os.ReadFile(filepath.Join(filepath.Dir(src), "core.openfeature.dev_featureflagsources.yaml"))
	if err != nil {
		t.Skipf("SKIP: the FeatureFlagSource CRD is not next to %s (copy core.openfeature.dev_featureflagsources.yaml from the OpenFeature Operator's config/crd/bases/): %v", src, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Apply(ctx, fs, "", false); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"), "", false); err != nil {
		t.Fatal(err)
	}
	kust, err := os.ReadFile(filepath.Join("kubernetes", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range clusterManifests(t) {
		if !strings.Contains(string(kust), "- "+name) {
			t.Errorf("%s is not listed in kustomization.yaml", name)
		}
		if name == "podmonitor.yaml" {
			t.Logf("%s: not dry-run (needs the Prometheus Operator's CRD)", name)
			continue
		}
		// The FeatureFlagSource CRD may take a moment to be served.
		var err error
		for range 20 {
			if err = c.Apply(ctx, b, "shop", true); err == nil || !strings.Contains(err.Error(), "no matches for kind") {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("%s: the API server refuses it: %v", name, err)
		}
	}
}

// TestClusterLayoutConfig: the sidecar's configuration of the cluster
// layout loads with its own loader, keeps the flags in the cluster and
// takes its service account's namespace and the pod's name.
func TestClusterLayoutConfig(t *testing.T) {
	b := clusterManifests(t)["configmap.yaml"]
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096).Decode(&cm); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for k, v := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("POD_NAME", "shop-7d9f-abcde")
	cfg, err := sidecar.LoadConfig(filepath.Join(dir, "tailguard.yml"))
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.Kubernetes
	if k == nil || k.FeatureFlag != "shop-flags" || k.Identity != "shop-7d9f-abcde" || cfg.FlagFile != "" || cfg.StateFile != "" {
		t.Errorf("kubernetes %+v, flag_file %q, state_file %q", k, cfg.FlagFile, cfg.StateFile)
	}
	dep := string(clusterManifests(t)["deployment.yaml"])
	for _, want := range []string{"serviceAccountName: shop-tailguard", "fieldPath: metadata.name", "replicas: 2", "openfeature.dev/featureflagsource: shop-flag-source"} {
		if !strings.Contains(dep, want) {
			t.Errorf("deployment.yaml lacks %q", want)
		}
	}
}
