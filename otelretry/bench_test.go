package otelretry_test

import (
	"context"
	"net/http"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/otelretry"
)

// BenchmarkTransportOverhead is the root package's benchmark of the same
// name with the OpenTelemetry hooks installed: the in-memory upstream
// alone, behind a Transport without hooks, and behind one instrumented with
// no-op providers, with the global providers while none is installed, and
// with the SDK not sampling and sampling every attempt (spans dropped at
// their end, metrics kept in memory).
func BenchmarkTransportOverhead(b *testing.B) {
	sdkMeter := func() *sdkmetric.MeterProvider {
		return sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	}
	instrumented := func(cfg otelretry.Config) http.RoundTripper {
		tel, err := otelretry.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		t := &httpretry.Transport{Base: okUpstream{}}
		tel.Instrument(t)
		return t
	}
	for _, c := range []struct {
		name string
		rt   func() http.RoundTripper
	}{
		{"bare", func() http.RoundTripper { return okUpstream{} }},
		{"httpretry", func() http.RoundTripper { return &httpretry.Transport{Base: okUpstream{}} }},
		{"otel-noop", func() http.RoundTripper {
			return instrumented(otelretry.Config{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()})
		}},
		{"otel-global-unset", func() http.RoundTripper { return instrumented(otelretry.Config{}) }},
		{"otel-sdk-unsampled", func() http.RoundTripper {
			return instrumented(otelretry.Config{MeterProvider: sdkMeter(),
				TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))})
		}},
		{"otel-sdk-sampled", func() http.RoundTripper {
			return instrumented(otelretry.Config{MeterProvider: sdkMeter(),
				TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))})
		}},
	} {
		rt := c.rt()
		req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://upstream.test/", nil)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rt.RoundTrip(req)
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					rt.RoundTrip(req)
				}
			})
		})
	}
}
