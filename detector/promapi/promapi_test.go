package promapi

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

const (
	vectorBody = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"shop"},"value":[1740823200,"42"]}]},"warnings":["partial"]}`
	matrixBody = `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1740823200,"1"],[1740823260,"2"]]}]}}`
)

// server answers like Prometheus after checking the credentials and
// recording the parameters it received.
func server(t *testing.T, check func(r *http.Request) bool, got *[]string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !check(r) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		*got = append(*got, r.URL.Path+" "+r.Form.Encode())
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/prom/api/v1/query":
			_, _ = w.Write([]byte(vectorBody))
		case "/prom/api/v1/query_range":
			_, _ = w.Write([]byte(matrixBody))
		default:
			http.NotFound(w, r)
		}
	})
}

func TestClientAuthAndQueries(t *testing.T) {
	ts := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		cfg   config.HTTPClientConfig
		check func(r *http.Request) bool
	}{
		{"none", config.HTTPClientConfig{}, func(*http.Request) bool { return true }},
		{
			"basic auth",
			config.HTTPClientConfig{BasicAuth: &config.BasicAuth{Username: "tg", Password: "secret"}},
			func(r *http.Request) bool { u, p, ok := r.BasicAuth(); return ok && u == "tg" && p == "secret" },
		},
		{
			"bearer",
			config.HTTPClientConfig{Authorization: &config.Authorization{Type: "Bearer", Credentials: "tok"}},
			func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer tok" },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			srv := httptest.NewServer(server(t, tc.check, &got))
			defer srv.Close()
			reg := prometheus.NewRegistry()
			c, err := New(Config{URL: srv.URL + "/prom", HTTPClientConfig: tc.cfg, Timeout: 5 * time.Second, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			v, w, err := c.Query(context.Background(), `up{job="shop"}`, ts)
			if err != nil {
				t.Fatal(err)
			}
			if vec, ok := v.(model.Vector); !ok || len(vec) != 1 || vec[0].Value != 42 || len(w) != 1 || w[0] != "partial" {
				t.Errorf("Query = %v %v", v, w)
			}
			v, _, err = c.QueryRange(context.Background(), `sum(rate(x[1m]))`, v1.Range{Start: ts, End: ts.Add(time.Minute), Step: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if m, ok := v.(model.Matrix); !ok || len(m) != 1 || len(m[0].Values) != 2 {
				t.Errorf("QueryRange = %v", v)
			}
			want := []string{
				"/prom/api/v1/query query=up%7Bjob%3D%22shop%22%7D&time=1740823200&timeout=5s",
				"/prom/api/v1/query_range end=1740823260&query=sum%28rate%28x%5B1m%5D%29%29&start=1740823200&step=60&timeout=5s",
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if n := testutil.ToFloat64(c.queries.WithLabelValues("instant")); n != 1 {
				t.Errorf("tailguard_queries_total{kind=instant} = %v", n)
			}
			if n := testutil.ToFloat64(c.errors.WithLabelValues("range")); n != 0 {
				t.Errorf("tailguard_query_errors_total{kind=range} = %v", n)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	var got []string
	srv := httptest.NewServer(server(t, func(*http.Request) bool { return false }, &got))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	c, err := New(Config{URL: srv.URL + "/prom", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Query(context.Background(), "up", time.Now()); err == nil {
		t.Error("401 not reported")
	}
	if n := testutil.ToFloat64(c.errors.WithLabelValues("instant")); n != 1 {
		t.Errorf("errors = %v", n)
	}
	if _, err := New(Config{URL: srv.URL, Registerer: reg}); err == nil {
		t.Error("duplicate registration accepted")
	}
	for _, bad := range []Config{{}, {URL: "ftp://x"}, {URL: "http://"}, {URL: "http://x", Timeout: -1},
		{URL: "http://x", HTTPClientConfig: config.HTTPClientConfig{BasicAuth: &config.BasicAuth{Username: "a"}, BearerToken: "b"}}} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}

func TestClientTLSFromFile(t *testing.T) {
	var got []string
	srv := httptest.NewTLSServer(server(t, func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer from-file" }, &got))
	defer srv.Close()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "http.yml")
	// Relative paths resolve against the file's directory.
	if err := os.WriteFile(cfgPath, []byte("authorization:\n  credentials_file: token\ntls_config:\n  ca_file: ca.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hc, err := LoadHTTPConfigFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{URL: srv.URL + "/prom", HTTPClientConfig: hc})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Query(context.Background(), "up", time.Now()); err != nil {
		t.Fatalf("query over TLS: %v", err)
	}

	// Without the CA the server is not trusted.
	c, err = New(Config{URL: srv.URL + "/prom"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Query(context.Background(), "up", time.Now()); err == nil {
		t.Error("untrusted certificate accepted")
	}
	if err := os.WriteFile(cfgPath, []byte("bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadHTTPConfigFile(cfgPath); err == nil {
		t.Error("unknown field accepted")
	}
}
