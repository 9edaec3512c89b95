package faultserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hordekit/httpretry/internal/leaktest"
)

// newClient returns a client with its own Transport whose idle connections
// are closed when t ends, so leaktest sees no transport goroutines.
func newClient(t testing.TB, timeout time.Duration) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

// get does a GET and returns the status, the body read so far and the error
// of either the request or the body read.
func get(c *http.Client, url string) (*http.Response, []byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestOK(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{})
	c := newClient(t, 0)
	resp, body, err := get(c, s.URL+"/x")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type %q", got)
	}
	if s.Served(KindOK) != 1 || s.Requests() != 1 {
		t.Errorf("served %d requests %d", s.Served(KindOK), s.Requests())
	}
}

func TestDefaultBodyAndLargeBody(t *testing.T) {
	leaktest.Check(t)
	big := bytes.Repeat([]byte("b"), 10000)
	s := Start(t, Config{DefaultBody: []byte("healthy"), Behavior: Script(OK(), OK().WithBody(big))})
	c := newClient(t, 0)
	_, body, err := get(c, s.URL)
	if err != nil || string(body) != "healthy" {
		t.Fatalf("got %q, %v", body, err)
	}
	resp, body, err := get(c, s.URL)
	if err != nil || !bytes.Equal(body, big) || resp.ContentLength != int64(len(big)) {
		t.Fatalf("got %d bytes (Content-Length %d), %v", len(body), resp.ContentLength, err)
	}
}

func TestStatusWithRetryAfterSeconds(t *testing.T) {
	leaktest.Check(t)
	f := Status(503).WithRetryAfter(7*time.Second+900*time.Millisecond).
		WithHeader("X-Upstream", "down").WithBody([]byte("busy"))
	s := Start(t, Config{Behavior: Always(f)})
	c := newClient(t, 0)
	resp, body, err := get(c, s.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || string(body) != "busy" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Retry-After"); got != "7" {
		t.Errorf("Retry-After %q, want 7 (truncated)", got)
	}
	if got := resp.Header.Get("X-Upstream"); got != "down" {
		t.Errorf("X-Upstream %q", got)
	}
	if f.Header.Get("Retry-After") != "" {
		t.Error("serving mutated the fault's header")
	}
	if s.Served(KindStatus) != 1 {
		t.Errorf("served %d", s.Served(KindStatus))
	}
}

func TestStatusNoBodyByDefault(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Always(Status(500))})
	resp, body, err := get(newClient(t, 0), s.URL)
	if err != nil || resp.StatusCode != 500 || len(body) != 0 {
		t.Fatalf("got %v %q %v", resp, body, err)
	}
}

func TestRetryAfterDate(t *testing.T) {
	leaktest.Check(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 600_000_000, time.FixedZone("X", 3600))
	s := Start(t, Config{
		Now:      func() time.Time { return now },
		Behavior: Always(Status(429).WithRetryAfterDate(90 * time.Second)),
	})
	resp, _, err := get(newClient(t, 0), s.URL)
	if err != nil {
		t.Fatal(err)
	}
	v := resp.Header.Get("Retry-After")
	if !strings.HasSuffix(v, " GMT") {
		t.Errorf("Retry-After %q is not an IMF-fixdate", v)
	}
	at, err := http.ParseTime(v)
	if err != nil {
		t.Fatalf("Retry-After %q: %v", v, err)
	}
	if want := now.Add(90 * time.Second).Truncate(time.Second); !at.Equal(want) {
		t.Errorf("Retry-After %v, want %v", at, want)
	}
}

func TestResetBeforeHeaders(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Always(ResetBeforeHeaders())})
	_, _, err := get(newClient(t, 0), s.URL)
	if !errors.Is(err, syscall.ECONNRESET) || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("err = %v, want ECONNRESET", err)
	}
	if s.Served(KindResetBeforeHeaders) != 1 || s.Conns() != 1 {
		t.Errorf("served %d conns %d", s.Served(KindResetBeforeHeaders), s.Conns())
	}
}

