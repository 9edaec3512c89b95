// Package faultserver is a loopback HTTP/1.1 server that misbehaves on
// demand: error statuses with Retry-After, connection resets before or after
// the headers, silent closes, stalls and truncated bodies. Tests, benchmarks
// and the CLI demo share it so that retry and breaker code is exercised
// against the errors a real net/http client produces on real sockets, not
// against errors a mock was taught to return.
//
// A Behavior picks a Fault per request (Script for fixed sequences, any func
// for phases or randomness) and can be swapped while the server runs. The
// server counts requests, TCP connections and faults served, and logs each
// request with a SHA-256 of its body so body replay can be verified.
package faultserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// LogDisabled as Config.LogLimit turns the request log off, so a benchmark
// doing millions of requests neither grows memory nor hashes bodies.
const LogDisabled = -1

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes is
// 0: far above any test upload, but bounded so a runaway client cannot keep a
// handler reading forever.
const DefaultMaxBodyBytes = 1 << 30

// ErrBodyTooLarge is recorded in Entry.BodyErr when a request body exceeds
// the limit; the server then answers 413 and closes the connection.
var ErrBodyTooLarge = errors.New("faultserver: request body too large")

// Config configures a Server. The zero Config serves OK to every request and
// logs every request.
type Config struct {
	// Behavior picks each request's fault; nil means OK for all.
	Behavior Behavior
	// DefaultBody is the body of 200 responses whose Fault has no Body; nil
	// means "ok\n".
	DefaultBody []byte
	// Now is the clock for Retry-After dates; nil means time.Now. Tests with
	// a fake clock pass theirs so the date and their expectation agree.
	Now func() time.Time
	// LogLimit bounds the request log: 0 keeps every entry, n > 0 keeps the
	// most recent n, LogDisabled keeps none (and skips hashing).
	LogLimit int
	// MaxBodyBytes limits how much of a request body is read; 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// ErrorLog receives net/http's server errors; nil discards them, because
	// the faults provoke errors on purpose and they would only be noise.
	ErrorLog *log.Logger
}

// Entry is one logged request.
type Entry struct {
	// N is the request's arrival index since the server started, from 0.
	N int64
	// Method, Path and RawQuery come from the request line.
	Method, Path, RawQuery string
	// Header is a copy of the request headers.
	Header http.Header
	// BodyLen is the number of body bytes received.
	BodyLen int64
	// BodySHA256 is the hex SHA-256 of the received body, computed while
	// reading so that large uploads are never held in memory.
	BodySHA256 string
	// BodyErr is set when the body could not be read completely (client
	// abort, or ErrBodyTooLarge); no fault is served then and Kind is unset.
	BodyErr error
	// Kind is the kind of fault served.
	Kind Kind
}

// Server is a running fault server. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL, "http://127.0.0.1:port", without a trailing slash.
	URL string
	// Addr is the listening address, "127.0.0.1:port".
	Addr string

	srv         *http.Server
	defaultBody []byte
	now         func() time.Time
	maxBody     int64
	logLimit    int

	behavior  atomic.Pointer[installed]
	requests  atomic.Int64
	conns     atomic.Int64
	bodyBytes atomic.Int64 // body bytes KindResource wrote
	served    [numKinds]atomic.Int64

	logMu    sync.Mutex
	log      []Entry
	logStart int // index of the oldest entry once the ring is full

	closing   chan struct{} // closed by Close to end every stall
	serveDone chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex // guards closed and open
	closed bool
	open   map[net.Conn]struct{} // conns whose goroutines Close waits for
	wg     sync.WaitGroup        // one per conn in open
}

// installed is a Behavior with its own request counter, so that a Script
// installed mid-run starts at its first fault.
type installed struct {
	fn Behavior
	n  atomic.Int64
}

