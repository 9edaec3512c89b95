// Package otlptest is an OTLP/HTTP receiver for tests: it accepts what the
// OTLP exporters post to /v1/traces and /v1/metrics (protobuf, gzipped or
// not), keeps it, and answers as a collector does, so that a test can run a
// command with OTEL_EXPORTER_OTLP_ENDPOINT pointing at it and read the
// spans and metrics that arrived.
package otlptest

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	collectormetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is a received span with the resource and scope it came under.
type Span struct {
	*tracepb.Span
	Resource []*commonpb.KeyValue
	Scope    string
}

// Metric is a received metric with the resource and scope it came under.
type Metric struct {
	*metricpb.Metric
	Resource []*commonpb.KeyValue
	Scope    string
}

// Receiver is a running receiver. Its methods are safe for concurrent use.
type Receiver struct {
	// URL is the base URL, for OTEL_EXPORTER_OTLP_ENDPOINT.
	URL string

	srv     *httptest.Server
	mu      sync.Mutex
	spans   []Span
	metrics []Metric
	posts   map[string]int
}

// Start starts a Receiver that t's cleanup stops.
func Start(tb testing.TB) *Receiver {
	r := &Receiver{posts: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL
	tb.Cleanup(r.Close)
	return r
}

// Close stops the receiver.
func (r *Receiver) Close() { r.srv.Close() }

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var resp proto.Message
	switch req.URL.Path {
	case "/v1/traces":
		var msg collectortracepb.ExportTraceServiceRequest
		if err = proto.Unmarshal(raw, &msg); err == nil {
			r.addSpans(&msg)
		}
		resp = &collectortracepb.ExportTraceServiceResponse{}
	case "/v1/metrics":
		var msg collectormetricpb.ExportMetricsServiceRequest
		if err = proto.Unmarshal(raw, &msg); err == nil {
			r.addMetrics(&msg)
		}
		resp = &collectormetricpb.ExportMetricsServiceResponse{}
	default:
		http.NotFound(w, req)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.posts[req.URL.Path]++
	r.mu.Unlock()
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func (r *Receiver) addSpans(msg *collectortracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range msg.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, Span{Span: s, Resource: rs.GetResource().GetAttributes(), Scope: ss.GetScope().GetName()})
			}
		}
	}
}

func (r *Receiver) addMetrics(msg *collectormetricpb.ExportMetricsServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rm := range msg.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				r.metrics = append(r.metrics, Metric{Metric: m, Resource: rm.GetResource().GetAttributes(), Scope: sm.GetScope().GetName()})
			}
		}
	}
}

// Spans returns the spans received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Metrics returns the metrics received so far, in arrival order.
func (r *Receiver) Metrics() []Metric {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Metric(nil), r.metrics...)
}

// Posts returns how many requests were accepted at path (/v1/traces,
// /v1/metrics).
func (r *Receiver) Posts(path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.posts[path]
}

// Attr returns the value of key among kvs as text, and whether it is there.
func Attr(kvs []*commonpb.KeyValue, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return Text(kv.GetValue()), true
		}
	}
	return "", false
}

// Text renders a value: strings as they are, numbers and booleans in Go's
// notation.
func Text(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	}
	return fmt.Sprint(v)
}

// Sum returns the total of the metric's sum data points whose attributes
// include every key=value of match, and whether the metric is a sum.
func Sum(m Metric, match map[string]string) (float64, bool) {
	if m.Metric == nil {
		return 0, false
	}
	var points []*metricpb.NumberDataPoint
	switch d := m.Data.(type) {
	case *metricpb.Metric_Sum:
		points = d.Sum.DataPoints
	case *metricpb.Metric_Gauge:
		points = d.Gauge.DataPoints
	default:
		return 0, false
	}
	total := 0.0
	for _, p := range points {
		if !matches(p.Attributes, match) {
			continue
		}
		switch v := p.Value.(type) {
		case *metricpb.NumberDataPoint_AsInt:
			total += float64(v.AsInt)
		case *metricpb.NumberDataPoint_AsDouble:
			total += v.AsDouble
		}
	}
	return total, true
}

func matches(kvs []*commonpb.KeyValue, match map[string]string) bool {
	for k, want := range match {
		if got, ok := Attr(kvs, k); !ok || got != want {
			return false
		}
	}
	return true
}

// Last returns the last metric of that name received: with cumulative
// temporality, the one holding the totals.
func (r *Receiver) Last(name string) (Metric, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.metrics) - 1; i >= 0; i-- {
		if r.metrics[i].GetName() == name {
			return r.metrics[i], true
		}
	}
	return Metric{}, false
}