func TestResetBeforeHeadersAfterPOSTBodyReceived(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Always(ResetBeforeHeaders())})
	body := bytes.Repeat([]byte("p"), 100_000)
	_, err := newClient(t, 0).Post(s.URL+"/orders", "application/octet-stream", bytes.NewReader(body))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("err = %v, want ECONNRESET", err)
	}
	log := s.Log()
	sum := sha256.Sum256(body)
	if len(log) != 1 || log[0].BodyLen != int64(len(body)) || log[0].BodySHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("log %+v: the server must have read the whole body before the reset", log)
	}
}

func TestResetAfterHeaders(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Always(ResetAfterHeaders().WithHeader("X-A", "1"))})
	resp, body, err := get(newClient(t, 0), s.URL)
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != 1000 || resp.Header.Get("X-A") != "1" {
		t.Errorf("got %d, Content-Length %d, header %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("body err = %v, want ECONNRESET", err)
	}
	if !bytes.Equal(body, Filler()[:10]) {
		t.Errorf("body %q, want the first 10 filler bytes", body)
	}
}

func TestCloseNoResponse(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Always(CloseNoResponse())})
	_, _, err := get(newClient(t, 0), s.URL)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want io.EOF", err)
	}
	if errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("err = %v: a clean close must not look like a reset", err)
	}
}

func TestTruncatedBody(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Always(TruncatedBody().WithBody([]byte("0123456789abcdef")).WithPartial(4))})
	resp, body, err := get(newClient(t, 0), s.URL)
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if resp.ContentLength != 16 || string(body) != "0123" {
		t.Errorf("Content-Length %d body %q", resp.ContentLength, body)
	}
}

func TestStallBeforeHeadersClientTimeout(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Always(StallBeforeHeaders())})
	_, _, err := get(newClient(t, 50*time.Millisecond), s.URL)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a client timeout", err)
	}
}

func TestStallBeforeHeadersMaxStallThenResponds(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Always(StallBeforeHeaders().WithMaxStall(time.Millisecond).WithStatus(503))})
	resp, _, err := get(newClient(t, 0), s.URL)
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("got %v, %v", resp, err)
	}
}

func TestStallMidBody(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Always(StallMidBody())})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
	resp, err := newClient(t, 0).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength != 1000 {
		t.Errorf("Content-Length %d", resp.ContentLength)
	}
	// The first bytes were flushed before the stall, so they arrive.
	got := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, got); err != nil || !bytes.Equal(got, Filler()[:10]) {
		t.Fatalf("read %q, %v", got, err)
	}
	cancel()
	if _, err := resp.Body.Read(make([]byte, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v, want context.Canceled", err)
	}
}

func TestStallMidBodyMaxStallCompletes(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Always(StallMidBody().WithMaxStall(time.Millisecond))})
	_, body, err := get(newClient(t, 0), s.URL)
	if err != nil || !bytes.Equal(body, Filler()) {
		t.Fatalf("got %d bytes, %v", len(body), err)
	}
}

func TestScriptOrderAndRepeatLast(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Script(Status(500), Status(502), OK())})
	c := newClient(t, 0)
	var got []int
	for range 5 {
		resp, _, err := get(c, s.URL)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.StatusCode)
	}
	if want := []int{500, 502, 200, 200, 200}; !slices.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if s.Served(KindStatus) != 2 || s.Served(KindOK) != 3 {
		t.Errorf("served status %d ok %d", s.Served(KindStatus), s.Served(KindOK))
	}
}

func TestEmptyScriptIsOK(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Script()})
	resp, _, err := get(newClient(t, 0), s.URL)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("got %v, %v", resp, err)
	}
}

func TestBehaviorFuncAndSwap(t *testing.T) {
	leaktest.Check(t)
	seenc := make(chan int, 10) // the handler runs on the server's goroutine
	s := Start(t, Config{Behavior: func(n int, r *http.Request) Fault {
		seenc <- n
		if r.URL.Path == "/teapot" {
			return Status(418)
		}
		return OK()
	}})
	c := newClient(t, 0)
	for _, p := range []string{"/", "/teapot"} {
		if _, _, err := get(c, s.URL+p); err != nil {
			t.Fatal(err)
		}
	}
	seen := []int{<-seenc, <-seenc}
	s.SetBehavior(Script(Status(503), OK()))
	var got []int
	for range 3 {
		resp, _, err := get(c, s.URL+"/teapot")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.StatusCode)
	}
	if !slices.Equal(seen, []int{0, 1}) || !slices.Equal(got, []int{503, 200, 200}) {
		t.Errorf("seen %v got %v: a new script must start at its first fault", seen, got)
	}
	s.SetBehavior(nil)
	if resp, _, err := get(c, s.URL); err != nil || resp.StatusCode != 200 {
		t.Errorf("nil behaviour: %v %v", resp, err)
	}
	if s.Requests() != 6 {
		t.Errorf("requests %d", s.Requests())
	}
}

