// Command tailguard is the sidecar: it watches a service's tail latency
// and retries in Prometheus around changes, attributes regressions to the
// change that caused them, and tunes backoff constants or the rollout of
// the flag gating a new retry strategy within declared bounds, verifying
// and journaling every action.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	rungroup "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/tailguard/tailguard/sidecar"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run parses args and runs the sidecar until a signal stops it; it returns
// the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("tailguard", `The tailguard sidecar.

Queries Prometheus for the SLIs and signals of the services in its
configuration, detects regressions after changes (build_info versions, flag
changes, declared upgrades), attributes them, and acts within the bounds of
the policy file: tunes backoff constants, shrinks or flips the rollout of the
flag gating the new strategy, verifies, and escalates. Every flag write is
journaled next to the flag file and can be rolled back with tailguardctl.

Endpoints: / (status page), /metrics, /-/healthy, /-/ready, /-/reload,
/api/v1/alerts (Alertmanager webhook), /api/v1/changes, /api/v1/findings,
/api/v1/incidents, /api/v1/incidents/{id}/approve, /api/v1/plans,
/api/v1/evaluate.

SIGHUP or POST /-/reload reloads the configuration; a bad one is refused and
the previous one keeps running (tailguard_config_last_reload_successful).`)
	app.Version(version.Print("tailguard"))
	app.HelpFlag.Short('h')
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	configFile := app.Flag("config.file", "The sidecar's configuration file.").Default("tailguard.yml").String()
	actor := app.Flag("actor", "Name of this replica in decisions and logs, e.g. the pod name.").Envar("POD_NAME").Default("tailguard").String()
	cycleTimeout := app.Flag("cycle.timeout", "Longest time one control cycle (including its flag write) may take; a shutdown waits for the cycle in flight at most this long.").Default("2m").Duration()
	webFlags := kingpinflag.AddFlags(app, ":9099")
	logCfg := &promslog.Config{}
	promslogflag.AddFlags(app, logCfg)
	// --help and --version end the program through Terminate: return
	// their exit code from run instead of exiting deep inside kingpin.
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
		fmt.Fprintf(stderr, "tailguard: %v (see --help)\n", err)
		return 2
	}
	logCfg.Writer = stderr
	logger := promslog.New(logCfg)
	logger.Info("starting tailguard", "version", version.Info(), "build_context", version.BuildContext())

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector("tailguard"),
	)
	if err := serve(logger, reg, *configFile, *actor, *cycleTimeout, webFlags); err != nil {
		logger.Error("tailguard stopped", "err", err)
		return 1
	}
	logger.Info("tailguard stopped")
	return 0
}

func serve(logger *slog.Logger, reg *prometheus.Registry, configFile, actor string, cycleTimeout time.Duration, webFlags *web.FlagConfig) error {
	// Tracing is set up from the configuration at start; a reload does not
	// change it.
	cfg, err := sidecar.LoadConfig(configFile)
	if err != nil {
		return err
	}
	tp, shutdownTracing, err := tracerProvider(cfg.Tracing)
	if err != nil {
		return err
	}
	defer shutdownTracing()

	d, err := sidecar.New(sidecar.Options{
		ConfigFile: configFile, Registerer: reg, Gatherer: reg, Logger: logger,
		TracerProvider: tp, Actor: actor, Version: version.Version, CycleTimeout: cycleTimeout,
	})
	if err != nil {
		return err
	}

	var g rungroup.Group
	{
		// Signals: SIGTERM and SIGINT stop, SIGHUP reloads.
		term := make(chan os.Signal, 1)
		hup := make(chan os.Signal, 1)
		signal.Notify(term, os.Interrupt, syscall.SIGTERM)
		signal.Notify(hup, syscall.SIGHUP)
		cancel := make(chan struct{})
		g.Add(func() error {
			for {
				select {
				case s := <-term:
					logger.Info("received signal, exiting gracefully", "signal", s.String())
					return nil
				case <-hup:
					_ = d.Reload()
				case <-cancel:
					return nil
				}
			}
		}, func(error) {
			signal.Stop(term)
			signal.Stop(hup)
			close(cancel)
		})
	}
	{
		// The control loop, with the webhook intake. It finishes the cycle
		// in flight (and so any flag write) before returning.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return d.Run(ctx) }, func(error) { cancel() })
	}
	{
		srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
		g.Add(func() error {
			if err := web.ListenAndServe(srv, webFlags, logger); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("web server: %w", err)
			}
			return nil
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		})
	}
	return g.Run()
}

// tracerProvider exports a trace per cycle over OTLP/HTTP when tracing is
// configured, and traces nothing otherwise.
func tracerProvider(cfg *sidecar.TracingConfig) (trace.TracerProvider, func(), error) {
	if cfg == nil {
		return nil, func() {}, nil
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(cfg.Endpoint)}
	if cfg.Insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	if len(cfg.Headers) > 0 {
		opts = append(opts, otlptracehttp.WithHeaders(cfg.Headers))
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("tailguard"), semconv.ServiceVersion(version.Version)))
	if err != nil {
		return nil, nil, fmt.Errorf("tracing resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	)
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(ctx)
	}, nil
}
