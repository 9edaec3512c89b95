package otelretry_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/otelretry"
)

func TestMain(m *testing.M) { leaktest.CheckMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// world is an SDK that records in memory: every span that ends, every metric
// on demand, and every event and transition the Transport reports, seen
// through hooks that were set before Instrument (so they prove it keeps
// them).
type world struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	tel    *otelretry.Telemetry
	clk    *clock.Fake

	mu          sync.Mutex
	events      []httpretry.Event
	transitions []string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	w.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(w.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(w.reader))
	t.Cleanup(func() {
		w.tp.Shutdown(context.Background())
		mp.Shutdown(context.Background())
	})
	var err error
	w.tel, err = otelretry.New(otelretry.Config{TracerProvider: w.tp, MeterProvider: mp, Propagator: propagation.TraceContext{}})
	if err != nil {
		t.Fatal(err)
	}
	w.clk = clock.NewFake(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	w.clk.SetAuto(true)
	return w
}

// transport returns tr instrumented, on the fake clock, over a loopback
// transport of its own.
func (w *world) transport(t *testing.T, tr *httpretry.Transport) *http.Client {
	t.Helper()
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	if tr.Base == nil {
		tr.Base = base
	}
	tr.Policy.Clock, tr.Policy.Logger = w.clk, quiet
	tr.Policy.Rand = func() float64 { return 0.5 }
	tr.Observer = func(e httpretry.Event) {
		w.mu.Lock()
		w.events = append(w.events, e)
		w.mu.Unlock()
	}
	tr.BreakerConfig.OnStateChange = func(name string, from, to breaker.State) {
		w.mu.Lock()
		w.transitions = append(w.transitions, name+" "+from.String()+" "+to.String())
		w.mu.Unlock()
	}
	w.tel.Instrument(tr)
	return &http.Client{Transport: tr}
}

func (w *world) observed() []httpretry.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events)
}

// caller starts the span a caller would wrap its call in.
func (w *world) caller(name string) (context.Context, trace.Span) {
	return w.tp.Tracer("caller").Start(context.Background(), name)
}

// attemptSpans are the ended spans otelretry made, in the order they ended.
func (w *world) attemptSpans() []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range w.spans.Ended() {
		if s.InstrumentationScope().Name == otelretry.ScopeName {
			out = append(out, s)
		}
	}
	return out
}

func (w *world) ended(name string) sdktrace.ReadOnlySpan {
	for _, s := range w.spans.Ended() {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// get sends a GET with ctx and reads the whole body.
func get(t *testing.T, c *http.Client, ctx context.Context, url string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// attr returns the value of key among attrs, and whether it is there.
func attr(attrs []attribute.KeyValue, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range attrs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// events returns the span's events of that name.
func events(s sdktrace.ReadOnlySpan, name string) []sdktrace.Event {
	var out []sdktrace.Event
	for _, e := range s.Events() {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// collect reads every metric point as "name{k=v,...}" -> value: counters
// and gauges their value, histograms their count (".count") and sum
// (".sum").
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[series(m.Name, p.Attributes)] += float64(p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[series(m.Name, p.Attributes)] = float64(p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[series(m.Name, p.Attributes)+".count"] += float64(p.Count)
					out[series(m.Name, p.Attributes)+".sum"] += p.Sum
				}
			default:
				t.Fatalf("metric %s has unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return out
}

func series(name string, set attribute.Set) string {
	var kv []string
	for _, a := range set.ToSlice() {
		kv = append(kv, fmt.Sprintf("%s=%s", a.Key, a.Value.Emit()))
	}
	sort.Strings(kv)
	return name + "{" + strings.Join(kv, ",") + "}"
}
