package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tailguard/tailguard/sim"
	"github.com/tailguard/tailguard/sim/classes"
	"github.com/tailguard/tailguard/sim/report"
	"github.com/tailguard/tailguard/sim/scenarios"
)

type sweepOptions struct {
	classes []string
	draws   int
	write   string
	list    bool
}

// sweep draws each class's scenarios, runs them and prints the class table.
func (o *options) sweep(ctx context.Context, so sweepOptions) error {
	if so.list {
		for _, c := range classes.All() {
			fmt.Fprintf(o.stdout, "%2d %-22s %s\n", c.Number, c.Name, c.Summary)
		}
		return nil
	}
	if so.draws < 1 {
		return fmt.Errorf("--seeds: %d must be at least 1", so.draws)
	}
	picked := classes.All()
	if len(so.classes) > 0 {
		picked = picked[:0:0]
		for _, n := range so.classes {
			c, ok := classes.ByName(n)
			if !ok {
				return fmt.Errorf("--class: unknown class %q (see --list)", n)
			}
			picked = append(picked, c)
		}
	}
	seed := o.seed
	if seed == 0 {
		seed = 1
	}
	var scs []sim.SweepClass
	for _, c := range picked {
		sc := sim.SweepClass{Name: c.Name, Number: c.Number, Summary: c.Summary}
		for i := range so.draws {
			s, err := c.Draw(seed, i, scenarios.FS())
			if err != nil {
				return err
			}
			sc.Scenarios = append(sc.Scenarios, s)
			if so.write != "" {
				if err := writeScenario(so.write, s); err != nil {
					return err
				}
			}
		}
		scs = append(scs, sc)
	}
	began, ru0 := time.Now(), rusage()
	rows, results, err := sim.Sweep(ctx, scs, sim.BenchOptions{NewCycler: newLoopCycler, Options: sim.Options{SyncTimeout: o.sync}})
	if err != nil {
		return err
	}
	usage := resources(began, ru0)
	if o.output == "json" {
		return writeJSON(o.stdout, struct {
			Classes []sim.ClassRow       `json:"classes"`
			Results []sim.ScenarioResult `json:"results"`
			Usage   usageReport          `json:"usage"`
		}{rows, results, usage})
	}
	if err := report.SweepTable(o.stdout, rows); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "\nsweep seed %d, %d draws per class; %s\n", seed, so.draws, usage)
	return nil
}

// writeScenario writes a drawn scenario where bench --scenario-dir reads
// it (policy and detector files beside it, under tailguard/).
func writeScenario(dir string, sc *sim.Scenario) error {
	b, err := classes.Marshal(sc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "tailguard"), 0o755); err != nil {
		return fmt.Errorf("--write: %w", err)
	}
	for _, f := range []string{"tailguard/policy.yml", "tailguard/detector.yml", "tailguard/detector-native.yml"} {
		data, err := fsRead(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			return fmt.Errorf("--write: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, sc.Name+".yml"), b, 0o644); err != nil {
		return fmt.Errorf("--write: %w", err)
	}
	return nil
}

func fsRead(name string) ([]byte, error) {
	b, err := fs.ReadFile(scenarios.FS(), name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}
