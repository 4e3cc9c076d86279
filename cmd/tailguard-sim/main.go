// Command tailguard-sim runs tailguard's closed loop against a simulated
// service in virtual time, on an embedded Prometheus, with no network and
// no external server.
//
//	tailguard-sim demo               the design story, with a timeline and an HTML report
//	tailguard-sim bench              every scenario, tailguard and the baselines, one table
//	tailguard-sim sweep              drawn scenarios of every situation class, one row per class
//	tailguard-sim run SCENARIO       one scenario
//	tailguard-sim list               the scenarios
//
// The scenarios are embedded; --scenario-dir reads them from a directory
// instead.
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
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/tailguard/tailguard/sim"
	"github.com/tailguard/tailguard/sim/report"
	"github.com/tailguard/tailguard/sim/scenarios"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const appHelp = `Run tailguard's closed loop against a simulated service in virtual time.

The service "shop" (/checkout calls the third-party "payments" with retries
through tailguard's backoff package, /search does not) runs request by
request on several pods that read their backoff strategy from a real flag
file through the OpenFeature provider; its metrics are scraped into an
embedded Prometheus, which tailguard and the baselines query. Hours of
virtual time take seconds.`

// options are the flags every command shares.
type options struct {
	seed   uint64
	dir    string
	output string
	sync   time.Duration
	stdout io.Writer
	stderr io.Writer
}

func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("tailguard-sim", appHelp)
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	app.Terminate(nil)
	o := &options{stdout: stdout, stderr: stderr}
	app.Flag("seed", "Seed of every random stream (default: each scenario's own).").Uint64Var(&o.seed)
	app.Flag("scenario-dir", "Read scenarios from this directory instead of the embedded ones.").PlaceHolder("DIR").StringVar(&o.dir)
	app.Flag("output", "Output format: text or json.").Short('o').Default("text").EnumVar(&o.output, "text", "json")
	app.Flag("sync-timeout", "How long to wait (real time) for the pods' flag provider to load a flag change before failing the run.").
		Default("2s").DurationVar(&o.sync)

	demo := app.Command("demo", "Run the design story: timeline, outcome, HTML report.")
	demoReport := demo.Flag("report", "Where to write the HTML report (empty: none).").Default("tailguard-demo.html").String()
	demoName := demo.Flag("scenario", "Scenario to tell.").Default("story").String()

	bench := app.Command("bench", "Run every scenario with tailguard and the baselines and print one table.")
	benchOnly := bench.Flag("scenario", "Run only this scenario (repeatable).").Strings()

	sweep := app.Command("sweep", "Draw scenarios of each situation class from parameter ranges, run tailguard on them and print one row per class.")
	sweepClasses := sweep.Flag("class", "Run only this class (repeatable); see --list.").Strings()
	sweepDraws := sweep.Flag("seeds", "Draws per class.").Default("20").Int()
	sweepWrite := sweep.Flag("write", "Also write the drawn scenarios as YAML into this directory.").PlaceHolder("DIR").String()
	sweepList := sweep.Flag("list", "List the classes and exit.").Bool()

	one := app.Command("run", "Run one scenario with tailguard and the baselines.")
	oneName := one.Arg("scenario", "Scenario name.").Required().String()
	oneReport := one.Flag("report", "Also write an HTML report here.").String()

	app.Command("list", "List the scenarios.")

	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "tailguard-sim: %v\n", err)
		return 2
	}
	if cmd == "" { // --help or --version handled by kingpin
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "demo":
		err = o.demo(ctx, *demoName, *demoReport)
	case "bench":
		err = o.bench(ctx, *benchOnly)
	case "sweep":
		err = o.sweep(ctx, sweepOptions{classes: *sweepClasses, draws: *sweepDraws, write: *sweepWrite, list: *sweepList})
	case "run":
		err = o.runOne(ctx, *oneName, *oneReport)
	case "list":
		err = o.list()
	}
	if err != nil {
		fmt.Fprintf(stderr, "tailguard-sim: %v\n", err)
		return 1
	}
	return 0
}

