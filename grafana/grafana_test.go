package grafana

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fakeGrafana mimics POST /api/annotations, checking auth like Grafana does.
type fakeGrafana struct {
	t     *testing.T
	token string
	got   []request
}

func (f *fakeGrafana) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/grafana/api/annotations" {
		http.Error(w, `{"message":"Not found"}`, http.StatusNotFound)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"message":"invalid API key"}`))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		http.Error(w, `{"message":"bad content type"}`, http.StatusBadRequest)
		return
	}
	var req request
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, `{"message":"bad json"}`, http.StatusBadRequest)
		return
	}
	f.got = append(f.got, req)
	_, _ = w.Write([]byte(`{"id": 42, "message": "Annotation added"}`))
}

func TestAnnotate(t *testing.T) {
	fg := &fakeGrafana{t: t, token: "glsa_secret"}
	srv := httptest.NewServer(fg)
	defer srv.Close()
	a, err := New(Config{URL: srv.URL + "/grafana/", Token: "glsa_secret", DashboardUID: "tailguard-service", Tags: []string{"shop", "tailguard"}})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 10, 36, 0, 0, time.UTC)
	id, err := a.Annotate(context.Background(), Annotation{Time: at, Text: "tune: cap 2s → 800ms (inc-3f2a)", Tags: []string{"action", "tune"}})
	if err != nil {
		t.Fatal(err)
	}
	if id != 42 {
		t.Errorf("id = %d, want 42", id)
	}
	want := []request{{DashboardUID: "tailguard-service", Time: at.UnixMilli(), Tags: []string{"tailguard", "shop", "action", "tune"}, Text: "tune: cap 2s → 800ms (inc-3f2a)"}}
	if !reflect.DeepEqual(fg.got, want) {
		t.Errorf("posted %+v, want %+v", fg.got, want)
	}
}

func TestAnnotateErrors(t *testing.T) {
	fg := &fakeGrafana{t: t, token: "right"}
	srv := httptest.NewServer(fg)
	defer srv.Close()
	a, err := New(Config{URL: srv.URL + "/grafana", Token: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tc := range []struct {
		name string
		an   Annotation
		want string
	}{
		{"unauthorised", Annotation{Time: now, Text: "x"}, "invalid API key"},
		{"no time", Annotation{Text: "x"}, "annotation time"},
		{"no text", Annotation{Time: now}, "annotation text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Annotate(context.Background(), tc.an)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if len(fg.got) != 0 {
		t.Errorf("rejected annotations were recorded: %+v", fg.got)
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "grafana url: empty"},
		{Config{URL: "ftp://x"}, "scheme"},
		{Config{URL: "http://x", Token: "t", Username: "u"}, "either token"},
		{Config{URL: "http://x", Timeout: -1}, "timeout"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestAnnotateBasicAuthAndTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "admin" || p != "pw" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	a, err := New(Config{URL: srv.URL, Username: "admin", Password: "pw", Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Annotate(context.Background(), Annotation{Time: time.Now(), Text: "x"}); err == nil {
		t.Fatal("a hanging Grafana did not time out")
	}
}
