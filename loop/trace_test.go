package loop

import (
	"context"
	"slices"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/detector/changes"
)

func TestCycleSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	svc := testService(t)
	upgrade := changes.Event{ID: "u", Kind: changes.KindVersion, Component: "dten-gateway", To: "3.0", Time: t0.Add(-30 * time.Minute)}
	l, err := New(Config{
		Service: svc, DetectorConfig: testDetectorConfig(t), Detector: &fakeAnalyzer{rep: &detector.Report{}},
		Changes: fakeChanges{upgrade}, Querier: &fakeQuerier{values: map[string]float64{}},
		Flags:      memReader{controller.NewMemoryFlags("backoff-strategy", "backoff-constants", controller.FlagState{DefaultVariant: "decorrelated"})},
		Controller: &recordingStepper{}, Tracer: tp.Tracer("test"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Cycle(context.Background(), t0, "interval"); err != nil {
		t.Fatal(err)
	}
	var names []string
	var root sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		names = append(names, s.Name())
		if s.Name() == "tailguard.cycle" {
			root = s
		}
	}
	for _, want := range []string{"tailguard.cycle", "query", "detect", "attribute", "decide"} {
		if !slices.Contains(names, want) {
			t.Errorf("spans %v lack %q", names, want)
		}
	}
	if root == nil {
		t.Fatal("no root span")
	}
	for _, s := range rec.Ended() {
		if s.Name() != "tailguard.cycle" && s.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("span %s is not a child of the cycle", s.Name())
		}
	}
}
