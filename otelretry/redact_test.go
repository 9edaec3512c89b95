package otelretry_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
)

// planted is a credential put everywhere a caller may put one.
const planted = "PLANTEDs3cr3tT0ken42"

// A token planted in the URL's userinfo and query, in credential headers,
// and in an error message that quotes the URL and a header, is found in no
// span name, attribute, event, status or metric attribute, through retries,
// a resumed body and a call that gives up.
func TestNoSecretInAnyAttribute(t *testing.T) {
	leaktest.Check(t)
	w := newWorld(t)
	doc := &faultserver.Resource{Body: document(20_000), ETag: `"v1"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503),
		faultserver.ServeResource(doc).WithBodyFault(faultserver.BodyFault{CutAfter: 4_000}),
		faultserver.ServeResource(doc),
		faultserver.Status(503))})
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	c := w.transport(t, &httpretry.Transport{Base: &quotingBase{base: base}})

	u := strings.Replace(srv.URL, "http://", "http://svc:"+planted+"@", 1) +
		"/v2/models?api_key=" + planted + "&type=image&sig=" + planted
	for range 2 { // the second call exhausts its attempts on 503s
		ctx, span := w.caller("call")
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+planted)
		req.Header.Set("Cookie", "session="+planted)
		req.Header.Set("X-Api-Key", planted)
		if resp, err := c.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		span.End()
	}

	var texts []string
	add := func(where string, attrs []attribute.KeyValue) {
		for _, kv := range attrs {
			texts = append(texts, fmt.Sprintf("%s %s=%s", where, kv.Key, kv.Value.Emit()))
		}
	}
	spans := w.spans.Ended()
	for _, s := range spans {
		where := "span " + s.Name()
		texts = append(texts, where, where+" status "+s.Status().Description)
		add(where, s.Attributes())
		add(where+" resource", s.Resource().Attributes())
		for _, e := range s.Events() {
			texts = append(texts, where+" event "+e.Name)
			add(where+" event "+e.Name, e.Attributes)
		}
		for _, l := range s.Links() {
			add(where+" link", l.Attributes)
		}
	}
	for series := range collect(t, w.reader) {
		texts = append(texts, "metric "+series)
	}
	for _, text := range texts {
		for _, form := range []string{planted, url.QueryEscape(planted)} {
			if strings.Contains(text, form) {
				t.Errorf("the planted secret is in: %s", text)
			}
		}
	}

	// Not vacuous: the places it was planted were recorded, redacted.
	var redactedURL, redactedStatus bool
	for _, s := range w.attemptSpans() {
		v, _ := attr(s.Attributes(), semconv.URLFullKey)
		redactedURL = redactedURL || strings.Contains(v.AsString(), "api_key=REDACTED&type=image&sig=REDACTED")
		redactedStatus = redactedStatus || strings.Contains(s.Status().Description, "REDACTED")
	}
	if len(w.attemptSpans()) < 6 || !redactedURL || !redactedStatus {
		t.Errorf("%d attempt spans, a redacted url.full: %v, a redacted error status: %v; want at least 6, true, true",
			len(w.attemptSpans()), redactedURL, redactedStatus)
	}
}

// quotingBase fails the first request with an error that quotes its whole
// URL and its Authorization header, as a careless Base transport might.
type quotingBase struct {
	base  http.RoundTripper
	calls atomic.Int32
}

func (q *quotingBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if q.calls.Add(1) == 1 {
		return nil, &url.Error{Op: "Get", URL: req.URL.String(),
			Err: fmt.Errorf("peer dropped us after %q: %w", req.Header.Get("Authorization"), syscall.ECONNRESET)}
	}
	return q.base.RoundTrip(req)
}
