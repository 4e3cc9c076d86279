// Package kubetest runs a real kube-apiserver backed by a real etcd on
// loopback for tests: no mock of the API server, no fake clientset. The
// binaries come from hack/build-kube (built once into the cache) or from
// $KUBE_ASSETS / $KUBEBUILDER_ASSETS; without them, Start skips the test
// with a SKIP line saying how to get them.
//
// The API server authenticates static tokens (one per user the test asks
// for) and authorizes with RBAC; "admin" is in system:masters.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/tailguard/tailguard/internal/kubeclient"
)

// Admin is the user in system:masters.
const Admin = "admin"

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	URL    string
	dir    string
	assets string
	port   int
	etcd   *exec.Cmd
	api    *exec.Cmd
	exited chan struct{} // closed when api exits
	tokens map[string]string
	mu     sync.Mutex
	log    *os.File
}

// Assets returns the directory holding etcd and kube-apiserver, or "".
func Assets() string {
	for _, env := range []string{"KUBE_ASSETS", "KUBEBUILDER_ASSETS"} {
		if d := os.Getenv(env); d != "" && executable(filepath.Join(d, "kube-apiserver")) && executable(filepath.Join(d, "etcd")) {
			return d
		}
	}
	cache := os.Getenv("TAILGUARD_CACHE")
	if cache == "" {
		if c, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(c, "tailguard")
		}
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "bin", "kube-*-etcd-*"))
	for i := len(matches) - 1; i >= 0; i-- {
		if executable(filepath.Join(matches[i], "kube-apiserver")) && executable(filepath.Join(matches[i], "etcd")) {
			return matches[i]
		}
	}
	return ""
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Start runs etcd and kube-apiserver until the test ends. users are the
// names to issue tokens for, besides Admin.
func Start(t testing.TB, users ...string) *Cluster {
	t.Helper()
	assets := Assets()
	if assets == "" {
		t.Skip("SKIP: real kube-apiserver tests: etcd and kube-apiserver not found; run hack/build-kube once (about 20 minutes), or set KUBE_ASSETS to a directory holding both")
	}
	dir := t.TempDir()
	c := &Cluster{dir: dir, assets: assets, tokens: map[string]string{}}
	var err error
	if c.log, err = os.Create(filepath.Join(dir, "cluster.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			if b, err := os.ReadFile(c.log.Name()); err == nil {
				t.Logf("cluster log (tail):\n%s", tail(string(b), 40))
			}
		}
	})

	// etcd.
	clientPort, peerPort := freePort(t), freePort(t)
	c.etcd = exec.Command(filepath.Join(assets, "etcd"), "--data-dir="+filepath.Join(dir, "etcd"),
		fmt.Sprintf("--listen-client-urls=http://127.0.0.1:%d", clientPort), fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", peerPort))
	c.etcd.Stdout, c.etcd.Stderr = c.log, c.log
	c.etcd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.etcd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}

	// Service-account keys and tokens.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	write(t, filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	var csv bytes.Buffer
	for i, u := range append([]string{Admin}, users...) {
		tok := randomToken(t)
		c.tokens[u] = tok
		groups := ""
		if u == Admin {
			groups = `,"system:masters"`
		}
		fmt.Fprintf(&csv, "%s,%s,%d%s\n", tok, u, 1000+i, groups)
	}
	write(t, filepath.Join(dir, "tokens.csv"), csv.Bytes())

	c.port = freePort(t)
	c.URL = fmt.Sprintf("https://127.0.0.1:%d", c.port)
	c.startAPI(t, clientPort)
	return c
}

