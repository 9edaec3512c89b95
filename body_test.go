package httpretry

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
)

// document returns n reproducible pseudo-random bytes.
func document(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func cutAfter(n int64, reset bool) faultserver.BodyFault {
	return faultserver.BodyFault{CutAfter: n, Reset: reset}
}

// The zero-value Transport (on a fake clock) downloads an 8 MiB file whose
// connection is reset after every 1 MiB for the first five connections:
// the caller reads it whole, byte for byte, and the server sends it once.
func TestResumeEightMiBThroughFiveResets(t *testing.T) {
	leaktest.Check(t)
	const size, mib = 8 << 20, 1 << 20
	doc := &faultserver.Resource{Body: document(size, 1), ETag: `"v1"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: func(n int, _ *http.Request) faultserver.Fault {
		f := faultserver.ServeResource(doc)
		if n < 5 {
			f = f.WithBodyFault(cutAfter(mib, true))
		}
		return f
	}})
	var events []Event
	fx := newFixture(t, &Transport{Observer: func(e Event) { events = append(events, e) }})
	resp, body, err := fx.get(t, srv.URL+"/model.safetensors")
	if err != nil {
		t.Fatalf("GET: %v (read %d bytes)", err, len(body))
	}
	if resp.StatusCode != 200 || sha([]byte(body)) != sha(doc.Body) {
		t.Fatalf("got %d, %d bytes with SHA-256 %s; want 200 and the document's %s", resp.StatusCode, len(body), sha([]byte(body)), sha(doc.Body))
	}
	if sent := srv.BodyBytes(); sent > size*105/100 {
		t.Fatalf("the server sent %d body bytes for a %d-byte file: more than 1.05x", sent, size)
	}
	log := srv.Log()
	if len(log) != 6 {
		t.Fatalf("server saw %d requests, want 6 (the GET and 5 resumes)", len(log))
	}
	for i, e := range log[1:] {
		want := "bytes=" + itoa(int64(i+1)*mib) + "-"
		if got := e.Header.Get("Range"); got != want || e.Header.Get("If-Range") != `"v1"` {
			t.Errorf("resume %d asked Range %q If-Range %q, want %q and the ETag", i+1, got, e.Header.Get("If-Range"), want)
		}
	}
	var resumes, failures int
	for _, e := range events {
		switch {
		case e.Kind == EventRetry && e.Resume:
			resumes++
		case e.Kind == EventBodyFailed:
			failures++
		case e.Kind == EventGiveUp:
			t.Errorf("unexpected give-up: %+v", e)
		}
	}
	if resumes != 5 || failures != 5 {
		t.Fatalf("events: %d body failures and %d resumes, want 5 and 5", failures, resumes)
	}
	if b := fx.t.Breakers().Get(hostOf(srv.URL)); b.ConsecutiveFailures() != 0 || b.State() != breaker.Closed {
		t.Fatalf("breaker %v with %d failures after a completed download", b.State(), b.ConsecutiveFailures())
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func hostOf(url string) string { return strings.TrimPrefix(url, "http://") }

// A resource that changes between the cut and the resume yields an error,
// never a body made of two versions.
func TestResumeNeverSplicesAChangedResource(t *testing.T) {
	for _, c := range []struct {
		name   string
		v1, v2 *faultserver.Resource
	}{
		{"etag",
			&faultserver.Resource{Body: document(200_000, 1), ETag: `"v1"`},
			&faultserver.Resource{Body: document(200_000, 2), ETag: `"v2"`}},
		{"last-modified",
			&faultserver.Resource{Body: document(200_000, 1), LastModified: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)},
			&faultserver.Resource{Body: document(200_000, 2), LastModified: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			leaktest.Check(t)
			srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
				faultserver.ServeResource(c.v1).WithBodyFault(cutAfter(50_000, true)),
				faultserver.ServeResource(c.v2))})
			fx := newFixture(t, &Transport{})
			_, body, err := fx.get(t, srv.URL)
			be, ok := errors.AsType[*BodyError](err)
			if !ok || be.Reason != StopNotResumable || be.Received != 50_000 {
				t.Fatalf("read %d bytes, error %v; want a StopNotResumable *BodyError after 50000", len(body), err)
			}
			if !bytes.Equal([]byte(body), c.v1.Body[:50_000]) {
				t.Fatal("the bytes read are not the first version's prefix")
			}
			if !strings.Contains(err.Error(), "body cut after 50000 bytes; cannot resume: the range request was answered 200") {
				t.Fatalf("error does not say why: %v", err)
			}
			if got := srv.Log()[1].Header.Get("If-Range"); got == "" {
				t.Fatal("the resume carried no If-Range")
			}
		})
	}
}

// A response that does not allow a resume fails with an error naming why.
func TestResumeRefusedWithoutRangesOrStrongValidator(t *testing.T) {
	for _, c := range []struct {
		name string
		res  *faultserver.Resource
		why  string
	}{
		{"weak etag", &faultserver.Resource{Body: document(100_000, 1), ETag: `W/"v1"`}, "no strong validator"},
		{"no validator", &faultserver.Resource{Body: document(100_000, 1)}, "no strong validator"},
		{"no ranges", &faultserver.Resource{Body: document(100_000, 1), ETag: `"v1"`, NoRanges: true}, "Accept-Ranges"},
	} {
		t.Run(c.name, func(t *testing.T) {
			leaktest.Check(t)
			srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
				faultserver.ServeResource(c.res).WithBodyFault(cutAfter(10_000, false)),
				faultserver.ServeResource(c.res))})
			fx := newFixture(t, &Transport{})
			_, body, err := fx.get(t, srv.URL)
			be, ok := errors.AsType[*BodyError](err)
			if !ok || be.Reason != StopNotResumable || !strings.Contains(be.Why, c.why) || len(body) != 10_000 {
				t.Fatalf("read %d bytes, error %v; want a *BodyError after 10000 bytes saying %q", len(body), err, c.why)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v does not match the cut's io.ErrUnexpectedEOF", err)
			}
			if srv.Requests() != 1 {
				t.Fatalf("%d requests, want 1: nothing to resume with", srv.Requests())
			}
			b := fx.t.Breakers().Get(hostOf(srv.URL))
			if b.ConsecutiveFailures() != 1 {
				t.Fatalf("breaker counted %d failures, want 1 for a body that failed", b.ConsecutiveFailures())
			}
		})
	}
}

// net/http decompresses gzip on the fly when the caller did not ask for an
// encoding: the offsets the caller read are not the server's, so the body
// is never resumed, and what was read is a correct prefix. A caller that
// asks for gzip itself reads the encoded bytes, which resume.
func TestGzipCutNeverCorrupts(t *testing.T) {
	leaktest.Check(t)
	doc := &faultserver.Resource{Body: bytes.Repeat([]byte("horde model reference "), 40_000), ETag: `"gz1"`, Gzip: true}
	encoded := doc.Encoded()
	cut := int64(len(encoded) / 2)
	srv := faultserver.Start(t, faultserver.Config{Behavior: func(n int, _ *http.Request) faultserver.Fault {
		if n%2 == 0 {
			return faultserver.ServeResource(doc).WithBodyFault(cutAfter(cut, true))
		}
		return faultserver.ServeResource(doc)
	}})
	fx := newFixture(t, &Transport{})

	_, body, err := fx.get(t, srv.URL)
	be, ok := errors.AsType[*BodyError](err)
	if !ok || !strings.Contains(be.Why, "decompressed") {
		t.Fatalf("transparent gzip: error %v, want a *BodyError saying the body was decompressed", err)
	}
	if !bytes.HasPrefix(doc.Body, []byte(body)) {
		t.Fatal("transparent gzip: the bytes read are not a prefix of the document")
	}

	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := fx.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(raw, encoded) {
		t.Fatalf("own gzip: read %d of %d encoded bytes, %v", len(raw), len(encoded), err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(plain, doc.Body) {
		t.Fatalf("own gzip: the resumed encoding decodes to %d bytes, %v", len(plain), err)
	}
}

// AttemptTimeout bounds the wait for the headers only: a body that keeps
// flowing for longer than it arrives whole, in one request.
func TestAttemptTimeoutNeverCutsAFlowingBody(t *testing.T) {
	leaktest.Check(t)
	doc := &faultserver.Resource{Body: document(256<<10, 3), ETag: `"slow"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
		faultserver.ServeResource(doc).WithBodyFault(faultserver.BodyFault{BytesPerSecond: 200_000}))})
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	// The real clock: the body takes about 1.3 s to arrive, the timeout is
	// 500 ms. The test asserts what arrives, not how fast.
	tr := &Transport{Base: base, Policy: Policy{AttemptTimeout: 500 * time.Millisecond, Logger: quiet}}
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(body, doc.Body) {
		t.Fatalf("read %d of %d bytes: %v", len(body), len(doc.Body), err)
	}
	if srv.Requests() != 1 {
		t.Fatalf("%d requests, want 1", srv.Requests())
	}
}