func TestConnectionCounts(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Script(OK(), OK(), ResetBeforeHeaders(), OK())})
	c := newClient(t, 0)
	for range 2 {
		if _, _, err := get(c, s.URL); err != nil {
			t.Fatal(err)
		}
	}
	if s.Conns() != 1 || s.Requests() != 2 {
		t.Fatalf("keep-alive: conns %d requests %d, want 1 and 2", s.Conns(), s.Requests())
	}
	// A POST is not replayable, so the Transport surfaces the reset.
	if _, err := c.Post(s.URL, "text/plain", strings.NewReader("x")); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("err = %v, want ECONNRESET", err)
	}
	if _, _, err := get(c, s.URL); err != nil {
		t.Fatal(err)
	}
	if s.Conns() != 2 || s.Requests() != 4 {
		t.Errorf("after reset: conns %d requests %d, want 2 and 4", s.Conns(), s.Requests())
	}
}

// TestTransportReplaysGETOnReusedConn pins down net/http behaviour the retry
// library must account for: when a reused keep-alive connection fails before
// the first response byte, the Transport silently re-sends an idempotent
// request on a new connection, so one client call costs two server requests.
func TestTransportReplaysGETOnReusedConn(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{Behavior: Script(OK(), ResetBeforeHeaders(), OK())})
	c := newClient(t, 0)
	for range 2 {
		if resp, _, err := get(c, s.URL); err != nil || resp.StatusCode != 200 {
			t.Fatalf("got %v, %v", resp, err)
		}
	}
	if s.Requests() != 3 || s.Conns() != 2 {
		t.Errorf("requests %d conns %d, want 3 and 2", s.Requests(), s.Conns())
	}
}

func TestPOSTLogged(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{})
	body := []byte(`{"name":"x"}`)
	req, _ := http.NewRequest("POST", s.URL+"/v1/items?dry=1&a=b", bytes.NewReader(body))
	req.Header.Set("X-Trace", "abc")
	resp, err := newClient(t, 0).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	log := s.Log()
	if len(log) != 1 {
		t.Fatalf("log %+v", log)
	}
	e := log[0]
	sum := sha256.Sum256(body)
	if e.N != 0 || e.Method != "POST" || e.Path != "/v1/items" || e.RawQuery != "dry=1&a=b" ||
		e.Header.Get("X-Trace") != "abc" || e.BodyLen != int64(len(body)) ||
		e.BodySHA256 != hex.EncodeToString(sum[:]) || e.BodyErr != nil || e.Kind != KindOK {
		t.Errorf("entry %+v", e)
	}
}

// pattern yields an endless deterministic byte stream without holding it.
type pattern struct{ i byte }

func (p *pattern) Read(b []byte) (int, error) {
	for j := range b {
		b[j] = p.i
		p.i = p.i*31 + 7
	}
	return len(b), nil
}

func TestLargeStreamedBodyHashed(t *testing.T) {
	leaktest.Check(t)
	if testing.Short() {
		t.Skip("50 MiB upload")
	}
	const size = 50 << 20
	s := Start(t, Config{})
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(&pattern{}, size), h) // unknown length: chunked
	resp, err := newClient(t, 0).Post(s.URL+"/upload", "application/octet-stream", src)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	e := s.Log()[0]
	if e.BodyLen != size || e.BodySHA256 != hex.EncodeToString(h.Sum(nil)) {
		t.Errorf("len %d hash %s", e.BodyLen, e.BodySHA256)
	}
}

