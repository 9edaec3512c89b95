package httpretry

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hordekit/httpretry/internal/leaktest"
)

// goawayServer is a TLS HTTP/2 server that ends every connection after a few
// streams with a graceful GOAWAY (as nginx does at keepalive_requests), and
// counts how often it processed each request id.
type goawayServer struct {
	*httptest.Server
	every     int64
	handled   atomic.Int64
	mu        sync.Mutex
	processed map[string]int
}

func newGoawayServer(t *testing.T, every int64) *goawayServer {
	g := &goawayServer{every: every, processed: map[string]int{}}
	g.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || len(body) != 4096 {
			http.Error(w, "short body", http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.processed[r.Header.Get("X-Request-Id")]++
		g.mu.Unlock()
		if g.handled.Add(1)%g.every == 0 {
			// Go's HTTP/2 server turns this into a graceful GOAWAY.
			w.Header().Set("Connection", "close")
		}
		fmt.Fprint(w, "done")
	}))
	g.EnableHTTP2 = true
	g.StartTLS()
	t.Cleanup(g.Close)
	return g
}

// opaque hides a body's type, so that http.NewRequest cannot give the
// request a GetBody: the case net/http cannot resend by itself.
type opaque struct{ io.Reader }

// Through a server that sends GOAWAY every 5 streams, 100 POSTs and 100 PUTs
// from 20 concurrent callers, with 4 KiB bodies and no GetBody, all succeed,
// and the server processes each exactly once: the Transport gives each
// attempt a GetBody so net/http resends what the server never processed,
// and classifies the GOAWAY errors as never sent.
func TestGOAWAYLosesNoRequestWithABody(t *testing.T) {
	leaktest.Check(t)
	srv := newGoawayServer(t, 5)
	base := srv.Client().Transport.(*http.Transport)
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: &Transport{Base: base, Policy: Policy{Logger: quiet, MinWait: 1, MaxWait: 1, Backoff: Constant}}}

	payload := bytes.Repeat([]byte("x"), 4096)
	var failed atomic.Int64
	var wg sync.WaitGroup
	ids := make(chan string, 200)
	for i := range 200 {
		method := "POST"
		if i%2 == 1 {
			method = "PUT"
		}
		ids <- fmt.Sprintf("%s-%d", method, i)
	}
	close(ids)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				method, _, _ := strings.Cut(id, "-")
				req, _ := http.NewRequest(method, srv.URL, opaque{bytes.NewReader(payload)})
				req.ContentLength = int64(len(payload))
				req.Header.Set("X-Request-Id", id)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					t.Errorf("%s: %v", id, err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
					failed.Add(1)
					t.Errorf("%s: %s %s", id, resp.Proto, resp.Status)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of 200 requests failed", failed.Load())
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.processed) != 200 {
		t.Fatalf("the server processed %d distinct requests, want 200", len(srv.processed))
	}
	for id, n := range srv.processed {
		if n != 1 {
			t.Errorf("%s processed %d times", id, n)
		}
	}
}
