package faultserver

import (
	"bytes"
	"compress/gzip"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Resource is a document served the way a static file server serves one
// (through http.ServeContent): with its validators, Accept-Ranges, and
// answers to Range and If-Range, so that a client's resume of a cut body
// meets real range semantics. A Resource is read-only once served.
type Resource struct {
	// Body is the document.
	Body []byte
	// ETag is sent as it is, quotes included (`"v1"`, or `W/"v1"` for a weak
	// one); empty sends none.
	ETag string
	// LastModified is sent when not zero. With Date, it is a strong
	// validator when at least a second older than the response.
	LastModified time.Time
	// ContentType is sent when set; else it is sniffed.
	ContentType string
	// NoRanges serves the document whole, ignoring Range, and announces no
	// Accept-Ranges, like a server without range support.
	NoRanges bool
	// Gzip serves the document gzip-encoded (Content-Encoding: gzip, same
	// validators, ranges over the encoded bytes) to requests that accept
	// gzip, like a precompressed static file.
	Gzip bool

	gzOnce sync.Once
	gz     []byte
}

// ServeResource returns a KindResource fault serving r.
func ServeResource(r *Resource) Fault { return Fault{Kind: KindResource, Resource: r} }

// WithBodyFault returns f with the body fault bf.
func (f Fault) WithBodyFault(bf BodyFault) Fault { f.BodyFault = bf; return f }

// BodyFault breaks the body a KindResource response sends. Offsets count the
// bytes of this response's body, from its first.
type BodyFault struct {
	// CutAfter, when positive, ends the connection after that many body
	// bytes: with a TCP reset when Reset is set, else a clean close (the
	// client sees an unexpected EOF).
	CutAfter int64
	Reset    bool
	// StallAfter, when positive, stops sending after that many body bytes
	// until the request's context ends, the server closes, or MaxStall (if
	// set) elapses, then sends the rest.
	StallAfter int64
	MaxStall   time.Duration
	// BytesPerSecond, when positive, paces the body, in real time.
	BytesPerSecond int
}

// Encoded returns the gzip encoding of r.Body that Gzip serves.
func (r *Resource) Encoded() []byte {
	r.gzOnce.Do(func() {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(r.Body)
		_ = zw.Close()
		r.gz = buf.Bytes()
	})
	return r.gz
}

// BodyBytes returns how many body bytes KindResource responses have written
// in all: what a resumed download cost on the wire.
func (s *Server) BodyBytes() int64 { return s.bodyBytes.Load() }

func (s *Server) serveResource(w http.ResponseWriter, r *http.Request, f Fault) {
	res := f.Resource
	if res == nil {
		http.Error(w, "faultserver: KindResource without a Resource", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	body := res.Body
	if res.Gzip && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		body = res.Encoded()
		h.Set("Content-Encoding", "gzip")
	}
	if res.ETag != "" {
		h.Set("ETag", res.ETag)
	}
	if res.ContentType != "" {
		h.Set("Content-Type", res.ContentType)
	}
	h.Set("Date", s.now().UTC().Format(http.TimeFormat))
	if res.NoRanges {
		r.Header.Del("Range")
		r.Header.Del("If-Range")
	}
	fw := &faultyWriter{ResponseWriter: w, s: s, r: r, bf: f.BodyFault, noRanges: res.NoRanges}
	http.ServeContent(fw, r, "", res.LastModified, bytes.NewReader(body))
}

// errCut stops ServeContent's copy once a fault has ended the response.
var errCut = errors.New("faultserver: body cut")

// faultyWriter applies a BodyFault to the bytes ServeContent writes.
type faultyWriter struct {
	http.ResponseWriter
	s        *Server
	r        *http.Request
	bf       BodyFault
	noRanges bool
	sent     int64
	cut      bool
}

func (fw *faultyWriter) WriteHeader(code int) {
	if fw.noRanges {
		// ServeContent always announces ranges; a server without them
		// does not.
		fw.Header().Del("Accept-Ranges")
	}
	fw.ResponseWriter.WriteHeader(code)
}

func (fw *faultyWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if fw.cut {
			return written, errCut
		}
		chunk := p
		if limit := fw.nextLimit(); limit >= 0 && int64(len(chunk)) > limit-fw.sent {
			chunk = chunk[:limit-fw.sent]
		}
		if fw.bf.BytesPerSecond > 0 {
			step := max(fw.bf.BytesPerSecond/20, 1) // a write every 50 ms
			if len(chunk) > step {
				chunk = chunk[:step]
			}
		}
		if len(chunk) > 0 {
			n, err := fw.ResponseWriter.Write(chunk)
			fw.sent += int64(n)
			fw.s.bodyBytes.Add(int64(n))
			written += n
			if err != nil {
				return written, err
			}
			p = p[n:]
			if fw.bf.BytesPerSecond > 0 {
				_ = http.NewResponseController(fw.ResponseWriter).Flush()
				if !fw.pause(time.Duration(n) * time.Second / time.Duration(fw.bf.BytesPerSecond)) {
					fw.cut = true
				}
			}
		}
		fw.applyAt()
	}
	return written, nil
}

// nextLimit is the offset at which the next fault happens, or -1.
func (fw *faultyWriter) nextLimit() int64 {
	switch {
	case fw.bf.StallAfter > 0 && fw.sent < fw.bf.StallAfter && (fw.bf.CutAfter <= 0 || fw.bf.StallAfter < fw.bf.CutAfter):
		return fw.bf.StallAfter
	case fw.bf.CutAfter > 0:
		return fw.bf.CutAfter
	}
	return -1
}

// applyAt makes the fault due at the current offset happen.
func (fw *faultyWriter) applyAt() {
	switch {
	case fw.bf.StallAfter > 0 && fw.sent == fw.bf.StallAfter:
		_ = http.NewResponseController(fw.ResponseWriter).Flush()
		if !fw.s.stall(fw.r.Context(), fw.bf.MaxStall) {
			fw.cut = true
		}
		fw.bf.StallAfter = 0 // once
	case fw.bf.CutAfter > 0 && fw.sent >= fw.bf.CutAfter:
		fw.cut = true
		_ = http.NewResponseController(fw.ResponseWriter).Flush()
		c, buf, err := http.NewResponseController(fw.ResponseWriter).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		_ = buf.Flush()
		if tc, ok := c.(*net.TCPConn); ok && fw.bf.Reset {
			// A reset drops what the kernel has not sent yet: wait until
			// the peer has it all, so the cut falls exactly at CutAfter.
			fw.s.waitSent(fw.r.Context(), tc)
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
		fw.s.untrack(c)
	}
}

// pause waits d in real time, or less if the request ends or the server
// closes; it reports whether the response should go on.
func (fw *faultyWriter) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-fw.r.Context().Done():
	case <-fw.s.closing:
	}
	return false
}
