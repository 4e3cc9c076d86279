package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/sidecar"
	"github.com/tailguard/tailguard/webhook"
)

// Minimal views of the Kubernetes objects the example uses: only the fields
// the checks read.

type meta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type configMap struct {
	Metadata meta              `yaml:"metadata"`
	Data     map[string]string `yaml:"data"`
}

type deployment struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		RunAsUser    *int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	InitContainers []container `yaml:"initContainers"`
	Containers     []container `yaml:"containers"`
	Volumes        []volume    `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	SecurityContext *struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []volumeMount `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"` // int or port name
	} `yaml:"httpGet"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name  string `yaml:"name"`
		Items []struct {
			Key  string `yaml:"key"`
			Path string `yaml:"path"`
		} `yaml:"items"`
	} `yaml:"configMap"`
	EmptyDir              *struct{} `yaml:"emptyDir"`
	PersistentVolumeClaim *struct {
		ClaimName string `yaml:"claimName"`
	} `yaml:"persistentVolumeClaim"`
}

type service struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type podMonitor struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		PodMetricsEndpoints []struct {
			Port        string `yaml:"port"`
			Path        string `yaml:"path"`
			Relabelings []struct {
				TargetLabel string `yaml:"targetLabel"`
				Replacement string `yaml:"replacement"`
			} `yaml:"relabelings"`
		} `yaml:"podMetricsEndpoints"`
	} `yaml:"spec"`
}

type kustomization struct {
	Resources []string `yaml:"resources"`
}

// manifests is the example as the checks see it.
type manifests struct {
	files         []string // kubernetes/*.yaml, base names
	kustomization kustomization
	configMaps    map[string]*configMap
	deployments   []*deployment
	services      []*service
	podMonitors   []*podMonitor
	dockerfile    string
	// staleThreshold is TailguardEvaluationsStale's threshold in seconds
	// (alerts/tailguard.rules.yml), 0 if not found.
	staleThreshold float64
	// alertSLOs are the SLO names per service of the SLO rules
	// (alerts/slo-*.rules.yml), whose alerts carry them to the webhook.
	alertSLOs map[string][]string
}

func load(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{configMaps: map[string]*configMap{}}
	paths, err := filepath.Glob(filepath.Join("kubernetes", "single-pod", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in kubernetes/single-pod/ (%v)", err)
	}
	for _, p := range paths {
		m.files = append(m.files, filepath.Base(p))
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.add(data); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m.dockerfile = string(df)
	rules, err := os.ReadFile(filepath.Join("..", "alerts", "tailguard.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	m.staleThreshold = staleThreshold(rules)
	if m.alertSLOs, err = sloRules(filepath.Join("..", "alerts", "slo-shop.rules.yml")); err != nil {
		t.Fatal(err)
	}
	return m
}

// sloRules returns the service and slo labels of the rules in file.
func sloRules(file string) (map[string][]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	out := map[string][]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			svc, slo := r.Labels["service"], r.Labels["slo"]
			if svc != "" && slo != "" && !slices.Contains(out[svc], slo) {
				out[svc] = append(out[svc], slo)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no rules with service and slo labels", file)
	}
	return out, nil
}

// add decodes every YAML document in data by its kind.
func (m *manifests) add(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 0; ; i++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Metadata   meta   `yaml:"metadata"`
		}
		if err := node.Decode(&head); err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		if head.APIVersion == "" || head.Kind == "" {
			return fmt.Errorf("document %d: apiVersion and kind required", i)
		}
		if head.Metadata.Name == "" && head.Kind != "Kustomization" {
			return fmt.Errorf("document %d (%s): metadata.name required", i, head.Kind)
		}
		var v any
		switch head.Kind {
		case "Kustomization":
			v = &m.kustomization
		case "ConfigMap":
			cm := &configMap{}
			m.configMaps[head.Metadata.Name] = cm
			v = cm
		case "Deployment":
			d := &deployment{}
			m.deployments = append(m.deployments, d)
			v = d
		case "Service":
			s := &service{}
			m.services = append(m.services, s)
			v = s
		case "PodMonitor":
			pm := &podMonitor{}
			m.podMonitors = append(m.podMonitors, pm)
			v = pm
		default:
			return fmt.Errorf("document %d: unexpected kind %s", i, head.Kind)
		}
		if err := node.Decode(v); err != nil {
			return fmt.Errorf("document %d (%s %s): %w", i, head.Kind, head.Metadata.Name, err)
		}
	}
}

var staleRE = regexp.MustCompile(`tailguard_last_successful_evaluation_timestamp_seconds\{[^}]*\}\s*>\s*([0-9.]+)`)

func staleThreshold(rules []byte) float64 {
	m := staleRE.FindSubmatch(rules)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// rawConfig holds the paths of the sidecar's configuration as written,
// that is as the pod sees them.
type rawConfig struct {
	FlagFile   string `yaml:"flag_file"`
	PolicyFile string `yaml:"policy_file"`
}

// inPod resolves a path of the configuration at cfgPath as the sidecar
// does: relative to the configuration's directory.
func inPod(cfgPath, p string) string {
	if p == "" || path.IsAbs(p) {
		return p
	}
	return path.Join(path.Dir(cfgPath), p)
}

func (cm *configMap) dataOr(key string) string {
	if cm == nil {
		return ""
	}
	return cm.Data[key]
}

// loadSidecar writes the configuration, the policy and the seed flag file to
// a temporary directory, points flag_file and policy_file there, and loads
// the configuration with the sidecar's loader (strict decoding, validation of
// the detector and policy sections) and starts a daemon on it (the flag file
// against the policy): startErr says why it did not start. Nothing is
// queried.
func loadSidecar(cfgData, policyData, flagsData string) (cfg *sidecar.Config, startErr, err error) {
	dir, err := os.MkdirTemp("", "tailguard-deploy-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(cfgData), &doc); err != nil {
		return nil, nil, err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, errors.New("not a YAML mapping")
	}
	paths := map[string]string{"flag_file": filepath.Join(dir, "flags.json"), "policy_file": filepath.Join(dir, "policy.yml")}
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if p, ok := paths[top.Content[i].Value]; ok {
			top.Content[i+1].SetString(p)
		}
	}
	cfgOut, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, nil, err
	}
	for name, data := range map[string]string{"tailguard.yml": string(cfgOut), "policy.yml": policyData, "flags.json": flagsData} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			return nil, nil, err
		}
	}
	cfgFile := filepath.Join(dir, "tailguard.yml")
	if cfg, err = sidecar.LoadConfig(cfgFile); err != nil {
		return nil, nil, err
	}
	_, startErr = sidecar.New(sidecar.Options{ConfigFile: cfgFile})
	return cfg, startErr, nil
}

const (
	sidecarName     = "tailguard"
	healthyPath     = "/-/healthy"
	readyPath       = "/-/ready"
	webhookPort     = 9099
	nonrootUID      = 65532
	seedConfigMap   = "shop-flags-seed"
	seedKey         = "flags.json"
	strategyFlag    = "backoff-strategy"
	constantsFlag   = "backoff-constants"
	flagdSchemaURL  = "https://flagd.dev/schema/v0/flags.json"
	targetingSchema = "https://flagd.dev/schema/v0/targeting.json"
)

// strategies are the variants of the backoff-strategy flag (the cross-package
// contract).
var strategies = []string{"exponential", "full-jitter", "equal-jitter", "decorrelated", "grpc"}

// check returns every inconsistency in the example.
func check(m *manifests, flagSchema *jsonschema.Schema) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	for _, f := range m.files {
		if f != "kustomization.yaml" && !slices.Contains(m.kustomization.Resources, f) {
			fail("kustomization.yaml: resources does not list %s", f)
		}
	}
	for _, r := range m.kustomization.Resources {
		if !slices.Contains(m.files, r) {
			fail("kustomization.yaml: resource %s does not exist", r)
		}
	}
	if len(m.deployments) != 1 {
		fail("want one Deployment, got %d", len(m.deployments))
		return errs
	}
	d := m.deployments[0]
	pod := d.Spec.Template.Spec
	podLabels := d.Spec.Template.Metadata.Labels
	if len(d.Spec.Selector.MatchLabels) == 0 || !subset(d.Spec.Selector.MatchLabels, podLabels) {
		fail("deployment %s: selector %v does not match the pod labels %v", d.Metadata.Name, d.Spec.Selector.MatchLabels, podLabels)
	}

	volumes := map[string]volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		if v.ConfigMap != nil {
			cm, ok := m.configMaps[v.ConfigMap.Name]
			if !ok {
				fail("volume %s: ConfigMap %s is not in the manifests", v.Name, v.ConfigMap.Name)
				continue
			}
			for _, it := range v.ConfigMap.Items {
				if _, ok := cm.Data[it.Key]; !ok {
					fail("volume %s: ConfigMap %s has no key %s", v.Name, v.ConfigMap.Name, it.Key)
				}
			}
		}
	}
	mounted := map[string]bool{}
	all := slices.Concat(pod.InitContainers, pod.Containers)
	var sidecar *container
	for i, c := range all {
		where := "container " + c.Name
		if c.Name == sidecarName {
			sidecar = &all[i]
		}
		for _, vm := range c.VolumeMounts {
			mounted[vm.Name] = true
			if _, ok := volumes[vm.Name]; !ok {
				fail("%s: volumeMount %s: no such volume", where, vm.Name)
			}
		}
		errs = append(errs, checkSecurity(c, pod)...)
		for _, p := range []struct {
			name string
			p    *probe
		}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}} {
			if p.p == nil || p.p.HTTPGet == nil {
				continue
			}
			if !hasPort(c, p.p.HTTPGet.Port) {
				fail("%s: %s.httpGet.port %v is not a port of the container", where, p.name, p.p.HTTPGet.Port)
			}
		}
	}
	for name := range volumes {
		if !mounted[name] {
			fail("volume %s is not mounted by any container", name)
		}
	}
	if sidecar == nil {
		fail("no container named %s", sidecarName)
		return errs
	}
	errs = append(errs, checkSidecar(m, pod, *sidecar, volumes, flagSchema)...)

	for _, s := range m.services {
		if len(s.Spec.Selector) == 0 || !subset(s.Spec.Selector, podLabels) {
			fail("service %s: selector %v does not match the pod labels %v", s.Metadata.Name, s.Spec.Selector, podLabels)
		}
		for _, p := range s.Spec.Ports {
			if !hasPort(*sidecar, p.TargetPort) {
				fail("service %s: port %s: targetPort %v is not a port of the %s container", s.Metadata.Name, p.Name, p.TargetPort, sidecarName)
			}
			if p.Port != webhookPort {
				fail("service %s: port %s is %d, want %d", s.Metadata.Name, p.Name, p.Port, webhookPort)
			}
		}
	}
	if len(m.services) == 0 {
		fail("no Service for the sidecar's port %d", webhookPort)
	}
	for _, pm := range m.podMonitors {
		if len(pm.Spec.Selector.MatchLabels) == 0 || !subset(pm.Spec.Selector.MatchLabels, podLabels) {
			fail("podmonitor %s: selector does not match the pod labels", pm.Metadata.Name)
		}
		for _, ep := range pm.Spec.PodMetricsEndpoints {
			if !hasPort(*sidecar, ep.Port) {
				fail("podmonitor %s: port %q is not a port of the %s container", pm.Metadata.Name, ep.Port, sidecarName)
			}
			if !slices.ContainsFunc(ep.Relabelings, func(r struct {
				TargetLabel string `yaml:"targetLabel"`
				Replacement string `yaml:"replacement"`
			}) bool {
				return r.TargetLabel == "job" && r.Replacement == "tailguard"
			}) {
				fail("podmonitor %s: the job must be relabelled to tailguard, which the rules and dashboards select", pm.Metadata.Name)
			}
		}
	}
	errs = append(errs, checkDockerfile(m.dockerfile, *sidecar, pod)...)
	return errs
}

// checkSidecar checks the tailguard container: probes, listen address,
// configuration file, and the flag file shared with the service.
func checkSidecar(m *manifests, pod podSpec, c container, volumes map[string]volume, flagSchema *jsonschema.Schema) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("container %s: "+format, append([]any{c.Name}, args...)...))
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != healthyPath {
		fail("livenessProbe must GET %s", healthyPath)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != readyPath {
		fail("readinessProbe must GET %s", readyPath)
	}
	args := map[string]string{}
	for _, a := range c.Args {
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	if addr := args["--web.listen-address"]; !strings.HasSuffix(addr, ":"+strconv.Itoa(webhookPort)) || !hasPort(c, webhookPort) {
		fail("--web.listen-address %q and the container ports must use %d", addr, webhookPort)
	}

	// --config.file must be a key of a mounted ConfigMap.
	cfgPath := args["--config.file"]
	cfgData, ok := fileFromConfigMap(m, c, volumes, cfgPath)
	if !ok {
		fail("--config.file %q is not a file of a mounted ConfigMap", cfgPath)
		return errs
	}
	// policy_file must be a file of a mounted ConfigMap too; relative paths
	// are resolved against the configuration's directory.
	var raw rawConfig
	if err := yaml.Unmarshal([]byte(cfgData), &raw); err != nil {
		fail("config %s: %v", cfgPath, err)
		return errs
	}
	policyPath := inPod(cfgPath, raw.PolicyFile)
	policyData, ok := fileFromConfigMap(m, c, volumes, policyPath)
	if !ok {
		fail("config %s: policy_file %q (%s) is not a file of a mounted ConfigMap", cfgPath, raw.PolicyFile, policyPath)
		return errs
	}
	// The sidecar's own loader reads both, and the daemon starts on them
	// with the seed as its flag file.
	cfg, startErr, err := loadSidecar(cfgData, policyData, m.configMaps[seedConfigMap].dataOr(seedKey))
	if err != nil {
		fail("config %s: %v", cfgPath, err)
		return errs
	}
	if startErr != nil {
		fail("config %s: sidecar with the seed flag file: %v", cfgPath, startErr)
	}
	if want := 3 * time.Duration(cfg.EvaluationInterval).Seconds(); m.staleThreshold != want {
		fail("config %s: evaluation_interval %s, but TailguardEvaluationsStale (alerts/tailguard.rules.yml) fires after %gs, want 3 intervals = %gs",
			cfgPath, cfg.EvaluationInterval, m.staleThreshold, want)
	}
	for svc, slos := range m.alertSLOs {
		ps, ok := cfg.Policy.Service(svc)
		if !ok {
			fail("config %s: alerts/ has SLO alerts for service %q (label %s), which is not in the policy: its alerts would trigger nothing", cfgPath, svc, webhook.LabelService)
			continue
		}
		for _, name := range slos {
			if !slices.ContainsFunc(ps.SLOs, func(s policy.SLO) bool { return s.Name == name }) {
				fail("config %s: alerts/ has an SLO %q of service %s (label %s) that the policy does not have", cfgPath, name, svc, webhook.LabelSLO)
			}
		}
	}

	// The flag file lies on a writable, non-ConfigMap volume the sidecar
	// mounts; a service container reads the same volume at the same path,
	// read-only, and is told the path; the init container seeds it.
	flagFile := inPod(cfgPath, raw.FlagFile)
	dir := path.Dir(flagFile)
	vm, ok := mountAt(c, dir)
	if !ok {
		fail("flag_file %q is not on a volume the sidecar mounts", flagFile)
		return errs
	}
	v := volumes[vm.Name]
	if vm.ReadOnly || (v.EmptyDir == nil && v.PersistentVolumeClaim == nil) {
		fail("flag file volume %s must be a writable emptyDir or persistentVolumeClaim", vm.Name)
	}
	var readers, seeded int
	for _, o := range pod.Containers {
		if o.Name == c.Name {
			continue
		}
		ovm, ok := mountAt(o, dir)
		if !ok || ovm.Name != vm.Name {
			continue
		}
		readers++
		if !ovm.ReadOnly {
			fail("container %s must mount the flag file volume read-only", o.Name)
		}
		if !slices.ContainsFunc(o.Env, func(e struct {
			Name  string `yaml:"name"`
			Value string `yaml:"value"`
		}) bool {
			return e.Value == flagFile
		}) {
			fail("container %s has no environment variable with the flag file path %s", o.Name, flagFile)
		}
	}
	if readers == 0 {
		fail("no service container mounts the flag file volume at %s", dir)
	}
	for _, ic := range pod.InitContainers {
		ivm, ok := mountAt(ic, dir)
		if !ok || ivm.Name != vm.Name || ivm.ReadOnly {
			continue
		}
		if len(ic.Command) > 0 && ic.Command[len(ic.Command)-1] == flagFile {
			seeded++
		}
	}
	if seeded == 0 {
		fail("no init container writes the seed to %s", flagFile)
	}

	seed, ok := m.configMaps[seedConfigMap]
	if !ok {
		fail("ConfigMap %s missing", seedConfigMap)
		return errs
	}
	if err := checkSeedFlags(seed.Data[seedKey], flagSchema); err != nil {
		fail("ConfigMap %s key %s: %v", seedConfigMap, seedKey, err)
	}
	return errs
}

// fileFromConfigMap returns the content behind a file path in container c,
// when the path is an item of a ConfigMap volume c mounts.
func fileFromConfigMap(m *manifests, c container, volumes map[string]volume, file string) (string, bool) {
	vm, ok := mountAt(c, path.Dir(file))
	if !ok {
		return "", false
	}
	v := volumes[vm.Name]
	if v.ConfigMap == nil {
		return "", false
	}
	cm, ok := m.configMaps[v.ConfigMap.Name]
	if !ok {
		return "", false
	}
	base := path.Base(file)
	for _, it := range v.ConfigMap.Items {
		if it.Path == base {
			data, ok := cm.Data[it.Key]
			return data, ok
		}
	}
	if len(v.ConfigMap.Items) == 0 {
		data, ok := cm.Data[base]
		return data, ok
	}
	return "", false
}

func mountAt(c container, dir string) (volumeMount, bool) {
	for _, vm := range c.VolumeMounts {
		if path.Clean(vm.MountPath) == path.Clean(dir) {
			return vm, true
		}
	}
	return volumeMount{}, false
}

// checkSeedFlags validates the seed flag file against flagd's schema and the
// flag contract of the backoff package.
func checkSeedFlags(data string, sch *jsonschema.Schema) error {
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(data))
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("flagd schema: %w", err)
	}
	flags, _ := inst.(map[string]any)["flags"].(map[string]any)
	strategy, ok := flags[strategyFlag].(map[string]any)
	if !ok {
		return fmt.Errorf("flag %s missing", strategyFlag)
	}
	variants, _ := strategy["variants"].(map[string]any)
	for k, v := range variants {
		if s, _ := v.(string); !slices.Contains(strategies, s) {
			return fmt.Errorf("flag %s: variant %s: %q is not one of %v", strategyFlag, k, v, strategies)
		}
	}
	if dv, _ := strategy["defaultVariant"].(string); variants[dv] == nil {
		return fmt.Errorf("flag %s: defaultVariant %q is not a variant", strategyFlag, dv)
	}
	constants, ok := flags[constantsFlag].(map[string]any)
	if !ok {
		return fmt.Errorf("flag %s missing", constantsFlag)
	}
	cvariants, _ := constants["variants"].(map[string]any)
	for k, v := range cvariants {
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("flag %s: variant %s is not an object", constantsFlag, k)
		}
		for s := range obj {
			if !slices.Contains(strategies, s) {
				return fmt.Errorf("flag %s: variant %s: key %q is not a strategy", constantsFlag, k, s)
			}
		}
	}
	return nil
}

func checkSecurity(c container, pod podSpec) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("container %s: "+format, append([]any{c.Name}, args...)...))
	}
	nonRoot := pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot
	sc := c.SecurityContext
	if sc != nil && sc.RunAsNonRoot != nil {
		nonRoot = *sc.RunAsNonRoot
	}
	if !nonRoot {
		fail("runAsNonRoot must be true (pod or container)")
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		fail("securityContext.readOnlyRootFilesystem must be true")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		fail("securityContext.allowPrivilegeEscalation must be false")
	}
	if sc == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		fail("securityContext.capabilities.drop must contain ALL")
	}
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			fail("resources.requests.%s not set", r)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		fail("resources.limits.memory not set")
	}
	return errs
}

// checkDockerfile checks the image build: multi-stage, a static binary of
// ./cmd/tailguard, a distroless nonroot final stage running as the pod's
// user, exposing the sidecar's port.
func checkDockerfile(df string, sidecar container, pod podSpec) []error {
	var (
		errs    []error
		froms   []string
		user    string
		exposes []string
		build   strings.Builder
	)
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("Dockerfile: "+format, args...)) }
	// Join continuation lines, drop comments.
	var logical []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(df))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		if l := strings.TrimSpace(cur.String()); l != "" {
			logical = append(logical, l)
		}
		cur.Reset()
	}
	for _, l := range logical {
		instr, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			froms = append(froms, rest)
		case "USER":
			user = rest
		case "EXPOSE":
			exposes = append(exposes, strings.Fields(rest)...)
		case "RUN":
			if len(froms) == 1 {
				build.WriteString(rest + "\n")
			}
		}
	}
	if len(froms) < 2 {
		fail("want a multi-stage build, got %d FROM", len(froms))
		return errs
	}
	if final := froms[len(froms)-1]; !strings.Contains(final, "distroless/static") && !strings.HasPrefix(final, "scratch") {
		fail("final stage %q is not distroless/static or scratch", final)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/tailguard"} {
		if !strings.Contains(build.String(), want) {
			fail("the build stage does not run %q", want)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid != strconv.Itoa(nonrootUID) && uid != "nonroot" {
		fail("USER %q, want %d (nonroot)", user, nonrootUID)
	}
	if u := pod.SecurityContext.RunAsUser; u == nil || *u != nonrootUID {
		fail("the pod's runAsUser must be the image's user %d", nonrootUID)
	}
	if !slices.Contains(exposes, strconv.Itoa(webhookPort)) || !hasPort(sidecar, webhookPort) {
		fail("EXPOSE %v and the %s container must both use %d", exposes, sidecar.Name, webhookPort)
	}
	return errs
}

func hasPort(c container, port any) bool {
	for _, p := range c.Ports {
		switch v := port.(type) {
		case int:
			if p.ContainerPort == v {
				return true
			}
		case string:
			if p.Name == v {
				return true
			}
		}
	}
	return false
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func compileFlagSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	for url, file := range map[string]string{
		flagdSchemaURL:  "testdata/flagd-flags.json",
		targetingSchema: "testdata/flagd-targeting.json",
	} {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := c.AddResource(url, doc); err != nil {
			t.Fatal(err)
		}
	}
	sch, err := c.Compile(flagdSchemaURL)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func TestKubernetesExample(t *testing.T) {
	m := load(t)
	for _, err := range check(m, compileFlagSchema(t)) {
		t.Error(err)
	}
	if m.staleThreshold == 0 {
		t.Error("TailguardEvaluationsStale threshold not found in alerts/tailguard.rules.yml")
	}
}

func TestCheckRejects(t *testing.T) {
	sch := compileFlagSchema(t)
	sidecar := func(m *manifests) *container {
		cs := m.deployments[0].Spec.Template.Spec.Containers
		for i := range cs {
			if cs[i].Name == sidecarName {
				return &cs[i]
			}
		}
		t.Fatal("no sidecar")
		return nil
	}
	mountOf := func(c *container, name string) *volumeMount {
		for i := range c.VolumeMounts {
			if c.VolumeMounts[i].Name == name {
				return &c.VolumeMounts[i]
			}
		}
		t.Fatalf("container %s does not mount %s", c.Name, name)
		return nil
	}
	podSpecOf := func(m *manifests) *podSpec { return &m.deployments[0].Spec.Template.Spec }
	tests := []struct {
		name    string
		mutate  func(m *manifests)
		wantErr string
	}{
		{"liveness probe on an unknown port", func(m *manifests) {
			sidecar(m).LivenessProbe.HTTPGet.Port = "metrics"
		}, "livenessProbe.httpGet.port metrics is not a port"},
		{"readiness probe path", func(m *manifests) {
			sidecar(m).ReadinessProbe.HTTPGet.Path = "/ready"
		}, "readinessProbe must GET /-/ready"},
		{"listen address", func(m *manifests) {
			sidecar(m).Args = []string{"--config.file=/etc/tailguard/tailguard.yml", "--web.listen-address=:9090"}
		}, "--web.listen-address"},
		{"config file not mounted", func(m *manifests) {
			sidecar(m).Args[0] = "--config.file=/etc/tailguard/config.yml"
		}, "is not a file of a mounted ConfigMap"},
		{"mount of a missing volume", func(m *manifests) {
			mountOf(sidecar(m), "tmp").Name = "scratch"
		}, "volumeMount scratch: no such volume"},
		{"flag volume read-only for the sidecar", func(m *manifests) {
			mountOf(sidecar(m), "flags").ReadOnly = true
		}, "must be a writable emptyDir or persistentVolumeClaim"},
		{"flag volume from a ConfigMap", func(m *manifests) {
			ps := podSpecOf(m)
			for i := range ps.Volumes {
				if ps.Volumes[i].Name == "flags" {
					ps.Volumes[i] = ps.Volumes[slices.IndexFunc(ps.Volumes, func(v volume) bool { return v.Name == "flags-seed" })]
					ps.Volumes[i].Name = "flags"
				}
			}
		}, "must be a writable emptyDir or persistentVolumeClaim"},
		{"service writes the flag file", func(m *manifests) {
			mountOf(&podSpecOf(m).Containers[0], "flags").ReadOnly = false
		}, "must mount the flag file volume read-only"},
		{"service not told the flag file", func(m *manifests) {
			podSpecOf(m).Containers[0].Env = nil
		}, "no environment variable with the flag file path"},
		{"seed not written", func(m *manifests) {
			podSpecOf(m).InitContainers[0].Command = []string{"true"}
		}, "no init container writes the seed"},
		{"seed flags invalid", func(m *manifests) {
			m.configMaps[seedConfigMap].Data[seedKey] = strings.Replace(m.configMaps[seedConfigMap].Data[seedKey], `"ENABLED"`, `"ON"`, 1)
		}, "flagd schema"},
		{"seed strategy unknown", func(m *manifests) {
			m.configMaps[seedConfigMap].Data[seedKey] = strings.Replace(m.configMaps[seedConfigMap].Data[seedKey], `"grpc": "grpc"`, `"grpc": "linear"`, 1)
		}, `"linear" is not one of`},
		{"config map key missing", func(m *manifests) {
			delete(m.configMaps[seedConfigMap].Data, seedKey)
		}, "has no key flags.json"},
		{"evaluation interval out of step with the alert", func(m *manifests) { m.staleThreshold = 300 }, "want 3 intervals"},
		{"config key the loader does not know", func(m *manifests) {
			cm := m.configMaps["shop-tailguard-config"]
			cm.Data["tailguard.yml"] = "global:\n  scrape_interval: 1m\n" + cm.Data["tailguard.yml"]
		}, "global"},
		{"config without prometheus", func(m *manifests) {
			cm := m.configMaps["shop-tailguard-config"]
			cm.Data["tailguard.yml"] = strings.Replace(cm.Data["tailguard.yml"], "url: http://prometheus-operated.monitoring.svc:9090", "", 1)
		}, "prometheus.url: required"},
		{"policy not mounted", func(m *manifests) {
			for _, v := range podSpecOf(m).Volumes {
				if v.Name == "config" {
					v.ConfigMap.Items = v.ConfigMap.Items[:1]
				}
			}
		}, `policy_file "policy.yml" (/etc/tailguard/policy.yml) is not a file of a mounted ConfigMap`},
		{"policy invalid", func(m *manifests) {
			cm := m.configMaps["shop-tailguard-config"]
			cm.Data["policy.yml"] = strings.Replace(cm.Data["policy.yml"], "mode: auto", "mode: yolo", 1)
		}, "mode"},
		{"detector configuration missing", func(m *manifests) {
			cm := m.configMaps["shop-tailguard-config"]
			cm.Data["policy.yml"] = strings.Replace(cm.Data["policy.yml"], "- name: shop", "- name: cart", 1)
		}, `service "shop" is not in the policy file`},
		{"seed flag file unreadable for the sidecar", func(m *manifests) {
			m.configMaps[seedConfigMap].Data[seedKey] = "{"
		}, "sidecar with the seed flag file"},
		{"SLO alert for an unknown service", func(m *manifests) {
			m.alertSLOs["cart"] = []string{"checkout-latency"}
		}, `service "cart" (label tailguard_service), which is not in the policy`},
		{"SLO alert for an unknown SLO", func(m *manifests) {
			m.alertSLOs["shop"] = append(m.alertSLOs["shop"], "checkout-availability")
		}, `SLO "checkout-availability" of service shop (label tailguard_slo)`},
		{"root filesystem writable", func(m *manifests) {
			f := false
			sidecar(m).SecurityContext.ReadOnlyRootFilesystem = &f
		}, "readOnlyRootFilesystem must be true"},
		{"root allowed", func(m *manifests) {
			podSpecOf(m).SecurityContext.RunAsNonRoot = nil
		}, "runAsNonRoot must be true"},
		{"no memory limit", func(m *manifests) {
			podSpecOf(m).InitContainers[0].Resources.Limits = nil
		}, "container seed-flags: resources.limits.memory not set"},
		{"service target port", func(m *manifests) {
			m.services[0].Spec.Ports[0].TargetPort = "http"
		}, "targetPort http is not a port of the tailguard container"},
		{"service selector", func(m *manifests) {
			m.services[0].Spec.Selector = map[string]string{"app": "shop"}
		}, "does not match the pod labels"},
		{"pod monitor port", func(m *manifests) {
			m.podMonitors[0].Spec.PodMetricsEndpoints[0].Port = "metrics"
		}, `port "metrics" is not a port`},
		{"pod monitor job", func(m *manifests) {
			m.podMonitors[0].Spec.PodMetricsEndpoints[0].Relabelings = nil
		}, "relabelled to tailguard"},
		{"kustomization misses a file", func(m *manifests) {
			m.kustomization.Resources = m.kustomization.Resources[1:]
		}, "resources does not list"},
		{"Dockerfile runs as root", func(m *manifests) {
			m.dockerfile = strings.Replace(m.dockerfile, "USER 65532:65532", "USER root", 1)
		}, `USER "root"`},
		{"Dockerfile with cgo", func(m *manifests) {
			m.dockerfile = strings.Replace(m.dockerfile, "CGO_ENABLED=0", "CGO_ENABLED=1", 1)
		}, `does not run "CGO_ENABLED=0"`},
		{"Dockerfile single stage", func(m *manifests) {
			m.dockerfile = regexp.MustCompile(`(?m)^FROM gcr.io.*$`).ReplaceAllString(m.dockerfile, "")
		}, "multi-stage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := load(t)
			tt.mutate(m)
			err := errors.Join(check(m, sch)...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("check() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestAlertsReachTheSidecar checks the path from the SLO alerts to the
// sidecar's webhook against the webhook's own names: the burn-rate alerts
// carry webhook.LabelService and webhook.LabelSLO, and the example
// Alertmanager configuration routes alerts with webhook.LabelService to a
// receiver posting to /api/v1/alerts on the sidecar's port.
func TestAlertsReachTheSidecar(t *testing.T) {
	rulesData, err := os.ReadFile(filepath.Join("..", "alerts", "slo-alerts.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert  string            `yaml:"alert"`
				Labels map[string]string `yaml:"labels"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(rulesData, &rules); err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			for _, l := range []string{webhook.LabelService, webhook.LabelSLO} {
				if r.Labels[l] == "" {
					t.Errorf("slo-alerts.rules.yml: alert %s lacks the label %s the webhook reads", r.Alert, l)
				}
			}
		}
	}
	if alerts == 0 {
		t.Error("slo-alerts.rules.yml: no alerts")
	}

	amData, err := os.ReadFile(filepath.Join("..", "alerts", "alertmanager.example.yml"))
	if err != nil {
		t.Fatal(err)
	}
	type route struct {
		Receiver string   `yaml:"receiver"`
		Matchers []string `yaml:"matchers"`
		GroupBy  []string `yaml:"group_by"`
	}
	var am struct {
		Route struct {
			Routes []route `yaml:"routes"`
		} `yaml:"route"`
		Receivers []struct {
			Name           string `yaml:"name"`
			WebhookConfigs []struct {
				URL string `yaml:"url"`
			} `yaml:"webhook_configs"`
		} `yaml:"receivers"`
	}
	if err := yaml.Unmarshal(amData, &am); err != nil {
		t.Fatal(err)
	}
	receiver := ""
	for _, r := range am.Receivers {
		for _, w := range r.WebhookConfigs {
			u, err := url.Parse(w.URL)
			if err == nil && u.Path == "/api/v1/alerts" && u.Port() == strconv.Itoa(webhookPort) {
				receiver = r.Name
			}
		}
	}
	if receiver == "" {
		t.Fatalf("alertmanager.example.yml: no receiver posts to the sidecar's /api/v1/alerts on port %d", webhookPort)
	}
	found := false
	for _, r := range am.Route.Routes {
		if r.Receiver != receiver {
			continue
		}
		found = true
		if !slices.ContainsFunc(r.Matchers, func(m string) bool { return strings.HasPrefix(m, webhook.LabelService) }) {
			t.Errorf("alertmanager.example.yml: the route to %s does not match on %s: %v", receiver, webhook.LabelService, r.Matchers)
		}
		for _, l := range []string{webhook.LabelService, webhook.LabelSLO} {
			if !slices.Contains(r.GroupBy, l) {
				t.Errorf("alertmanager.example.yml: the route to %s does not group by %s: %v", receiver, l, r.GroupBy)
			}
		}
	}
	if !found {
		t.Errorf("alertmanager.example.yml: no route to %s", receiver)
	}
}