func TestMaxBodyBytes(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{MaxBodyBytes: 10})
	resp, err := newClient(t, 0).Post(s.URL, "text/plain", strings.NewReader(strings.Repeat("x", 11)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || !errors.Is(s.Log()[0].BodyErr, ErrBodyTooLarge) {
		t.Errorf("status %d log %+v", resp.StatusCode, s.Log())
	}
}

func TestLogLimit(t *testing.T) {
	leaktest.Check(t)
	s := Start(t, Config{LogLimit: 2})
	off := Start(t, Config{LogLimit: LogDisabled})
	c := newClient(t, 0)
	for range 5 {
		for _, srv := range []*Server{s, off} {
			if _, _, err := get(c, srv.URL); err != nil {
				t.Fatal(err)
			}
		}
	}
	log := s.Log()
	if len(log) != 2 || log[0].N != 3 || log[1].N != 4 {
		t.Errorf("bounded log %+v, want the last two", log)
	}
	if len(off.Log()) != 0 || off.Requests() != 5 || off.Served(KindOK) != 5 {
		t.Errorf("disabled log: %d entries, %d requests", len(off.Log()), off.Requests())
	}
}

func TestCloseEndsStallsAndLeaksNothing(t *testing.T) {
	for _, f := range []Fault{StallBeforeHeaders(), StallMidBody()} {
		t.Run(f.Kind.String(), func(t *testing.T) {
			leaktest.Check(t)
			arrived := make(chan struct{})
			s, err := New(Config{Behavior: func(int, *http.Request) Fault {
				close(arrived)
				return f
			}})
			if err != nil {
				t.Fatal(err)
			}
			c := newClient(t, 0)
			errc := make(chan error, 1)
			go func() {
				_, _, err := get(c, s.URL)
				errc <- err
			}()
			<-arrived
			s.Close() // must return although the handler is stalled
			if err := <-errc; err == nil {
				t.Error("the client got no error from a closed server")
			}
			s.Close() // idempotent
			if _, _, err := get(c, s.URL); err == nil {
				t.Error("request after Close succeeded")
			}
		})
	}
}

func TestCloseWithHijackedAndIdleConns(t *testing.T) {
	leaktest.Check(t)
	s, err := New(Config{Behavior: Script(OK(), ResetAfterHeaders(), CloseNoResponse())})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		get(newClient(t, 0), s.URL) // each client leaves at most one idle conn
	}
	s.Close()
}

func TestClosedPort(t *testing.T) {
	leaktest.Check(t)
	addr := ClosedPort(t)
	_, err := net.Dial("tcp", addr)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want ECONNREFUSED", addr, err)
	}
}

func TestKindString(t *testing.T) {
	if KindResetAfterHeaders.String() != "reset-after-headers" || Kind(200).String() != "unknown" {
		t.Error(KindResetAfterHeaders.String(), Kind(200).String())
	}
}

// rw is a reusable ResponseWriter so that only the handler's own
// allocations are counted.
type rw struct{ h http.Header }

func (w *rw) Header() http.Header         { return w.h }
func (w *rw) Write(b []byte) (int, error) { return len(b), nil }
func (w *rw) WriteHeader(int)             {}

func TestHealthyPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for name, b := range map[string]Behavior{"nil": nil, "script": Script(OK()), "always": Always(OK())} {
		s := Start(t, Config{LogLimit: LogDisabled, Behavior: b})
		r, _ := http.NewRequest("GET", s.URL, nil)
		r.Body = http.NoBody
		w := &rw{h: http.Header{}}
		if n := testing.AllocsPerRun(100, func() { clear(w.h); s.handle(w, r) }); n != 0 {
			t.Errorf("%s: %v allocs per healthy request, want 0", name, n)
		}
	}
}

func BenchmarkHealthyGET(b *testing.B) {
	s := Start(b, Config{LogLimit: LogDisabled})
	c := newClient(b, 0)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get(s.URL)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkBareNetHTTPGET is BenchmarkHealthyGET's baseline: the same client
// against an httptest server with a minimal handler, so the difference is
// what faultserver adds.
func BenchmarkBareNetHTTPGET(b *testing.B) {
	body := []byte("ok\n")
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	b.Cleanup(s.Close)
	c := newClient(b, 0)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get(s.URL)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