// New starts a server on 127.0.0.1 with an ephemeral port.
func New(cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{
		Addr:        ln.Addr().String(),
		defaultBody: cfg.DefaultBody,
		now:         cfg.Now,
		maxBody:     cfg.MaxBodyBytes,
		logLimit:    cfg.LogLimit,
		closing:     make(chan struct{}),
		serveDone:   make(chan struct{}),
		open:        map[net.Conn]struct{}{},
	}
	s.URL = "http://" + s.Addr
	if s.defaultBody == nil {
		s.defaultBody = []byte("ok\n")
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	s.SetBehavior(cfg.Behavior)
	errLog := cfg.ErrorLog
	if errLog == nil {
		errLog = log.New(io.Discard, "", 0)
	}
	s.srv = &http.Server{
		Handler:   http.HandlerFunc(s.handle),
		ConnState: s.connState,
		ErrorLog:  errLog,
	}
	go func() {
		defer close(s.serveDone)
		_ = s.srv.Serve(ln) // returns when Close closes the listener
	}()
	return s, nil
}

// Start is New for tests: it fails tb if the server cannot start and closes
// the server when tb ends.
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := New(cfg)
	if err != nil {
		tb.Fatalf("faultserver: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// SetBehavior replaces the behaviour for requests arriving from now on; nil
// means OK for all. The new behaviour's n starts at 0.
func (s *Server) SetBehavior(b Behavior) {
	s.behavior.Store(&installed{fn: b})
}

// Requests returns how many requests have arrived, including those the
// client's Transport replayed on its own.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Conns returns how many TCP connections the server has accepted.
func (s *Server) Conns() int64 { return s.conns.Load() }

// Served returns how many faults of kind k have been served.
func (s *Server) Served(k Kind) int64 {
	if k >= numKinds {
		return 0
	}
	return s.served[k].Load()
}

// Log returns a copy of the request log, oldest first. Entries are appended
// once a body has been read, so under concurrency their order may differ
// from N's.
func (s *Server) Log() []Entry {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	out := make([]Entry, 0, len(s.log))
	out = append(out, s.log[s.logStart:]...)
	return append(out, s.log[:s.logStart]...)
}

// Close stops the server: it ends every stall, closes the listener and every
// connection (hijacked ones included), and waits until every connection's
// goroutine has finished its handler. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
		_ = s.srv.Close()
		<-s.serveDone
		// srv.Close does not know hijacked conns; close those too.
		s.mu.Lock()
		for c := range s.open {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// connState counts and tracks connections. StateActive and StateIdle fire on
// every request, so they cost nothing here.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.mu.Lock()
		if s.closed {
			// Accepted while closing: Close may already be waiting, so the
			// WaitGroup must not grow; the conn's goroutine exits on the
			// closed socket.
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.open[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.conns.Add(1)
	case http.StateClosed:
		s.untrack(c)
	}
	// StateHijacked: the handler that hijacked c untracks it once done, so
	// Close also waits for hijacking handlers.
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	if _, ok := s.open[c]; ok {
		delete(s.open, c)
		s.wg.Done()
	}
	s.mu.Unlock()
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// textPlain is shared by every response that sets it rather than allocated
// per request; net/http only reads header values.
var textPlain = []string{"text/plain; charset=utf-8"}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1) - 1
	b := s.behavior.Load()
	i := int(b.n.Add(1) - 1)

	// Read the whole body before any fault, so that every fault happens
	// after the server has received (and could have acted on) the request.
	logging := s.logLimit >= 0
	var h hash.Hash
	if logging {
		h = sha256.New()
	}
	size, err := s.readBody(r, h)
	var e Entry
	if logging {
		e = Entry{N: n, Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Header: r.Header.Clone(), BodyLen: size, BodySHA256: hex.EncodeToString(h.Sum(nil)), BodyErr: err}
	}
	if err != nil {
		if logging {
			s.appendLog(e)
		}
		if errors.Is(err, ErrBodyTooLarge) {
			w.Header().Set("Connection", "close")
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		panic(http.ErrAbortHandler) // the client is gone; write nothing
	}

	f := OK()
	if b.fn != nil {
		f = b.fn(i, r)
	}
	if f.Kind >= numKinds {
		http.Error(w, "faultserver: unknown fault kind", http.StatusInternalServerError)
		return
	}
	s.served[f.Kind].Add(1)
	if logging {
		e.Kind = f.Kind
		s.appendLog(e)
	}
	s.serve(w, r, f)
}

// readBody drains r.Body through a pooled buffer, hashing into h if non-nil.
func (s *Server) readBody(r *http.Request, h hash.Hash) (int64, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return 0, nil
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		m, err := r.Body.Read(buf)
		if m > 0 {
			if n+int64(m) > s.maxBody {
				return n, ErrBodyTooLarge
			}
			n += int64(m)
			if h != nil {
				h.Write(buf[:m])
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func (s *Server) appendLog(e Entry) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if s.logLimit > 0 && len(s.log) == s.logLimit {
		s.log[s.logStart] = e
		s.logStart = (s.logStart + 1) % s.logLimit
		return
	}
	s.log = append(s.log, e)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, f Fault) {
	switch f.Kind {
	case KindOK, KindStatus:
		s.respond(w, f)
	case KindResetBeforeHeaders:
		s.hijack(w, nil, true)
	case KindCloseNoResponse:
		s.hijack(w, nil, false)
	case KindResetAfterHeaders:
		s.hijack(w, s.rawPartial(f), true)
	case KindStallBeforeHeaders:
		if !s.stall(r.Context(), f.MaxStall) {
			panic(http.ErrAbortHandler) // never let net/http invent a 200
		}
		s.respond(w, f)
	case KindResource:
		s.serveResource(w, r, f)
	case KindStallMidBody, KindTruncatedBody:
		body, p := partial(f)
		s.header(w.Header(), f, len(body))
		w.WriteHeader(status(f))
		_, _ = w.Write(body[:p])
		if f.Kind == KindTruncatedBody {
			// Returning short of Content-Length makes net/http close the
			// connection cleanly after flushing: a truncated body.
			return
		}
		_ = http.NewResponseController(w).Flush()
		if !s.stall(r.Context(), f.MaxStall) {
			panic(http.ErrAbortHandler)
		}
		_, _ = w.Write(body[p:])
	}
}

func status(f Fault) int {
	if f.Status == 0 {
		return http.StatusOK
	}
	return f.Status
}

// respond writes a full response. The loopback GET benchmark measures the
// client, not this server, so the healthy case costs no more than the
// smallest net/http handler: touching w.Header() would make net/http clone
// the header map at WriteHeader (4 allocations per request), so a plain 200
// with a small body is just a Write, with Content-Length and Content-Type
// (sniffed) filled in by net/http.
func (s *Server) respond(w http.ResponseWriter, f Fault) {
	code := status(f)
	body := f.Body
	if body == nil && code == http.StatusOK {
		body = s.defaultBody
	}
	if code == http.StatusOK && len(f.Header) == 0 && f.RetryAfterForm == RetryAfterNone && len(body) <= 2048 {
		_, _ = w.Write(body)
		return
	}
	h := w.Header()
	// Small bodies get Content-Length from net/http for free (it buffers
	// 2048 bytes); larger ones would be chunked, unlike a typical upstream.
	cl := -1
	if len(body) > 2048 {
		cl = len(body)
	}
	s.header(h, f, cl)
	if _, ok := h["Content-Type"]; !ok && len(body) > 0 {
		h["Content-Type"] = textPlain
	}
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// header copies f's headers and Retry-After into h and sets Content-Length
// if cl >= 0.
func (s *Server) header(h http.Header, f Fault, cl int) {
	for k, v := range f.Header {
		h[k] = v[:len(v):len(v)] // full slice: an append can't write into f
	}
	switch f.RetryAfterForm {
	case RetryAfterSeconds:
		h.Set("Retry-After", strconv.FormatInt(int64(f.RetryAfter/time.Second), 10))
	case RetryAfterDate:
		h.Set("Retry-After", s.now().Add(f.RetryAfter).UTC().Format(http.TimeFormat))
	}
	if cl >= 0 {
		h.Set("Content-Length", strconv.Itoa(cl))
	}
}

// partial returns the full body of a partial kind and how much of it to send.
func partial(f Fault) ([]byte, int) {
	body := f.Body
	if len(body) == 0 {
		body = filler
	}
	p := f.Partial
	if p <= 0 {
		p = 10
	}
	return body, min(p, len(body)-1)
}

// rawPartial renders the status line, headers and partial body of f as
// bytes, for writing on a hijacked connection that is about to be reset.
func (s *Server) rawPartial(f Fault) []byte {
	body, p := partial(f)
	code := status(f)
	h := http.Header{}
	s.header(h, f, len(body))
	buf := []byte("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n")
	for k, vs := range h {
		for _, v := range vs {
			buf = append(buf, k+": "+v+"\r\n"...)
		}
	}
	buf = append(buf, "\r\n"...)
	return append(buf, body[:p]...)
}

// hijack takes the connection from net/http, writes data, and closes it:
// with SO_LINGER 0 if reset, so the kernel sends RST instead of FIN and the
// client sees ECONNRESET rather than EOF.
func (s *Server) hijack(w http.ResponseWriter, data []byte, reset bool) {
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer s.untrack(c)
	if len(data) > 0 {
		_, _ = c.Write(data)
	}
	if tc, ok := c.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// stall blocks until ctx ends, the server closes, or limit (if > 0) elapses;
// it reports whether limit elapsed, i.e. whether the response should go on.
func (s *Server) stall(ctx context.Context, limit time.Duration) bool {
	var timeout <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-timeout:
		return true
	case <-ctx.Done():
	case <-s.closing:
	}
	return false
}

// ClosedPort returns a 127.0.0.1 address on which nothing listens, so a
// client dialing it gets connection refused. It listens on an ephemeral port
// and closes it; the kernel does not hand that port out again soon, but it
// is not reserved, so use the address promptly.
func ClosedPort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultserver: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		tb.Fatalf("faultserver: %v", err)
	}
	return addr
}
