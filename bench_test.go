package httpretry

import (
	"context"
	"testing"
)

func BenchmarkDoSuccess(b *testing.B) {
	var p Policy
	ctx := context.Background()
	fn := func(context.Context) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Do(ctx, fn)
	}
}

func BenchmarkDoValueSuccess(b *testing.B) {
	var p Policy
	ctx := context.Background()
	fn := func(context.Context) (int, error) { return 1, nil }
	b.ReportAllocs()
	for b.Loop() {
		_, _ = DoValue(ctx, p, fn)
	}
}
