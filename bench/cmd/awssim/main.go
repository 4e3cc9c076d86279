// Command awssim runs the contention simulation of "Exponential Backoff And
// Jitter" (AWS Architecture Blog, 2015) with the strategies of package
// backoff and prints the work (writes) and completion time of every strategy
// for 10 to 190 clients, then compares the 100-client results with the
// published figures. It exits with status 1 if a figure deviates by more
// than -tolerance.
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"time"

	"github.com/tailguard/tailguard/bench/awssim"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "awssim:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	p := awssim.DefaultParams()
	fs := flag.NewFlagSet("awssim", flag.ContinueOnError)
	fs.IntVar(&p.Trials, "trials", p.Trials, "trials averaged per point")
	fs.Uint64Var(&p.Seed, "seed", p.Seed, "random seed")
	from := fs.Int("from", 10, "smallest client count")
	to := fs.Int("to", 190, "largest client count")
	step := fs.Int("step", 10, "client count step")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "parallel simulations")
	tolerance := fs.Float64("tolerance", 0.05, "largest accepted relative deviation from the published figures at 100 clients")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *step < 1 || *from < 1 || *to < *from {
		return fmt.Errorf("client range: need 1 ≤ from ≤ to and step ≥ 1, got from %d, to %d, step %d", *from, *to, *step)
	}
	var clients []int
	for n := *from; n <= *to; n += *step {
		clients = append(clients, n)
	}
	strategies, err := awssim.Strategies(p)
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := awssim.Sweep(p, strategies, clients, *workers)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Contention simulation after \"Exponential Backoff And Jitter\" (AWS Architecture Blog, 2015)\n")
	fmt.Fprintf(out, "%d trials per point, seed %d, network |N(%v, %v)|, base %v, cap %v; simulated in %v\n\n",
		p.Trials, p.Seed, p.NetMean, p.NetStdDev, p.Base, p.Cap, time.Since(start).Round(time.Millisecond))

	header := func(title string) {
		fmt.Fprintf(out, "%s\n%7s", title, "clients")
		for _, s := range strategies {
			fmt.Fprintf(out, " %13s", s.Name)
		}
		fmt.Fprintln(out)
	}
	header("Work: writes per trial (mean)")
	for ci, n := range clients {
		fmt.Fprintf(out, "%7d", n)
		for _, r := range res[ci] {
			fmt.Fprintf(out, " %13.1f", r.Calls)
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintln(out)
	header("Completion time (mean)")
	for ci, n := range clients {
		fmt.Fprintf(out, "%7d", n)
		for _, r := range res[ci] {
			fmt.Fprintf(out, " %13s", fmtDuration(r.Time))
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintln(out)

	ci := -1
	for i, n := range clients {
		if n == awssim.PublishedClients {
			ci = i
		}
	}
	if ci < 0 {
		r, err := sweepOne(p, strategies, *workers)
		if err != nil {
			return err
		}
		res, ci = append(res, r), len(res)
	}
	fmt.Fprintf(out, "At %d clients, ours vs published\n", awssim.PublishedClients)
	fmt.Fprintf(out, "%-13s %10s %10s %8s   %10s %10s %8s\n", "strategy", "calls", "published", "dev", "time", "published", "dev")
	worst, worstName := 0.0, ""
	for _, r := range res[ci] {
		d, ok := awssim.Compare(r)
		if !ok {
			continue
		}
		f := awssim.Published[r.Strategy]
		fmt.Fprintf(out, "%-13s %10.1f %10s %8s   %10s %10s %8s\n", r.Strategy,
			r.Calls, fmtFloat(f.Calls), fmtDev(d.Calls), fmtDuration(r.Time), fmtDuration(f.Time), fmtDev(d.Time))
		if d.Worst() > worst {
			worst, worstName = d.Worst(), r.Strategy
		}
	}
	fmt.Fprintf(out, "\nlargest deviation: %.1f%% (%s), tolerance %.1f%%\n", 100*worst, worstName, 100**tolerance)
	if worst > *tolerance {
		return fmt.Errorf("deviation %.1f%% of %s exceeds the tolerance %.1f%%", 100*worst, worstName, 100**tolerance)
	}
	return nil
}

func sweepOne(p awssim.Params, strategies []awssim.Strategy, workers int) ([]awssim.Result, error) {
	res, err := awssim.Sweep(p, strategies, []int{awssim.PublishedClients}, workers)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

func fmtDuration(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func fmtFloat(f float64) string {
	if f == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", f)
}

func fmtDev(d float64) string {
	if math.IsNaN(d) {
		return "-"
	}
	s := fmt.Sprintf("%+.1f%%", 100*d)
	if s == "+0.0%" || s == "-0.0%" {
		return "0.0%"
	}
	return s
}
