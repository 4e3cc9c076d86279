package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"os/user"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/flags/kube"
	"github.com/tailguard/tailguard/internal/kubeclient"
)

// Exit codes.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitConflict = 3
	exitIO       = 4
	exitInvalid  = 5
)

const appHelp = `Operate tailguard: inspect and change feature flags and their journal, and
talk to the sidecar's API (incidents, explain, plan, approve, declare,
evaluate; see --sidecar.url).

Every change to the flag file needs --reason and is recorded in the journal
next to it (<flag-file>.journal.jsonl) with the actor, reason, incident and
before/after, and can be rolled back with "flags rollback".

Exit codes:
  0  success (including "no change" and an already applied --idempotency-key)
  1  other error (for example an unknown flag, or an incident, plan or
     service the sidecar does not know)
  2  usage error
  3  conflict: the file changed since it was read (retry), a rollback
     would overwrite a later change (see --force), or the sidecar refused
     an approval (409: the plan is no longer pending or the incident moved on)
  4  I/O error reading or writing the flag file, journal or lock, or the
     sidecar could not be reached
  5  validation error: the flag file or the requested change is invalid
     (including a change the sidecar rejects as invalid)`

// globalFlags are the flags and I/O every command group shares.
type globalFlags struct {
	flagFile string
	output   string
	actor    string
	// The flags in a Kubernetes cluster instead (--feature-flag).
	featureFlag string
	kubeconfig  string
	namespace   string
	// kubeClients overrides the clients built from the flags (tests).
	kubeClients func(kubeconfig, namespace string) (*kubeclient.Clients, error)

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	now    func() time.Time
}

// commands maps full command names ("flags list") to actions.
type commands map[string]func(ctx context.Context) error

func (c commands) add(other commands) {
	for name, action := range other {
		if _, dup := c[name]; dup {
			panic("tailguardctl: command " + name + " registered twice")
		}
		c[name] = action
	}
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) (*kingpin.Application, *globalFlags) {
	g := &globalFlags{stdin: stdin, stdout: stdout, stderr: stderr, now: time.Now}
	app := kingpin.New("tailguardctl", appHelp)
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	app.HelpFlag.Short('h')
	app.Flag("flag-file", "The flagd flag file to operate on.").
		Envar("TAILGUARD_FLAG_FILE").PlaceHolder("PATH").StringVar(&g.flagFile)
	app.Flag("feature-flag", "Operate on the flags of this OpenFeature FeatureFlag resource (and its journal ConfigMap) in a Kubernetes cluster instead of a file.").
		Envar("TAILGUARD_FEATURE_FLAG").PlaceHolder("NAME").StringVar(&g.featureFlag)
	app.Flag("kubeconfig", "With --feature-flag: the kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config).").
		Envar("KUBECONFIG").PlaceHolder("PATH").StringVar(&g.kubeconfig)
	app.Flag("namespace", "With --feature-flag: the namespace (default: the kubeconfig context's or the pod's).").Short('n').
		PlaceHolder("NAMESPACE").StringVar(&g.namespace)
	app.Flag("output", "Output format: text or json.").Short('o').
		Default("text").EnumVar(&g.output, "text", "json")
	app.Flag("actor", `Who makes changes: "operator:<name>" or "controller".`).
		Default(defaultActor()).StringVar(&g.actor)
	return app, g
}

func defaultActor() string {
	name := os.Getenv("USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	if name == "" {
		name = "unknown"
	}
	return flags.ActorOperatorPrefix + name
}

// terminated carries kingpin's requested exit status (after --help) out
// of Parse without exiting the process.
type terminated int

func execute(app *kingpin.Application, g *globalFlags, cmds commands, args []string) (code int) {
	defer func() {
		if r := recover(); r != nil {
			t, ok := r.(terminated)
			if !ok {
				panic(r)
			}
			code = int(t)
		}
	}()
	app.Terminate(func(status int) { panic(terminated(status)) })
	if len(args) == 0 {
		app.UsageWriter(g.stderr)
		app.Usage(nil)
		return exitUsage
	}
	selected, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(g.stderr, "%s: error: %v, try --help\n", app.Name, err)
		return exitUsage
	}
	action, ok := cmds[selected]
	if !ok {
		fmt.Fprintf(g.stderr, "%s: error: command %q is not implemented\n", app.Name, selected)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := action(ctx); err != nil {
		if !errors.Is(err, errReported) {
			fmt.Fprintf(g.stderr, "%s: error: %v\n", app.Name, err)
		}
		return exitCode(err)
	}
	return exitOK
}

// usageError marks a command-line mistake found after parsing.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// errReported wraps errors whose details were already printed (as part of
// the command's output); execute then prints nothing more.
var errReported = errors.New("reported")

type reportedError struct{ err error }

func (e reportedError) Error() string { return e.err.Error() }
func (e reportedError) Unwrap() []error {
	return []error{e.err, errReported}
}

// exitCoder is an error that knows its exit code (for example an answer
// of the sidecar's API).
type exitCoder interface{ ExitCode() int }

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	var ue usageError
	var ec exitCoder
	var pe *fs.PathError
	var le *os.LinkError
	var se *os.SyscallError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ec):
		return ec.ExitCode()
	case errors.Is(err, flags.ErrConflict):
		return exitConflict
	case errors.Is(err, flags.ErrInvalid):
		return exitInvalid
	case errors.As(err, &pe), errors.As(err, &le), errors.As(err, &se):
		return exitIO
	default:
		return exitError
	}
}

// store opens the flag file named by --flag-file, or the FeatureFlag named
// by --feature-flag.
func (g *globalFlags) store() (*flags.Store, error) {
	switch {
	case g.featureFlag != "" && g.flagFile != "":
		return nil, usagef("choose one of --flag-file and --feature-flag")
	case g.featureFlag != "":
		build := g.kubeClients
		if build == nil {
			build = func(kubeconfig, namespace string) (*kubeclient.Clients, error) {
				rc, ns, err := kubeclient.Load(kubeconfig, namespace)
				if err != nil {
					return nil, err
				}
				return kubeclient.New(rc, ns)
			}
		}
		c, err := build(g.kubeconfig, g.namespace)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: %w", err)
		}
		s, _, err := kube.NewStore(kube.Config{Dynamic: c.Dynamic, Namespace: c.Namespace, Name: g.featureFlag, FieldManager: "tailguardctl"}, nil, g.now)
		return s, err
	case g.flagFile == "":
		return nil, usagef("--flag-file (or TAILGUARD_FLAG_FILE), or --feature-flag, is required")
	}
	return flags.NewStore(flags.StoreConfig{Path: g.flagFile, Now: g.now})
}

// json reports whether machine-readable output was requested.
func (g *globalFlags) json() bool { return g.output == "json" }

// printJSON writes v as indented JSON.
func (g *globalFlags) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// print writes v as JSON with -o json, or calls text otherwise.
func (g *globalFlags) print(v any, text func(w io.Writer) error) error {
	if g.json() {
		return g.printJSON(v)
	}
	return text(g.stdout)
}