func (o *options) fs() fs.FS {
	if o.dir != "" {
		return os.DirFS(o.dir)
	}
	return scenarios.FS()
}

// load reads the named scenarios, or all of them: from --scenario-dir
// (where policy and detector files may lie outside the directory) or the
// embedded ones.
func (o *options) load(names ...string) ([]*sim.Scenario, error) {
	fsys := o.fs()
	if len(names) == 0 {
		var err error
		if names, err = sim.ListScenarios(fsys); err != nil {
			return nil, err
		}
		if len(names) == 0 {
			return nil, errors.New("no scenarios found")
		}
	}
	var out []*sim.Scenario
	for _, n := range names {
		var sc *sim.Scenario
		var err error
		if o.dir != "" {
			sc, err = sim.LoadScenarioFile(filepath.Join(o.dir, strings.TrimSuffix(n, ".yml")+".yml"))
		} else {
			sc, err = sim.LoadScenario(fsys, n)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// runScenarios runs the named scenarios (all without names) with tailguard
// and the baselines, and measures the run's CPU time and peak memory.
func (o *options) runScenarios(ctx context.Context, names ...string) ([]sim.ScenarioResult, usageReport, error) {
	scs, err := o.load(names...)
	if err != nil {
		return nil, usageReport{}, err
	}
	began, ru0 := time.Now(), rusage()
	results, err := sim.RunScenarios(ctx, scs, sim.BenchOptions{Seed: o.seed, NewCycler: newLoopCycler, Options: sim.Options{SyncTimeout: o.sync}})
	if err != nil {
		return nil, usageReport{}, err
	}
	return results, resources(began, ru0), nil
}

func (o *options) demo(ctx context.Context, name, reportPath string) error {
	results, usage, err := o.runScenarios(ctx, name)
	if err != nil {
		return err
	}
	r := results[0]
	if o.output == "json" {
		return writeJSON(o.stdout, r)
	}
	if err := report.Timeline(o.stdout, r.Scenario, report.Primary(r)); err != nil {
		return err
	}
	if err := report.Summary(o.stdout, r); err != nil {
		return err
	}
	if reportPath != "" {
		if err := writeReport(reportPath, r, usage); err != nil {
			return err
		}
		fmt.Fprintf(o.stdout, "\nHTML report: %s\n", reportPath)
	}
	fmt.Fprintf(o.stdout, "%s\n", usage)
	return nil
}

func (o *options) bench(ctx context.Context, only []string) error {
	results, usage, err := o.runScenarios(ctx, only...)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeJSON(o.stdout, struct {
			Results []sim.ScenarioResult `json:"results"`
			Usage   usageReport          `json:"usage"`
		}{results, usage})
	}
	if err := report.Table(o.stdout, results); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "\n%s\n", usage)
	return nil
}

func (o *options) runOne(ctx context.Context, name, reportPath string) error {
	results, usage, err := o.runScenarios(ctx, name)
	if err != nil {
		return err
	}
	r := results[0]
	if reportPath != "" {
		if err := writeReport(reportPath, r, usage); err != nil {
			return err
		}
	}
	if o.output == "json" {
		return writeJSON(o.stdout, r)
	}
	if err := report.Timeline(o.stdout, r.Scenario, report.Primary(r)); err != nil {
		return err
	}
	if err := report.Summary(o.stdout, r); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "\n%s\n", usage)
	return nil
}

func (o *options) list() error {
	scs, err := o.load()
	if err != nil {
		return err
	}
	for _, sc := range scs {
		truth := "no regression"
		if sc.Truth.Regression {
			truth = "regression: " + fmt.Sprint(sc.Truth.Causes)
		}
		fmt.Fprintf(o.stdout, "%-18s %-8s %s\n", sc.Name, sc.Duration, truth)
	}
	return nil
}

func writeReport(path string, r sim.ScenarioResult, usage usageReport) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create report: %w", err)
	}
	if err := report.HTML(f, r, usage.String()); err != nil {
		f.Close()
		return fmt.Errorf("write report: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
