package httpretry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hordekit/httpretry/internal/leaktest"
)

func TestIsRetryableStatus(t *testing.T) {
	for code, want := range map[int]bool{200: false, 301: false, 400: false, 404: false, 408: false,
		429: true, 499: false, 500: true, 501: true, 502: true, 503: true, 504: true, 599: true} {
		if got := IsRetryableStatus(code); got != want {
			t.Errorf("IsRetryableStatus(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestIsTransientTable(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("boom"), false},
		{"canceled", context.Canceled, false},
		{"canceled in url.Error", &url.Error{Op: "Get", URL: "http://x", Err: context.Canceled}, false},
		{"deadline (per attempt)", fmt.Errorf("attempt: %w", context.DeadlineExceeded), true},
		{"os deadline", os.ErrDeadlineExceeded, true},
		{"refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, true},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		{"broken pipe", &net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)}, true},
		{"unexpected EOF", fmt.Errorf("reading body: %w", io.ErrUnexpectedEOF), true},
		{"EOF in url.Error", &url.Error{Op: "Get", URL: "http://x", Err: io.EOF}, true},
		{"dns temporary", &net.DNSError{Err: "server misbehaving", Name: "x", IsTemporary: true}, true},
		{"dns timeout", &net.DNSError{Err: "i/o timeout", Name: "x", IsTimeout: true}, true},
		{"dns no such host", &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, false},
		{"goaway", errors.New("http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR"), true},
		{"stream reset", errors.New("stream error: stream ID 3; REFUSED_STREAM"), true},
		{"unsupported scheme", &url.Error{Op: "Get", URL: "ftp://x", Err: errors.New("unsupported protocol scheme \"ftp\"")}, false},
		{"unknown authority", &url.Error{Op: "Get", URL: "https://x", Err: x509.UnknownAuthorityError{}}, false},
		{"hostname", x509.HostnameError{Host: "x"}, false},
	}
	for _, c := range cases {
		if got := IsTransient(c.err); got != c.want {
			t.Errorf("%s: IsTransient(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
	if _, err := url.Parse("http://[::1"); IsTransient(err) {
		t.Errorf("malformed URL %v is transient", err)
	}
}

// The cases below make real failures on loopback and classify what net/http
// returns, so a change in the standard library's errors shows up here.

func get(t *testing.T, client *http.Client, rawURL string) error {
	t.Helper()
	resp, err := client.Get(rawURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return err
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

func TestTransientOnLoopback(t *testing.T) {
	leaktest.Check(t)

	t.Run("closed port", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		err = get(t, newClient(), "http://"+addr+"/")
		if err == nil || !IsTransient(err) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("closed port: %v, want a transient ECONNREFUSED", err)
		}
	})

	t.Run("hijack and close", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _, _ := http.NewResponseController(w).Hijack()
			c.Close()
		}))
		defer srv.Close()
		if err := get(t, newClient(), srv.URL); err == nil || !IsTransient(err) {
			t.Fatalf("server closed the connection: %v, want transient", err)
		}
	})

	t.Run("reset mid-body", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, buf, _ := http.NewResponseController(w).Hijack()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
			buf.Flush()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}))
		defer srv.Close()
		err := get(t, newClient(), srv.URL)
		if err == nil || !IsTransient(err) {
			t.Fatalf("reset mid-body: %v, want transient", err)
		}
	})

	t.Run("stall past the attempt deadline", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(release)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		resp, err := newClient().Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatal("stalled server answered")
		}
		if !IsTransient(err) {
			t.Fatalf("attempt deadline: %v, want transient", err)
		}
	})

	t.Run("client timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(release)
		c := newClient()
		c.Timeout = 20 * time.Millisecond
		if err := get(t, c, srv.URL); err == nil || !IsTransient(err) {
			t.Fatalf("client timeout: %v, want transient", err)
		}
	})

	t.Run("TLS to a plain-HTTP port", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		defer srv.Close()
		err := get(t, newClient(), "https://"+srv.Listener.Addr().String()+"/")
		if err == nil || IsTransient(err) {
			t.Fatalf("TLS to plain HTTP: %v, want a non-transient error", err)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		srv.Config.ErrorLog = quietLog()
		defer srv.Close()
		err := get(t, newClient(), srv.URL)
		if err == nil || IsTransient(err) {
			t.Fatalf("untrusted certificate: %v, want a non-transient error", err)
		}
	})

	t.Run("caller cancelled", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
		defer srv.Close()
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		go cancel()
		resp, err := newClient().Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatal("cancelled request answered")
		}
		if IsTransient(err) {
			t.Fatalf("caller cancellation %v is transient", err)
		}
	})
}

// quietLog drops the TLS server's complaints about the client hanging up.
func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }

// The errors net/http returns for requests it knows the server did not
// process are never-sent (a POST may go again) and transient.
func TestNeverSentAfterGOAWAYAndRewindFailures(t *testing.T) {
	for _, msg := range []string{
		`Post "https://h/": http2: Transport: cannot retry err [http2: Transport received Server's graceful shutdown GOAWAY] after Request.Body was written; define Request.GetBody to avoid this error`,
		"http2: Transport received Server's graceful shutdown GOAWAY",
		"http2: client conn not usable",
		"net/http: cannot rewind body after connection loss",
		"stream error: stream ID 7; REFUSED_STREAM",
	} {
		err := errors.New(msg)
		if !neverSent(err) || !IsTransient(err) {
			t.Errorf("%q: neverSent %v, IsTransient %v; want both", msg, neverSent(err), IsTransient(err))
		}
	}
	for _, err := range []error{
		errors.New("http2: client connection lost"), // the server may have processed it
		&StatusError{Response: &http.Response{StatusCode: 503, Request: &http.Request{URL: &url.URL{Path: "/REFUSED_STREAM"}}}},
	} {
		if neverSent(err) {
			t.Errorf("%v: neverSent, want not", err)
		}
	}
}