func (c *Cluster) apiArgs(etcdPort int) []string {
	return []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--cert-dir=" + filepath.Join(c.dir, "certs"),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.port),
		"--service-account-key-file=" + filepath.Join(c.dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(c.dir, "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--token-auth-file=" + filepath.Join(c.dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/24",
		"--disable-admission-plugins=ServiceAccount",
		// Loopback cannot be a Service endpoint; nothing here needs the
		// kubernetes Service.
		"--endpoint-reconciler-type=none",
		"--logging-format=text", "-v=0",
	}
}

func (c *Cluster) startAPI(t testing.TB, etcdPort int) {
	t.Helper()
	c.mu.Lock()
	c.api = exec.Command(filepath.Join(c.assets, "kube-apiserver"), c.apiArgs(etcdPort)...)
	c.api.Stdout, c.api.Stderr = c.log, c.log
	c.api.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := c.api.Start()
	exited := make(chan struct{})
	if err == nil {
		api := c.api
		go func() { _ = api.Wait(); close(exited) }()
		c.exited = exited
	}
	c.mu.Unlock()
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	if err := c.WaitReady(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
}

// WaitReady waits for /readyz.
func (c *Cluster) WaitReady(within time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	deadline := time.Now().Add(within)
	for {
		req, _ := http.NewRequest(http.MethodGet, c.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.tokens[Admin])
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		c.mu.Lock()
		exited := c.exited
		c.mu.Unlock()
		select {
		case <-exited:
			return fmt.Errorf("kube-apiserver exited before it was ready (see the cluster log)")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready within %s (last: %v)", within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// StopAPIServer stops the API server (etcd keeps running).
func (c *Cluster) StopAPIServer(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.api == nil {
		return
	}
	_ = c.api.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.api.Process.Kill()
		<-c.exited
	}
	c.api = nil
}

// StartAPIServer starts it again on the same port, over the same etcd.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	port := 0
	for _, a := range c.etcd.Args {
		if v, ok := strings.CutPrefix(a, "--listen-client-urls=http://127.0.0.1:"); ok {
			port, _ = strconv.Atoi(v)
		}
	}
	c.startAPI(t, port)
}

func (c *Cluster) stop() {
	c.mu.Lock()
	api := c.api
	c.api = nil
	c.mu.Unlock()
	if api != nil {
		_ = api.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(20 * time.Second):
			_ = api.Process.Kill()
		}
	}
	if c.etcd != nil && c.etcd.Process != nil {
		_ = c.etcd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.etcd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = c.etcd.Process.Kill()
		}
	}
	c.log.Close()
}

// Config returns a client configuration authenticating as user.
func (c *Cluster) Config(user string) *rest.Config {
	tok, ok := c.tokens[user]
	if !ok {
		panic("kubetest: no token for user " + user)
	}
	return &rest.Config{Host: c.URL, BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS: 100, Burst: 200, Timeout: 10 * time.Second}
}

// Kubeconfig writes a kubeconfig file for user in namespace and returns
// its path.
func (c *Cluster) Kubeconfig(t testing.TB, user, namespace string) string {
	t.Helper()
	p := filepath.Join(c.dir, "kubeconfig-"+user)
	write(t, p, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: %s
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: %s, namespace: %s}
current-context: test
`, c.URL, user, c.tokens[user], user, namespace)))
	return p
}

// Clients returns the clients of user in namespace.
func (c *Cluster) Clients(t testing.TB, user, namespace string) *kubeclient.Clients {
	t.Helper()
	cl, err := kubeclient.New(c.Config(user), namespace)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// Apply creates the objects of a YAML stream as admin with kubectl-like
// semantics (server-side apply); dryRun asks for a server-side dry run.
func (c *Cluster) Apply(ctx context.Context, yamlDocs []byte, namespace string, dryRun bool) error {
	return apply(ctx, c.Config(Admin), yamlDocs, namespace, dryRun)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func write(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func randomToken(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// FeatureFlagCRD returns the OpenFeature Operator's FeatureFlag CRD
// (config/crd/bases/core.openfeature.dev_featureflags.yaml of the
// operator's repository), which is not committed here: from $OFO_CRD,
// ../shared/open-feature-operator/ or the cache
// (~/.cache/tailguard/open-feature-operator/). "" when none is found.
func FeatureFlagCRD() string {
	const name = "core.openfeature.dev_featureflags.yaml"
	cands := []string{os.Getenv("OFO_CRD")}
	if root, err := repoRoot(); err == nil {
		cands = append(cands, filepath.Join(root, "..", "shared", "open-feature-operator", name))
	}
	if c, err := os.UserCacheDir(); err == nil {
		cands = append(cands, filepath.Join(c, "tailguard", "open-feature-operator", name))
	}
	for _, p := range cands {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}

// InstallFeatureFlagCRD installs the FeatureFlag CRD and waits until the
// API serves it; without the CRD file the test is skipped with a SKIP
// line.
func (c *Cluster) InstallFeatureFlagCRD(t testing.TB) {
	t.Helper()
	p := FeatureFlagCRD()
	if p == "" {
		t.Skip("SKIP: FeatureFlag tests: the OpenFeature Operator's CRD (core.openfeature.dev_featureflags.yaml) not found; copy it from github.com/open-feature/open-feature-operator config/crd/bases/ to ~/.cache/tailguard/open-feature-operator/ or ../shared/open-feature-operator/, or set OFO_CRD")
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Apply(ctx, b, "", false); err != nil {
		t.Fatalf("install FeatureFlag CRD: %v", err)
	}
	cl := c.Clients(t, Admin, "default")
	for {
		_, err := cl.Dynamic.Resource(featureFlags).Namespace("default").List(ctx, metav1.ListOptions{})
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("FeatureFlag CRD not served: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var featureFlags = schema.GroupVersionResource{Group: "core.openfeature.dev", Version: "v1beta1", Resource: "featureflags"}