// The header timeout is on the Transport's clock: it fails an attempt whose
// headers do not come, and the retry succeeds.
func TestAttemptTimeoutFailsMissingHeaders(t *testing.T) {
	leaktest.Check(t)
	arrived := make(chan struct{})
	srv := faultserver.Start(t, faultserver.Config{Behavior: func(n int, _ *http.Request) faultserver.Fault {
		if n == 0 {
			close(arrived)
			return faultserver.StallBeforeHeaders()
		}
		return faultserver.OK()
	}})
	fx := newFixture(t, &Transport{Policy: Policy{AttemptTimeout: 5 * time.Second}})
	var events []Event
	fx.t.Observer = func(e Event) { events = append(events, e) }
	done := make(chan error, 1)
	go func() {
		_, body, err := fx.get(t, srv.URL)
		if err == nil && body != "ok\n" {
			err = errors.New("body " + body)
		}
		done <- err
	}()
	<-arrived // the server holds the first request and sends nothing
	fx.clk.Advance(5 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	te, ok := errors.AsType[*TimeoutError](events[0].Err)
	if !ok || te.Stall || te.Limit != 5*time.Second || !errors.Is(events[0].Err, context.DeadlineExceeded) {
		t.Fatalf("first attempt's error = %v, want a header *TimeoutError of 5s", events[0].Err)
	}
	if srv.Requests() != 2 {
		t.Fatalf("%d requests, want 2", srv.Requests())
	}
}

// A body that stalls is stopped after StallTimeout on the Transport's clock
// and resumed where it stopped.
func TestStalledBodyIsResumed(t *testing.T) {
	leaktest.Check(t)
	doc := document(300_000, 4)
	base := &scriptedBodies{doc: doc, etag: `"s1"`, blocked: make(chan struct{}, 1), ranges: make(chan string, 4)}
	fx := newFixture(t, &Transport{})
	fx.t.Base = base
	start := fx.clk.Now()
	done := make(chan error, 1)
	var got []byte
	go func() {
		resp, err := fx.c.Get("http://upstream.test/file")
		if err == nil {
			got, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	<-base.blocked // the first body sent 100000 bytes and now hangs
	// Drive the watchdog, whose scans come every StallTimeout/8 and re-arm
	// while the body is watched: the first scan after the read blocked
	// notes it, the ninth finds it 8 scans (60 s) older and stops it. No
	// further scan is needed, so none is awaited: after the stall the timer
	// may or may not be re-armed, depending on when the body completes.
	for range 9 {
		fx.clk.BlockUntil(1)
		fx.clk.Advance(DefaultStallTimeout / 8)
	}
	if r := <-base.ranges; r != "bytes=100000-" {
		t.Fatalf("resume asked for %q, want bytes=100000-", r)
	}
	if err := <-done; err != nil || !bytes.Equal(got, doc) {
		t.Fatalf("read %d of %d bytes: %v", len(got), len(doc), err)
	}
	if elapsed := fx.clk.Now().Sub(start); elapsed < DefaultStallTimeout {
		t.Fatalf("the stall was declared after %v of fake time, before StallTimeout", elapsed)
	}
}

// scriptedBodies is an in-memory upstream for a document with a strong ETag:
// the first GET answers 200 and its body hangs after a third of the bytes
// until closed; range requests get a 206 with the rest.
type scriptedBodies struct {
	doc     []byte
	etag    string
	blocked chan struct{}
	ranges  chan string
}

func (s *scriptedBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	h := http.Header{"Etag": {s.etag}, "Accept-Ranges": {"bytes"}}
	if rg := req.Header.Get("Range"); rg != "" {
		s.ranges <- rg
		from := int64(len(s.doc) / 3)
		h.Set("Content-Range", "bytes "+itoa(from)+"-"+itoa(int64(len(s.doc)-1))+"/"+itoa(int64(len(s.doc))))
		return &http.Response{StatusCode: 206, Header: h, Request: req, ContentLength: int64(len(s.doc)) - from,
			Body: io.NopCloser(bytes.NewReader(s.doc[from:]))}, nil
	}
	return &http.Response{StatusCode: 200, Header: h, Request: req, ContentLength: int64(len(s.doc)),
		Body: &hangingBody{r: bytes.NewReader(s.doc[:len(s.doc)/3]), blocked: s.blocked, closed: make(chan struct{})}}, nil
}

// hangingBody reads its bytes, then blocks until closed.
type hangingBody struct {
	r       *bytes.Reader
	blocked chan struct{}
	closed  chan struct{}
}

func (h *hangingBody) Read(p []byte) (int, error) {
	if h.r.Len() > 0 {
		return h.r.Read(p)
	}
	h.blocked <- struct{}{}
	<-h.closed
	return 0, errors.New("read on a closed body")
}

func (h *hangingBody) Close() error {
	select {
	case <-h.closed:
	default:
		close(h.closed)
	}
	return nil
}

// A server that always cuts cannot make a body loop forever: resumes that
// make progress do not use up attempts, MaxResumes caps them.
func TestResumesAreCapped(t *testing.T) {
	leaktest.Check(t)
	doc := &faultserver.Resource{Body: document(100_000, 5), ETag: `"cap"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
		faultserver.ServeResource(doc).WithBodyFault(cutAfter(1000, false)))})
	fx := newFixture(t, &Transport{MaxResumes: 7})
	_, body, err := fx.get(t, srv.URL)
	be, ok := errors.AsType[*BodyError](err)
	if !ok || be.Reason != StopMaxResumes || be.Resumes != 7 || be.Received != 8000 || len(body) != 8000 {
		t.Fatalf("read %d bytes, error %v; want StopMaxResumes after 7 resumes and 8000 bytes", len(body), err)
	}
	if !bytes.Equal([]byte(body), doc.Body[:8000]) || srv.Requests() != 8 {
		t.Fatalf("%d requests, want 8; bytes correct: %v", srv.Requests(), bytes.Equal([]byte(body), doc.Body[:8000]))
	}
}

// Failures in a row without a byte use up the policy's attempts: the range
// requests answered 503 are retried, then the body gives up with the count.
func TestResumeWithoutProgressUsesUpAttempts(t *testing.T) {
	leaktest.Check(t)
	doc := &faultserver.Resource{Body: document(50_000, 6), ETag: `"np"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.ServeResource(doc).WithBodyFault(cutAfter(20_000, true)),
		faultserver.Status(503), faultserver.Status(503), faultserver.ServeResource(doc))})
	fx := newFixture(t, &Transport{})
	_, body, err := fx.get(t, srv.URL)
	be, ok := errors.AsType[*BodyError](err)
	if !ok || be.Reason != StopExhausted || be.Received != 20_000 || len(body) != 20_000 {
		t.Fatalf("read %d bytes, error %v; want StopExhausted after 20000 bytes", len(body), err)
	}
	if srv.Requests() != 3 || len(fx.waits.waits) != 2 {
		t.Fatalf("%d requests and %d waits, want the GET, two range requests answered 503 (3 attempts), 2 waits", srv.Requests(), len(fx.waits.waits))
	}

	// With one more attempt, the third range request gets the rest.
	srv.SetBehavior(faultserver.Script(
		faultserver.ServeResource(doc).WithBodyFault(cutAfter(20_000, true)),
		faultserver.Status(503), faultserver.Status(503), faultserver.ServeResource(doc)))
	fx = newFixture(t, &Transport{Policy: Policy{MaxAttempts: 4}})
	if _, body, err = fx.get(t, srv.URL); err != nil || body != string(doc.Body) {
		t.Fatalf("with 4 attempts: %d bytes, %v", len(body), err)
	}
}

// A caller's own open-ended range (bytes=N-) is continued as well, in the
// resource's positions.
func TestResumeOfTheCallersOwnRange(t *testing.T) {
	leaktest.Check(t)
	doc := &faultserver.Resource{Body: document(100_000, 7), ETag: `"own"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: func(n int, _ *http.Request) faultserver.Fault {
		if n == 0 {
			return faultserver.ServeResource(doc).WithBodyFault(cutAfter(30_000, true))
		}
		return faultserver.ServeResource(doc)
	}})
	fx := newFixture(t, &Transport{})
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Range", "bytes=40000-")
	resp, err := fx.c.Do(req)
	if err != nil || resp.StatusCode != 206 {
		t.Fatalf("GET = %v, %v", resp, err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, doc.Body[40_000:]) {
		t.Fatalf("read %d bytes, %v; want the last 60000", len(got), err)
	}
	if rg := srv.Log()[1].Header.Get("Range"); rg != "bytes=70000-" {
		t.Fatalf("resume asked %q, want bytes=70000-", rg)
	}
}

// Close while a resume waits returns at once, and the body reports no
// failure: the caller stopped it.
func TestCloseDuringAResumeWait(t *testing.T) {
	leaktest.Check(t)
	doc := &faultserver.Resource{Body: document(50_000, 8), ETag: `"cl"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
		faultserver.ServeResource(doc).WithBodyFault(cutAfter(10_000, true)))})
	fx := newFixture(t, &Transport{})
	fx.clk.SetAuto(false)
	resp, err := fx.c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		done <- err
	}()
	fx.clk.BlockUntil(2) // the watchdog's scan, and the wait before the resume
	resp.Body.Close()
	if err := <-done; err == nil {
		t.Fatal("the read went on after Close")
	}
	if srv.Requests() != 1 {
		t.Fatalf("%d requests: a resume was sent after Close", srv.Requests())
	}
	if b := fx.t.Breakers().Get(hostOf(srv.URL)); b.ConsecutiveFailures() != 0 {
		t.Fatalf("a body the caller closed counted as %d failures", b.ConsecutiveFailures())
	}
}

