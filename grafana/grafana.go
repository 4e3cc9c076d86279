// Package grafana posts annotations to Grafana's HTTP API, so that every
// action tailguard takes shows up on the dashboards next to the signal it
// changed.
//
// Only the annotations endpoint is used (POST /api/annotations); the client
// authenticates with a service-account token (Bearer) or basic auth.
package grafana

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Config configures an Annotator.
type Config struct {
	// URL is Grafana's base URL, e.g. http://grafana:3000.
	URL string
	// Token is a service-account token sent as a Bearer token.
	Token string
	// Username and Password are used for basic auth when Token is empty.
	Username, Password string
	// DashboardUID optionally ties annotations to one dashboard; empty makes
	// them organisation-wide, visible to every dashboard that queries the tags.
	DashboardUID string
	// Tags are added to every annotation; "tailguard" is always added.
	Tags []string
	// Timeout bounds one request; 0 means 10s.
	Timeout time.Duration
	// Client is the HTTP client to use; nil means a new one with Timeout.
	Client *http.Client
}

// Annotation is one event to mark.
type Annotation struct {
	Time    time.Time
	TimeEnd time.Time // optional, for a region
	Text    string
	Tags    []string
}

// Annotator posts annotations.
type Annotator struct {
	endpoint string
	cfg      Config
	client   *http.Client
}

// New validates cfg and returns an Annotator.
func New(cfg Config) (*Annotator, error) {
	if cfg.URL == "" {
		return nil, errors.New("grafana url: empty")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("grafana url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("grafana url: scheme must be http or https, got %q", u.Scheme)
	}
	if cfg.Token != "" && cfg.Username != "" {
		return nil, errors.New("grafana auth: set either token or username/password, not both")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("grafana timeout: must be ≥ 0, got %s", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	c := cfg.Client
	if c == nil {
		c = &http.Client{Timeout: cfg.Timeout}
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/annotations"
	return &Annotator{endpoint: u.String(), cfg: cfg, client: c}, nil
}

type request struct {
	DashboardUID string   `json:"dashboardUID,omitempty"`
	Time         int64    `json:"time"`
	TimeEnd      int64    `json:"timeEnd,omitempty"`
	Tags         []string `json:"tags"`
	Text         string   `json:"text"`
}

type response struct {
	ID      int64  `json:"id"`
	Message string `json:"message"`
}

// Annotate posts a and returns the id Grafana gave it.
func (a *Annotator) Annotate(ctx context.Context, an Annotation) (int64, error) {
	if an.Time.IsZero() {
		return 0, errors.New("annotation time: zero")
	}
	if an.Text == "" {
		return 0, errors.New("annotation text: empty")
	}
	tags := append([]string{"tailguard"}, a.cfg.Tags...)
	tags = append(tags, an.Tags...)
	body := request{DashboardUID: a.cfg.DashboardUID, Time: an.Time.UnixMilli(), Tags: dedup(tags), Text: an.Text}
	if !an.TimeEnd.IsZero() {
		body.TimeEnd = an.TimeEnd.UnixMilli()
	}
	b, err := json.Marshal(body)
	if err != nil {
		return 0, fmt.Errorf("encode annotation: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.endpoint, bytes.NewReader(b))
	if err != nil {
		return 0, fmt.Errorf("build annotation request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	switch {
	case a.cfg.Token != "":
		req.Header.Set("Authorization", "Bearer "+a.cfg.Token)
	case a.cfg.Username != "":
		req.SetBasicAuth(a.cfg.Username, a.cfg.Password)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post annotation: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, fmt.Errorf("read annotation response: %w", err)
	}
	var r response
	_ = json.Unmarshal(raw, &r) // the body is informational on errors
	if resp.StatusCode/100 != 2 {
		msg := r.Message
		if msg == "" {
			msg = strings.TrimSpace(string(raw))
		}
		return 0, fmt.Errorf("post annotation: grafana answered %s: %s", resp.Status, msg)
	}
	return r.ID, nil
}

func dedup(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := ss[:0]
	for _, s := range ss {
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}
