package main

import (
	"context"
	"io"
	"net/http"
	"time"
)

// maxRPS bounds the load shopd sends itself.
const maxRPS = 1000

// maxInFlight bounds the load generator's concurrent requests per endpoint:
// ticks beyond it are skipped rather than queued, so a slow service is not
// buried under a backlog.
const maxInFlight = 2000

// generate sends GET url rps times a second, open loop (the rate does not
// depend on how fast the service answers, as with real users), until ctx
// ends. Responses are read and discarded; the service's own metrics record
// them.
func generate(ctx context.Context, c *http.Client, url string, rps float64) {
	client := &http.Client{Transport: c.Transport, Timeout: time.Minute}
	interval := time.Duration(float64(time.Second) / rps)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	slots := make(chan struct{}, maxInFlight)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			continue
		}
		go func() {
			defer func() { <-slots }()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
}
