package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/flags/kube"
	"github.com/tailguard/tailguard/loop"
)

// selfSubjectAccessReviews asks the API server what this replica may do.
var selfSubjectAccessReviews = schema.GroupVersionResource{Group: "authorization.k8s.io", Version: "v1", Resource: "selfsubjectaccessreviews"}

// neededAccess is what a replica does in its namespace: read and write the
// FeatureFlag, its journal ConfigMap and the leases. The Role in
// deploy/kubernetes/rbac.yaml grants exactly this.
var neededAccess = []struct {
	group, resource string
	verbs           []string
}{
	{"core.openfeature.dev", "featureflags", []string{"get", "list", "watch", "update"}},
	{"", "configmaps", []string{"get", "create", "update"}},
	{"coordination.k8s.io", "leases", []string{"get", "create", "update"}},
}

// missingAccess returns what the replica may not do (as "update
// featureflags.core.openfeature.dev"), asking the API server with
// SelfSubjectAccessReviews; an error when it cannot ask.
func missingAccess(ctx context.Context, dyn dynamic.Interface, namespace string) ([]string, error) {
	var missing []string
	for _, a := range neededAccess {
		for _, verb := range a.verbs {
			review := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
				"spec": map[string]any{"resourceAttributes": map[string]any{
					"namespace": namespace, "verb": verb, "group": a.group, "resource": a.resource,
				}},
			}}
			out, err := dyn.Resource(selfSubjectAccessReviews).Create(ctx, review, metav1.CreateOptions{})
			if err != nil {
				return nil, fmt.Errorf("access review: %w", err)
			}
			if allowed, _, _ := unstructured.NestedBool(out.Object, "status", "allowed"); !allowed {
				res := a.resource
				if a.group != "" {
					res += "." + a.group
				}
				missing = append(missing, verb+" "+res)
			}
		}
	}
	return missing, nil
}

// accessCheck keeps the answer of missingAccess fresh (at most a minute
// old) for the controller's gate and the status page.
type accessCheck struct {
	dyn       dynamic.Interface
	namespace string
	log       *slog.Logger

	mu      sync.Mutex
	at      time.Time
	missing []string
	err     error
}

func (a *accessCheck) refresh(ctx context.Context) {
	a.mu.Lock()
	fresh := !a.at.IsZero() && time.Since(a.at) < time.Minute && a.err == nil
	a.mu.Unlock()
	if fresh {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	missing, err := missingAccess(ctx, a.dyn, a.namespace)
	a.mu.Lock()
	changed := !slices.Equal(missing, a.missing)
	a.at, a.missing, a.err = time.Now(), missing, err
	a.mu.Unlock()
	if err == nil && len(missing) > 0 && changed {
		a.log.Error("the service account lacks permissions: tailguard takes no action until it has them (deploy/kubernetes/rbac.yaml)",
			"namespace", a.namespace, "missing", strings.Join(missing, ", "))
	}
}

// problem says why no action can be taken, or "".
func (a *accessCheck) problem() string {
	if a == nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.missing) == 0 {
		return ""
	}
	return fmt.Sprintf("the service account may not %s in namespace %s (grant the Role of deploy/kubernetes/rbac.yaml): tailguard takes no action", strings.Join(a.missing, ", "), a.namespace)
}

// accessGate lets the leader's controller step only with the permissions
// to act on what it decides, and first applies the approvals recorded in
// the cluster (by any replica) to its pending plans.
type accessGate struct {
	inner     loop.Stepper
	a         *accessCheck
	ctrl      *controller.Controller
	approvals func(context.Context) ([]kube.Approval, error)
	log       *slog.Logger
}

func (g accessGate) Step(ctx context.Context, obs controller.Observation, now time.Time) (controller.Decision, error) {
	g.a.refresh(ctx)
	if p := g.a.problem(); p != "" {
		return controller.Decision{}, errors.New("cannot act: " + p)
	}
	if g.approvals != nil {
		as, err := g.approvals(ctx)
		if err != nil {
			return controller.Decision{}, fmt.Errorf("read approvals: %w", err)
		}
		for _, applied := range applyApprovals(ctx, g.ctrl, obs.Service, as, now, g.log) {
			g.log.Info("approval recorded in the cluster applied", "plan", applied)
		}
	}
	return g.inner.Step(ctx, obs, now)
}

// approvalTTL bounds how long a recorded approval waits for its plan.
const approvalTTL = time.Hour

// applyApprovals approves the service's pending plans that a recorded
// approval names: same incident, the plan named or any, made before the
// approval (an approval never covers a plan made after it) and less than
// approvalTTL ago. It returns the plans approved.
func applyApprovals(ctx context.Context, ctrl *controller.Controller, service string, as []kube.Approval, now time.Time, log *slog.Logger) []string {
	var applied []string
	for _, p := range ctrl.Plans() {
		if p.Service != service || p.Status != controller.PlanPending {
			continue
		}
		for _, a := range as {
			if a.Incident != p.IncidentID || (a.Plan != "" && a.Plan != p.ID) || p.CreatedAt.After(a.At) || now.Sub(a.At) > approvalTTL {
				continue
			}
			if _, err := ctrl.Approve(ctx, p.ID, a.Approver, now); err != nil {
				log.Warn("recorded approval not applied", "plan", p.ID, "approver", a.Approver, "err", err)
				break
			}
			applied = append(applied, p.ID)
			break
		}
	}
	return applied
}
