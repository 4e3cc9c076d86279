package backoff_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tailguard/tailguard/backoff"
)

type recorder struct {
	spans  *tracetest.SpanRecorder
	tracer trace.Tracer
}

func newRecorder() recorder {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	return recorder{spans: sr, tracer: tp.Tracer("backoff_test")}
}

func attrs(kv []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(kv))
	for _, a := range kv {
		m[a.Key] = a.Value
	}
	return m
}

func TestRetrierSpanEvents(t *testing.T) {
	t.Run("events on the caller's span", func(t *testing.T) {
		rec := newRecorder()
		r := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(expoPolicy), Clock: newFakeClock(), Tracer: rec.tracer})
		ctx, parent := rec.tracer.Start(context.Background(), "checkout")
		var calls int
		if err := r.Do(ctx, failing(&calls, errTransient, errTransient)); err != nil {
			t.Fatal(err)
		}
		parent.End()
		spans := rec.spans.Ended()
		if len(spans) != 1 || spans[0].Name() != "checkout" {
			t.Fatalf("spans = %v, want only the caller's", spans)
		}
		events := spans[0].Events()
		if len(events) != 2 {
			t.Fatalf("%d events, want 2", len(events))
		}
		for i, e := range events {
			a := attrs(e.Attributes)
			if e.Name != "backoff.retry" || a["backoff.attempt"].AsInt64() != int64(i+1) || a["backoff.reason"].AsString() != "transient" {
				t.Errorf("event %d = %s %v", i, e.Name, e.Attributes)
			}
			if want := []float64{0.1, 0.2}[i]; a["backoff.delay_seconds"].AsFloat64() != want {
				t.Errorf("event %d delay = %v, want %v", i, a["backoff.delay_seconds"].AsFloat64(), want)
			}
		}
	})
	t.Run("retrier span without a caller span", func(t *testing.T) {
		rec := newRecorder()
		r := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(expoPolicy), Clock: newFakeClock(), Tracer: rec.tracer, Upstream: "payments"})
		var inner []trace.SpanContext
		err := r.Do(context.Background(), func(ctx context.Context) error {
			inner = append(inner, trace.SpanContextFromContext(ctx))
			if len(inner) < 3 {
				return errTransient
			}
			return backoff.Permanent(errTransient)
		})
		if reason, _ := backoff.Stopped(err); reason != backoff.ReasonPermanent {
			t.Fatalf("Do = %v", err)
		}
		spans := rec.spans.Ended()
		if len(spans) != 1 || spans[0].Name() != "backoff.retry" {
			t.Fatalf("spans = %v, want one backoff.retry span", spans)
		}
		a := attrs(spans[0].Attributes())
		if a["backoff.upstream"].AsString() != "payments" || a["backoff.strategy"].AsString() != "exponential" || a["backoff.result"].AsString() != "permanent" {
			t.Errorf("span attributes = %v", spans[0].Attributes())
		}
		if len(spans[0].Events()) != 2 {
			t.Errorf("%d events, want 2", len(spans[0].Events()))
		}
		if inner[0].IsValid() || inner[1].SpanID() != spans[0].SpanContext().SpanID() {
			t.Error("retried attempts do not run under the retrier's span")
		}
	})
	t.Run("no tracer, no events", func(t *testing.T) {
		rec := newRecorder()
		r := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(expoPolicy), Clock: newFakeClock()})
		ctx, parent := rec.tracer.Start(context.Background(), "checkout")
		var calls int
		_ = r.Do(ctx, failing(&calls, errTransient))
		parent.End()
		if n := len(rec.spans.Ended()[0].Events()); n != 0 {
			t.Errorf("%d events without a tracer", n)
		}
	})
}
