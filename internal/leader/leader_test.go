package leader_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/flags/kube"
	"github.com/tailguard/tailguard/internal/kubeclient"
	"github.com/tailguard/tailguard/internal/kubetest"
	"github.com/tailguard/tailguard/internal/leader"
)

// Short timings: a killed leader's lease expires within 3 s.
const (
	leaseDuration = 3 * time.Second
	renewDeadline = 2 * time.Second
	retryPeriod   = 500 * time.Millisecond
	// A virtual minute of the incident per tick of wall time, and the
	// scenario's length: long enough for the ladder and the restore path.
	tick            = 100 * time.Millisecond
	scenarioMinutes = 60
	// The kill test runs slower, so that the incident goes on well after
	// the lease has expired.
	killTick    = 250 * time.Millisecond
	killMinutes = 90
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const seed = `{
  "metadata": {"flagSetId": "shop"},
  "flags": {
    "backoff-strategy": {"state": "ENABLED", "defaultVariant": "decorrelated", "variants": {"exponential": "exponential", "decorrelated": "decorrelated"}},
    "backoff-constants": {"state": "ENABLED", "defaultVariant": "default", "variants": {"default": {
      "decorrelated": {"base": "100ms", "cap": "2s", "maxAttempts": 6},
      "exponential": {"base": "50ms", "cap": "500ms", "maxAttempts": 3}}}}
  }
}`

// p99 is a deterministic service model (as in the controller's crash
// tests): the legacy tail plus the new strategy's retry waits, in
// proportion to its share, base delay and attempts.
func p99(f controller.FlagState) float64 {
	k, ok := f.ConstantsFor("decorrelated")
	if !ok {
		return 0.25
	}
	return 0.25 + f.Share("decorrelated")*0.25*(0.6+0.4*(k.Base.Seconds()/0.1)*(float64(max(k.MaxAttempts, 1))/6))
}

func observe(f controller.FlagState) controller.Observation {
	v, verdict := p99(f), controller.VerdictHealthy
	if v > 0.3 {
		verdict = controller.VerdictRegressed
	}
	cause := controller.Cause{Kind: controller.CauseFlag, FlagKey: "backoff-strategy", Variant: "decorrelated", IncidentID: "inc-1", Confidence: 0.9}
	return controller.Observation{
		Service: "shop",
		Assessments: []controller.Assessment{
			{SLO: "checkout-latency", Value: v, Verdict: verdict, Cause: cause, Onset: t0},
			{SLO: "payments-retries", Value: 0.03, Verdict: controller.VerdictHealthy},
			{SLO: "checkout-errors", Value: 0.0005, Verdict: controller.VerdictHealthy},
			{SLO: "search-latency", Value: 0.12, Verdict: controller.VerdictHealthy},
		},
		Retries: controller.RetryStats{Upstream: "payments", Calls: 15000, Retries: 450, AttemptLatency: 40 * time.Millisecond},
		Flags:   f,
	}
}

// replica is one tailguard replica's decide-and-write path for the shop
// service: its own clients, its own election, its own controller with
// empty memory, the flags in the cluster.
type replica struct {
	identity string
	elector  *leader.Elector
	electors *leader.Electors
	writer   *controller.FlagsWriter
	stepper  leader.Stepper
}

func newReplica(ctx context.Context, t testing.TB, rc *rest.Config, namespace, name, identity string) *replica {
	t.Helper()
	cl, err := kubeclient.New(rc, namespace)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := kube.NewStore(kube.Config{Dynamic: cl.Dynamic, Namespace: namespace, Name: name}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.LoadFile("../../controller/testdata/policy.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	w, err := controller.NewFlagsWriter(st, &pol.Services[0])
	if err != nil {
		t.Fatal(err)
	}
	c, err := controller.New(controller.Config{Policy: pol, Writer: w, Actor: "tailguard/" + identity})
	if err != nil {
		t.Fatal(err)
	}
	es := leader.NewElectors(ctx, nil)
	e, err := es.Get("shop", leader.Config{Client: cl.Dynamic, Namespace: namespace, Identity: identity,
		LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod})
	if err != nil {
		t.Fatal(err)
	}
	return &replica{identity: identity, elector: e, electors: es, writer: w, stepper: leader.Gate(c, e)}
}

// run steps on every tick, in virtual minutes counted from start, until
// the scenario ends or ctx does. A conflict (another replica wrote first)
// is the store's compare-and-swap at work: the next tick re-reads.
func (r *replica) run(ctx context.Context, start time.Time, tick time.Duration, minutes int, onDecision func(controller.Decision)) error {
	t := time.NewTicker(tick / 5)
	defer t.Stop()
	last := -1
	for {
		m := int(time.Since(start) / tick)
		if m >= minutes {
			return nil
		}
		if time.Since(start) >= 0 && m != last {
			last = m
			fs, err := r.writer.Read(ctx)
			if err == nil {
				var d controller.Decision
				d, err = r.stepper.Step(ctx, observe(fs), t0.Add(time.Duration(m)*time.Minute))
				if err == nil && onDecision != nil {
					onDecision(d)
				}
			}
			// A conflict is another replica's write winning the store's
			// compare-and-swap; a cancelled step is this replica losing
			// the lease mid-step. Both end with the next tick's re-read.
			if err != nil && ctx.Err() == nil && !errors.Is(err, flags.ErrConflict) && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s at minute %d: %w", r.identity, m, err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func setup(t *testing.T, c *kubetest.Cluster, name string) {
	t.Helper()
	ctx := context.Background()
	admin := c.Clients(t, kubetest.Admin, "shop")
	var spec map[string]any
	if err := json.Unmarshal([]byte(seed), &spec); err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "core.openfeature.dev/v1beta1", "kind": "FeatureFlag",
		"metadata": map[string]any{"name": name, "namespace": "shop"}, "spec": map[string]any{"flagSpec": spec},
	}}
	if _, err := admin.Dynamic.Resource(kube.FeatureFlags).Namespace("shop").Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func cluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	c := kubetest.Start(t)
	c.InstallFeatureFlagCRD(t)
	if err := c.Apply(context.Background(), []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"), "", false); err != nil {
		t.Fatal(err)
	}
	return c
}

// journalSteps returns the controller's journaled steps, oldest first.
func journalSteps(t testing.TB, rc *rest.Config, name string) ([]string, []flags.Entry) {
	t.Helper()
	cl, err := kubeclient.New(rc, "shop")
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := kube.NewStore(kube.Config{Dynamic: cl.Dynamic, Namespace: "shop", Name: name}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := st.History(context.Background(), flags.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, e := range h {
		if e.Actor == flags.ActorController {
			steps = append(steps, controller.StepOf(e.IdempotencyKey))
		}
	}
	return steps, h
}

// TestThreeReplicasOneIncident: three replicas on one incident, 20 times
// over: one leader at a time, the others standing by and naming it, and
// every decision written exactly once (no step repeated, none written by a
// standby).
func TestThreeReplicasOneIncident(t *testing.T) {
	c := cluster(t)
	reps := 20
	if testing.Short() {
		reps = 3
	}
	writes, decisions, overlaps := 0, 0, 0
	for rep := range reps {
		name := fmt.Sprintf("shop-flags-%02d", rep)
		setup(t, c, name)
		ctx, cancel := context.WithCancel(context.Background())
		var rs []*replica
		for i := range 3 {
			rs = append(rs, newReplica(ctx, t, c.Config(kubetest.Admin), "shop", name, fmt.Sprintf("replica-%d", i)))
		}
		// Wait for a leader, then run the incident.
		deadline := time.Now().Add(10 * time.Second)
		for !slices.ContainsFunc(rs, func(r *replica) bool { return r.elector.Leading() }) {
			if time.Now().After(deadline) {
				t.Fatal("no leader within 10s")
			}
			time.Sleep(50 * time.Millisecond)
		}
		var mu sync.Mutex
		acts := map[string]int{} // step → decisions to write it
		start := time.Now()
		errs := make(chan error, len(rs))
		stopSampling := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				select {
				case <-stopSampling:
					return
				case <-time.After(20 * time.Millisecond):
				}
				n := 0
				for _, r := range rs {
					if r.elector.Leading() {
						n++
					}
				}
				if n > 1 {
					mu.Lock()
					overlaps++
					mu.Unlock()
				}
			}
		}()
		for _, r := range rs {
			go func() {
				errs <- r.run(ctx, start, tick, scenarioMinutes, func(d controller.Decision) {
					if d.Kind == controller.DecisionAct && d.Change != nil {
						mu.Lock()
						acts[controller.StepOf(d.Change.IdempotencyKey)]++
						mu.Unlock()
					}
					if d.Kind == controller.DecisionNone && strings.HasPrefix(d.Reason, "standby: ") && !strings.Contains(d.Reason, "replica-") {
						t.Errorf("standby decision does not name the leader: %s", d.Reason)
					}
				})
			}()
		}
		for range rs {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		close(stopSampling)
		<-sampled
		// The others' status names the leader.
		var leaderID string
		for _, r := range rs {
			if r.elector.Leading() {
				leaderID = r.identity
			}
		}
		for _, r := range rs {
			if st := r.elector.Status(); st.Leader != leaderID {
				t.Errorf("%s sees leader %q, want %q", r.identity, st.Leader, leaderID)
			}
		}
		cancel()
		for _, r := range rs {
			r.electors.Wait()
		}
		steps, _ := journalSteps(t, c.Config(kubetest.Admin), name)
		if len(steps) < 2 {
			t.Fatalf("repetition %d: the incident wrote %v; the scenario needs a ladder", rep, steps)
		}
		if dup := len(steps) - len(slices.Compact(slices.Sorted(slices.Values(steps)))); dup > 0 {
			t.Errorf("repetition %d: steps written more than once: %v", rep, steps)
		}
		for s, n := range acts {
			if n != 1 {
				t.Errorf("repetition %d: step %s decided %d times", rep, s, n)
			}
		}
		writes += len(steps)
		decisions += len(acts)
	}
	if overlaps > 0 {
		t.Errorf("two replicas led at once in %d samples", overlaps)
	}
	t.Logf("%d repetitions: %d decisions to write, %d writes (%.2f writes per decision); %d samples with two leaders", reps, decisions, writes, float64(writes)/float64(max(decisions, 1)), overlaps)
}

// The SIGKILL test runs replicas as processes of this test binary.
const replicaEnv = "TAILGUARD_LEADER_REPLICA"

func TestReplicaProcess(t *testing.T) {
	spec := os.Getenv(replicaEnv)
	if spec == "" {
		t.Skip("run by TestKillLeader")
	}
	var cfg struct {
		Host, Token, Name, Identity string
		Start                       time.Time
	}
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		t.Fatal(err)
	}
	rc := &rest.Config{Host: cfg.Host, BearerToken: cfg.Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, Timeout: 5 * time.Second}
	ctx := context.Background()
	r := newReplica(ctx, t, rc, "shop", cfg.Name, cfg.Identity)
	err := r.run(ctx, cfg.Start, killTick, killMinutes, func(d controller.Decision) {
		if d.Kind == controller.DecisionAct && d.Change != nil {
			fmt.Printf("WROTE %s %s %d\n", cfg.Identity, controller.StepOf(d.Change.IdempotencyKey), time.Now().UnixNano())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKillLeader: three replica processes; the leader is killed with
// SIGKILL right after its first write. Another replica takes the lease
// within the lease duration and goes on with the incident from the
// journal: the killed leader's step is not written again.
func TestKillLeader(t *testing.T) {
	c := cluster(t)
	name := "shop-flags"
	setup(t, c, name)
	rc := c.Config(kubetest.Admin)
	start := time.Now().Add(3 * time.Second) // time for the processes to start
	type wrote struct {
		identity, step string
		at             time.Time
	}
	lines := make(chan wrote, 64)
	procs := map[string]*exec.Cmd{}
	for i := range 3 {
		id := fmt.Sprintf("replica-%d", i)
		spec, _ := json.Marshal(map[string]any{"Host": rc.Host, "Token": rc.BearerToken, "Name": name, "Identity": id, "Start": start})
		cmd := exec.Command(os.Args[0], "-test.run=^TestReplicaProcess$", "-test.v")
		cmd.Env = append(os.Environ(), replicaEnv+"="+string(spec))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[id] = cmd
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		go func() {
			s := bufio.NewScanner(out)
			for s.Scan() {
				f := strings.Fields(s.Text())
				if len(f) == 4 && f[0] == "WROTE" {
					ns, _ := strconv.ParseInt(f[3], 10, 64)
					lines <- wrote{f[1], f[2], time.Unix(0, ns)}
				} else if !strings.HasPrefix(s.Text(), "=== RUN") && !strings.HasPrefix(s.Text(), "PASS") {
					t.Logf("%s: %s", id, s.Text())
				}
			}
		}()
	}
	var first wrote
	select {
	case first = <-lines:
	case <-time.After(time.Duration(killMinutes)*killTick + 10*time.Second):
		t.Fatal("no write")
	}
	killedAt := time.Now()
	if err := procs[first.identity].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Lease takeover, as seen on the Lease.
	admin := c.Clients(t, kubetest.Admin, "shop")
	var takeover time.Duration
	for takeover == 0 {
		obj, err := admin.Dynamic.Resource(leader.Leases).Namespace("shop").Get(context.Background(), leader.LeaseName("shop"), metav1.GetOptions{})
		if err == nil {
			if h, _, _ := unstructured.NestedString(obj.Object, "spec", "holderIdentity"); h != "" && h != first.identity {
				takeover = time.Since(killedAt)
			}
		}
		if time.Since(killedAt) > 3*leaseDuration {
			t.Fatalf("no takeover within %s", 3*leaseDuration)
		}
		time.Sleep(25 * time.Millisecond)
	}
	var next wrote
	select {
	case next = <-lines:
	case <-time.After(time.Duration(killMinutes) * killTick):
		t.Fatal("the new leader wrote nothing")
	}
	if next.identity == first.identity || next.step == first.step {
		t.Errorf("after the kill: %+v, first write %+v", next, first)
	}
	if takeover > leaseDuration+retryPeriod+time.Second {
		t.Errorf("takeover after %s, want within the lease duration %s (+ one retry period)", takeover, leaseDuration)
	}
	// Let the incident finish, then check the journal.
	for id, p := range procs {
		if id != first.identity {
			_ = p.Wait()
		}
	}
	steps, _ := journalSteps(t, rc, name)
	if dup := len(steps) - len(slices.Compact(slices.Sorted(slices.Values(steps)))); dup > 0 {
		t.Errorf("steps written more than once across the failover: %v", steps)
	}
	t.Logf("leader %s killed after writing %s; lease taken over after %s; next write (%s by %s) %s after the kill; journal %v",
		first.identity, first.step, takeover.Round(time.Millisecond), next.step, next.identity, next.at.Sub(killedAt).Round(time.Millisecond), steps)
}
