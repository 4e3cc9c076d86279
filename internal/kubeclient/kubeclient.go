// Package kubeclient builds Kubernetes clients the way kubectl does: from
// an explicit kubeconfig file, else in-cluster (a pod's service account),
// else $KUBECONFIG or ~/.kube/config; and picks the namespace from the flag,
// the kubeconfig context or the pod's own namespace.
package kubeclient

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// serviceAccountNamespace is where a pod finds its own namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Clients are the clients tailguard uses: only the dynamic client, on
// unstructured objects. The typed clients would link every Kubernetes API
// type into the binary (80 MB instead of 30, twice the idle RSS) for the
// three resources tailguard touches.
type Clients struct {
	Config    *rest.Config
	Dynamic   dynamic.Interface
	Namespace string
}

// Load returns the REST configuration and the namespace. kubeconfig ""
// means in-cluster when running in a pod, else the default loading rules;
// namespace "" means the context's or the pod's namespace.
func Load(kubeconfig, namespace string) (*rest.Config, string, error) {
	if kubeconfig == "" {
		if rc, err := rest.InClusterConfig(); err == nil {
			if namespace == "" {
				b, err := os.ReadFile(serviceAccountNamespace)
				if err != nil {
					return nil, "", fmt.Errorf("in-cluster namespace: %w", err)
				}
				namespace = strings.TrimSpace(string(b))
			}
			return rc, namespace, nil
		} else if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, "", fmt.Errorf("in-cluster configuration: %w", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	if namespace == "" {
		ns, _, err := cc.Namespace()
		if err != nil {
			return nil, "", fmt.Errorf("kubeconfig namespace: %w", err)
		}
		namespace = ns
	}
	return rc, namespace, nil
}

// New builds the clients of rc for namespace.
func New(rc *rest.Config, namespace string) (*Clients, error) {
	if namespace == "" {
		return nil, errors.New("kubernetes: namespace is empty")
	}
	rc = rest.CopyConfig(rc)
	if rc.UserAgent == "" {
		rc.UserAgent = "tailguard"
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &Clients{Config: rc, Dynamic: dyn, Namespace: namespace}, nil
}
