// Command shopd is the example service "shop" of tailguard's demo story,
// as a real, instrumented process: the service tailguard watches in the
// end-to-end tests and in demos against a real Prometheus.
//
// It serves two endpoints:
//
//   - /checkout calls the third-party upstream "payments" (a fake served by
//     shopd itself on a second listener) through a backoff.Retrier whose
//     strategy and constants come from the backoff-strategy and
//     backoff-constants flags of a flagd flag file, read with tailguard's
//     OpenFeature provider and bound with backoff/flagbind: a change of the
//     file changes the retries within about a second;
//   - /search calls nothing.
//
// Both do a little work of their own first (a base latency, uniform jitter
// and a rare slow path), and payments fails transiently with a
// configurable probability after a configurable latency, so that the effect
// of a retry strategy on the tail latency of /checkout shows within
// seconds.
//
// /metrics exports the metrics of tailguard's catalogue (docs/metrics.md):
// http_request_duration_seconds{endpoint,strategy,version} (classic buckets
// including the SLO threshold 0.4, and native buckets),
// http_requests_total{endpoint,code}, the backoff_* retry and policy
// metrics, and dten_gateway_build_info{version}.
//
// With --load.checkout-rps and --load.search-rps shopd also sends itself
// open-loop traffic, so a test needs no load generator of its own.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run parses args and serves until SIGINT or SIGTERM; it returns the exit
// code.
func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("shopd", `The example service "shop": /checkout calls the payments upstream with
retries governed by the backoff-strategy and backoff-constants flags of a
flagd flag file; /search calls nothing. /metrics exports the request,
retry, policy and build info metrics tailguard reads.`)
	app.HelpFlag.Short('h')
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	cfg := defaultConfig()
	app.Flag("web.listen-address", "Address of the shop's HTTP server (/checkout, /search, /metrics, /-/healthy, /-/ready).").
		Default(cfg.ListenAddress).StringVar(&cfg.ListenAddress)
	app.Flag("flags.file", "The flagd flag file holding backoff-strategy and backoff-constants.").
		Required().StringVar(&cfg.FlagFile)
	app.Flag("flags.instance-id", "Targeting key of this instance in fractional rollouts.").
		Default(cfg.InstanceID).StringVar(&cfg.InstanceID)
	app.Flag("version", "Version exported as dten_gateway_build_info{version} and on every request histogram series.").
		Default(cfg.Version).StringVar(&cfg.Version)
	app.Flag("payments.listen-address", "Address of the fake payments upstream.").
		Default(cfg.Payments.ListenAddress).StringVar(&cfg.Payments.ListenAddress)
	app.Flag("payments.latency", "Latency of one payments attempt.").
		Default(cfg.Payments.Latency.String()).DurationVar(&cfg.Payments.Latency)
	app.Flag("payments.failure-ratio", "Probability that a payments attempt fails transiently (503).").
		Default(fmt.Sprint(cfg.Payments.FailureRatio)).Float64Var(&cfg.Payments.FailureRatio)
	app.Flag("latency.base", "Own work of every request.").
		Default(cfg.Work.Base.String()).DurationVar(&cfg.Work.Base)
	app.Flag("latency.jitter", "Uniform extra own work, from 0 to this.").
		Default(cfg.Work.Jitter.String()).DurationVar(&cfg.Work.Jitter)
	app.Flag("latency.slow-ratio", "Fraction of requests that take the slow path.").
		Default(fmt.Sprint(cfg.Work.SlowRatio)).Float64Var(&cfg.Work.SlowRatio)
	app.Flag("latency.slow", "Extra latency of the slow path.").
		Default(cfg.Work.Slow.String()).DurationVar(&cfg.Work.Slow)
	app.Flag("latency.slow-jitter", "Uniform extra latency of the slow path, from 0 to this.").
		Default(cfg.Work.SlowJitter.String()).DurationVar(&cfg.Work.SlowJitter)
	app.Flag("histograms", "Forms of http_request_duration_seconds to export: classic+native (both) or native (native buckets only, as a service that has dropped classic buckets).").
		Default(cfg.Histograms).EnumVar(&cfg.Histograms, histogramsBoth, histogramsNative)
	app.Flag("load.checkout-rps", "Requests per second shopd sends to its own /checkout (0: none).").
		Default("0").Float64Var(&cfg.Load.CheckoutRPS)
	app.Flag("load.search-rps", "Requests per second shopd sends to its own /search (0: none).").
		Default("0").Float64Var(&cfg.Load.SearchRPS)
	logCfg := &promslog.Config{}
	promslogflag.AddFlags(app, logCfg)
	// --help and --version end the program through Terminate: return their
	// status instead of exiting, so run stays testable.
	terminated := -1
	app.Terminate(func(code int) {
		if terminated < 0 {
			terminated = code
		}
	})
	_, err := app.Parse(args)
	if terminated >= 0 {
		return terminated
	}
	if err != nil {
		fmt.Fprintf(stderr, "shopd: %v (see --help)\n", err)
		return 2
	}
	logCfg.Writer = stderr
	logger := promslog.New(logCfg)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := newShop(ctx, cfg, logger)
	if err != nil {
		logger.Error("shopd: start", "err", err)
		return 1
	}
	logger.Info("shopd serving", "address", s.Addr(), "payments", s.PaymentsAddr(), "flag_file", cfg.FlagFile, "version", cfg.Version)
	err = s.Run(ctx)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if cerr := s.Close(sctx); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		logger.Error("shopd stopped", "err", err)
		return 1
	}
	logger.Info("shopd stopped")
	return 0
}
