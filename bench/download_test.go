package bench

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/failsafehttp"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/faultserver"
)

// TestDownloadThroughCuts downloads an 8 MiB file (strong ETag, ranges
// served as a static file server serves them) whose connection is reset
// after every 1 MiB for the first 5 connections, through each client with
// its defaults for retries (3 attempts) and millisecond waits, and reports
// what the caller got: the bytes read, whether they are the file, the error,
// the requests made and the body bytes the server sent. Only httpretry's
// result is asserted (the whole file, at most 1.05x the bytes); the others
// are recorded in README.md.
func TestDownloadThroughCuts(t *testing.T) {
	const size, mib = 8 << 20, 1 << 20
	body := make([]byte, size)
	r := rand.New(rand.NewPCG(8, 8))
	for i := range body {
		body[i] = byte(r.Uint32())
	}
	want := sha256.Sum256(body)
	doc := &faultserver.Resource{Body: body, ETag: `"model-v1"`}
	const minWait, maxWait = time.Millisecond, 2 * time.Millisecond

	clients := []struct {
		name string
		new  func(base http.RoundTripper) *http.Client
	}{
		{"net/http", func(base http.RoundTripper) *http.Client { return &http.Client{Transport: base} }},
		{"go-retryablehttp", func(base http.RoundTripper) *http.Client {
			c := retryablehttpClient(base)
			c.RetryWaitMin, c.RetryWaitMax = minWait, maxWait
			return c.StandardClient()
		}},
		{"failsafe-go", func(base http.RoundTripper) *http.Client {
			rp := failsafehttp.NewRetryPolicyBuilder().WithMaxAttempts(attempts).WithBackoff(minWait, maxWait).Build()
			return &http.Client{Transport: failsafehttp.NewRoundTripper(base, rp)}
		}},
		{"httpretry", func(base http.RoundTripper) *http.Client {
			// The zero Transport; the fake clock only makes its waits instant.
			clk := clock.NewFake(time.Now())
			clk.SetAuto(true)
			return &http.Client{Transport: &httpretry.Transport{Base: base, Policy: httpretry.Policy{Clock: clk, Logger: discard}}}
		}},
	}
	t.Logf("%-17s %12s %6s %9s %14s  %s", "client", "bytes read", "whole", "requests", "server sent", "error")
	for _, c := range clients {
		srv := faultserver.Start(t, faultserver.Config{Behavior: func(n int, _ *http.Request) faultserver.Fault {
			f := faultserver.ServeResource(doc)
			if n < 5 {
				f = f.WithBodyFault(faultserver.BodyFault{CutAfter: mib, Reset: true})
			}
			return f
		}})
		base := newBase(t)
		var got []byte
		resp, err := c.new(base).Get(srv.URL + "/model.safetensors")
		if err == nil {
			got, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		whole := sha256.Sum256(got) == want
		msg := "-"
		if err != nil {
			msg = err.Error()
			if len(msg) > 110 {
				msg = msg[:110] + "..."
			}
		}
		t.Logf("%-17s %12d %6v %9d %14d  %s", c.name, len(got), whole, srv.Requests(), srv.BodyBytes(), msg)
		if c.name == "httpretry" && (!whole || err != nil || srv.BodyBytes() > size*105/100) {
			t.Errorf("httpretry: %d bytes, whole=%v, %v, server sent %d", len(got), whole, err, srv.BodyBytes())
		}
	}

}
