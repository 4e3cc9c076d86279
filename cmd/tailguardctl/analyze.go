package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/detector/promapi"
)

const analyzeHelp = `Analyse a service's signals around its changes.

Queries Prometheus for the signals declared in --config (tail latency,
retry ratio, error ratio per slice), compares the monitored window with the
baseline before it with a sequential test, and ranks the changes found
(build info versions, flag journal, declared manifests) as causes of every
regression. Prints a report, or the full findings with -o json.

Examples:
  tailguardctl analyze --prometheus.url=http://prometheus:9090 --config=detector.yml --since=2h
  tailguardctl analyze --prometheus.url=http://prometheus:9090 --config=detector.yml --change=backoff-strategy`

// analyzeCmd is the "analyze" command.
type analyzeCmd struct {
	promURL        string
	httpConfigFile string
	configFile     string
	since          model.Duration
	change         string
	until          string
	service        string
	exitCode       bool
	now            func() time.Time
}

// registerAnalyze declares the analyze command and its flags on app. The
// output format (-o) is the application's global flag, passed to run.
func registerAnalyze(app *kingpin.Application) *analyzeCmd {
	c := &analyzeCmd{now: time.Now}
	cmd := app.Command("analyze", analyzeHelp)
	cmd.Flag("prometheus.url", "Prometheus base URL.").Envar("TAILGUARD_PROMETHEUS_URL").
		PlaceHolder("URL").Required().StringVar(&c.promURL)
	cmd.Flag("http.config.file", "HTTP client configuration for Prometheus (basic auth, authorization, TLS, proxy), in Prometheus' http_config format.").
		PlaceHolder("PATH").StringVar(&c.httpConfigFile)
	cmd.Flag("config", "Detector configuration: signals, change sources, statistics.").
		Envar("TAILGUARD_DETECTOR_CONFIG").PlaceHolder("PATH").Required().StringVar(&c.configFile)
	cmd.Flag("since", "Monitor the window that starts this long before --until (e.g. 2h).").
		PlaceHolder("DURATION").SetValue(&c.since)
	cmd.Flag("change", "Monitor from the time of this change: its id, or a component or flag key (latest change).").
		PlaceHolder("CHANGE").StringVar(&c.change)
	cmd.Flag("until", "End of the monitored window, RFC 3339 or Unix seconds (default: now).").
		PlaceHolder("TIME").StringVar(&c.until)
	cmd.Flag("service", "Service name, overriding the configuration's.").StringVar(&c.service)
	cmd.Flag("exit-code", "Exit with status 1 when a regression is found.").BoolVar(&c.exitCode)
	return c
}

// errRegressions is returned with --exit-code when regressions are found.
var errRegressions = errors.New("regressions found")

// run performs the analysis and writes the report to stdout in output
// format ("text" or "json").
func (c *analyzeCmd) run(ctx context.Context, stdout io.Writer, output string) error {
	if output != "text" && output != "json" {
		return fmt.Errorf("output format %q: want text or json", output)
	}
	if (c.since == 0) == (c.change == "") {
		return errors.New("analyze: exactly one of --since and --change is required")
	}
	if c.since < 0 {
		return fmt.Errorf("analyze: --since %s must be positive", c.since)
	}
	to := c.now()
	if c.until != "" {
		t, err := parseAnalyzeTime(c.until)
		if err != nil {
			return fmt.Errorf("analyze: --until: %w", err)
		}
		to = t
	}
	cfg, err := detector.LoadConfig(c.configFile)
	if err != nil {
		return err
	}
	if c.service != "" {
		cfg.Service = c.service
	}
	var hc config.HTTPClientConfig
	if c.httpConfigFile != "" {
		if hc, err = promapi.LoadHTTPConfigFile(c.httpConfigFile); err != nil {
			return err
		}
	}
	client, err := promapi.New(promapi.Config{URL: c.promURL, HTTPClientConfig: hc, Timeout: time.Duration(cfg.QueryTimeout)})
	if err != nil {
		return err
	}
	src, err := detector.NewChangeSource(cfg, client)
	if err != nil {
		return err
	}
	d, err := detector.New(cfg, client, src)
	if err != nil {
		return err
	}
	req := detector.Request{To: to, Change: c.change}
	if c.since > 0 {
		req.From = to.Add(-time.Duration(c.since))
	}
	rep, err := d.Analyze(ctx, req)
	if err != nil {
		return err
	}
	if output == "json" {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if c.exitCode && rep.Summary.Regressed > 0 {
		return fmt.Errorf("%d slice(s) regressed: %w", rep.Summary.Regressed, errRegressions)
	}
	return nil
}

// parseAnalyzeTime accepts RFC 3339 or Unix seconds (with fraction).
func parseAnalyzeTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 or Unix seconds", s)
	}
	return time.UnixMilli(int64(f * 1000)).UTC(), nil
}

// registerAnalyzeGroup adds the analyze command to the ops CLI.
func registerAnalyzeGroup(app *kingpin.Application, g *globalFlags) commands {
	ac := registerAnalyze(app)
	return commands{"analyze": func(ctx context.Context) error { return ac.run(ctx, g.stdout, g.output) }}
}