// Only GET bodies are resumed: a POST's cut body fails with the reason.
func TestPOSTBodyIsNeverResumed(t *testing.T) {
	leaktest.Check(t)
	doc := &faultserver.Resource{Body: document(50_000, 9), ETag: `"p"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
		faultserver.ServeResource(doc).WithBodyFault(cutAfter(10_000, true)))})
	fx := newFixture(t, &Transport{})
	resp, err := fx.c.Post(srv.URL, "text/plain", strings.NewReader("make it"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if be, ok := errors.AsType[*BodyError](err); !ok || !strings.Contains(be.Why, "only GET") || srv.Requests() != 1 {
		t.Fatalf("error %v after %d requests, want a *BodyError saying only GET bodies resume", err, srv.Requests())
	}
}

// An event stream may stay silent: no stall timeout applies to it.
func TestEventStreamsNeverStall(t *testing.T) {
	leaktest.Check(t)
	blocked := make(chan struct{}, 1)
	body := &hangingBody{r: bytes.NewReader([]byte("data: hello\n\n")), blocked: blocked, closed: make(chan struct{})}
	fx := newFixture(t, &Transport{})
	fx.t.Base = roundTripFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Request: req, ContentLength: -1,
			Header: http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}, Body: body}, nil
	})
	resp, err := fx.c.Get("http://upstream.test/events")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		done <- err
	}()
	<-blocked
	// A watched body would have armed the watchdog's timer by now.
	if n := fx.clk.Pending(); n != 0 {
		t.Fatalf("%d timers pending: the event stream is under the stall watchdog", n)
	}
	fx.clk.Advance(10 * DefaultStallTimeout)
	select {
	case err := <-done:
		t.Fatalf("the event stream ended after silence: %v", err)
	default:
	}
	resp.Body.Close()
	if err := <-done; errors.As(err, new(*TimeoutError)) {
		t.Fatalf("the event stream stalled: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
