package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tailguard/tailguard/internal/kubetest"
)

// TestKubernetesFlags runs the flag verbs against a FeatureFlag in a real
// API server, through a kubeconfig, as the shipped service account would
// not (an operator's own user): the same verbs and journal as on files.
func TestKubernetesFlags(t *testing.T) {
	c := kubetest.Start(t, "alice")
	c.InstallFeatureFlagCRD(t)
	ctx := context.Background()
	if err := c.Apply(ctx, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"), "", false); err != nil {
		t.Fatal(err)
	}
	ff, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "featureflag.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, ff, "shop", false); err != nil {
		t.Fatal(err)
	}
	kubeconfig := c.Kubeconfig(t, kubetest.Admin, "shop")
	ctl := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"--feature-flag", "shop-flags", "--kubeconfig", kubeconfig, "--actor", "operator:alice"}, args...), strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, errs := ctl("flags", "rollout", "backoff-strategy", "--variant", "decorrelated", "--percent", "25", "--rest", "exponential", "--reason", "canary while payments is slow"); code != 0 {
		t.Fatalf("rollout: %d %s %s", code, out, errs)
	}
	if code, out, errs := ctl("flags", "set", "backoff-strategy", "exponential", "--reason", "roll back by hand"); code != 0 {
		t.Fatalf("set: %d %s %s", code, out, errs)
	}
	code, out, errs := ctl("-o", "json", "flags", "history")
	if code != 0 {
		t.Fatalf("history: %d %s", code, errs)
	}
	var hist struct {
		Entries []struct {
			Seq    int64  `json:"seq"`
			Actor  string `json:"actor"`
			Action string `json:"action"`
			Reason string `json:"reason"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &hist); err != nil {
		t.Fatalf("history JSON: %v\n%s", err, out)
	}
	h := hist.Entries
	if len(h) != 2 || h[0].Action != "rollout" || h[1].Action != "set" || h[1].Actor != "operator:alice" {
		t.Errorf("history %+v", h)
	}
	if code, out, errs := ctl("flags", "rollback", "--to", "0", "--reason", "undo both"); code != 0 {
		t.Fatalf("rollback: %d %s %s", code, out, errs)
	}
	code, out, _ = ctl("flags", "get", "backoff-strategy")
	if code != 0 || !strings.Contains(out, "decorrelated") {
		t.Errorf("after the rollback: %d %s", code, out)
	}
	// Without permissions: a clear error and a non-zero exit.
	var errb bytes.Buffer
	code = run([]string{"--feature-flag", "shop-flags", "--kubeconfig", c.Kubeconfig(t, "alice", "shop"), "flags", "list"}, strings.NewReader(""), &bytes.Buffer{}, &errb)
	if code == 0 || !strings.Contains(errb.String(), "forbidden") {
		t.Errorf("alice without a role: exit %d, %s", code, errb.String())
	}
}
