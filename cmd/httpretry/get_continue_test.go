package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hordekit/httpretry/internal/faultserver"
)

func cutFirst(n int, res *faultserver.Resource, bf faultserver.BodyFault) faultserver.Behavior {
	return func(i int, _ *http.Request) faultserver.Fault {
		f := faultserver.ServeResource(res)
		if i < n {
			f = f.WithBodyFault(bf)
		}
		return f
	}
}

// An -o download whose connection is reset every 512 KiB for the first four
// connections lands byte for byte, exit 0, and leaves no record behind.
func TestGetDownloadThroughCutsByteExact(t *testing.T) {
	t.Parallel()
	doc := &faultserver.Resource{Body: getBody(4 << 20), ETag: `"m1"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: cutFirst(4, doc, faultserver.BodyFault{CutAfter: 512 << 10, Reset: true})})
	file := filepath.Join(t.TempDir(), "model.bin")
	r := getRunBinary(t, nil, append(getFast, "-v", "-o", file, srv.URL+"/model.bin")...)
	if r.code != getExitOK {
		t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	got, _ := os.ReadFile(file)
	if sha256.Sum256(got) != sha256.Sum256(doc.Body) {
		t.Fatalf("the file holds %d bytes that differ from the %d-byte document", len(got), len(doc.Body))
	}
	if n := len(getLines(r.stderr, "resume_at=")); n != 4 {
		t.Errorf("want 4 resume lines, got %d:\n%s", n, r.stderr)
	}
	if _, err := os.Stat(file + getSidecarSuffix); err == nil {
		t.Error("the record of an incomplete download outlived the download")
	}
	if sent := srv.BodyBytes(); sent != int64(len(doc.Body)) {
		t.Errorf("the server sent %d body bytes for %d", sent, len(doc.Body))
	}
}

// A body cut with nothing to resume it by exits 7, keeps the bytes that
// arrived, and says why.
func TestGetBodyCutWithoutResumeExits7(t *testing.T) {
	t.Parallel()
	doc := &faultserver.Resource{Body: getBody(100_000)} // no validator
	srv := faultserver.Start(t, faultserver.Config{Behavior: cutFirst(1, doc, faultserver.BodyFault{CutAfter: 10_000})})
	file := filepath.Join(t.TempDir(), "out")
	r := getRunBinary(t, nil, append(getFast, "-v", "-o", file, srv.URL)...)
	if r.code != getExitBody {
		t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, getExitBody, r.stderr)
	}
	for _, want := range []string{"body cut after 10000 bytes; cannot resume: the response has no strong validator",
		"keeps the 10000 bytes that arrived (the server does not allow resuming it)", "exit=7"} {
		if !bytes.Contains(r.stderr, []byte(want)) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if got, _ := os.ReadFile(file); !bytes.Equal(got, doc.Body[:10_000]) {
		t.Errorf("the file holds %d bytes, want the 10000 that arrived", len(got))
	}
}

// A download that failed (resumes off) keeps its bytes and a record of its
// version; --continue asks for exactly the rest of that version and
// completes the file byte for byte.
func TestGetContinueCompletesAPartialDownload(t *testing.T) {
	t.Parallel()
	doc := &faultserver.Resource{Body: getBody(300_000), ETag: `"c1"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: cutFirst(1, doc, faultserver.BodyFault{CutAfter: 100_000, Reset: true})})
	file := filepath.Join(t.TempDir(), "doc")
	r := getRunBinary(t, nil, append(getFast, "--max-resumes", "0", "-o", file, srv.URL)...)
	if r.code != getExitBody || !bytes.Contains(r.stderr, []byte("run the same command with --continue")) {
		t.Fatalf("first run: exit %d, want 7 with a hint; stderr:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(file + getSidecarSuffix); err != nil {
		t.Fatalf("no record of the partial download: %v", err)
	}

	r = getRunBinary(t, nil, append(getFast, "-C", "-", "-o", file, srv.URL)...)
	if r.code != getExitOK {
		t.Fatalf("--continue: exit %d; stderr:\n%s", r.code, r.stderr)
	}
	if got, _ := os.ReadFile(file); !bytes.Equal(got, doc.Body) {
		t.Fatalf("the continued file holds %d bytes that differ from the document", len(got))
	}
	last := srv.Log()[len(srv.Log())-1]
	if last.Header.Get("Range") != "bytes=100000-" || last.Header.Get("If-Range") != `"c1"` {
		t.Errorf("--continue asked Range %q If-Range %q", last.Header.Get("Range"), last.Header.Get("If-Range"))
	}
	if _, err := os.Stat(file + getSidecarSuffix); err == nil {
		t.Error("the record outlived the completed download")
	}

	// Once complete, --continue has nothing to add.
	r = getRunBinary(t, nil, append(getFast, "--continue", "-o", file, srv.URL)...)
	if r.code != getExitOK || !bytes.Contains(r.stderr, []byte("already complete")) {
		t.Fatalf("--continue on a complete file: exit %d; stderr:\n%s", r.code, r.stderr)
	}
}

// --continue never appends bytes of another version: with a record, the
// changed ETag makes the server send the whole new document, which is
// refused; without one, the overlap check catches it.
func TestGetContinueRefusesAChangedCopy(t *testing.T) {
	t.Parallel()
	v1 := &faultserver.Resource{Body: getBody(200_000), ETag: `"v1"`}
	v2 := &faultserver.Resource{Body: bytes.Repeat([]byte("v2"), 100_000), ETag: `"v2"`}
	for _, withRecord := range []bool{true, false} {
		t.Run(fmt.Sprintf("record=%v", withRecord), func(t *testing.T) {
			t.Parallel()
			srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.ServeResource(v2))})
			file := filepath.Join(t.TempDir(), "doc")
			partial := v1.Body[:80_000]
			if err := os.WriteFile(file, partial, 0o644); err != nil {
				t.Fatal(err)
			}
			if withRecord {
				os.WriteFile(file+getSidecarSuffix, []byte(`{"validator":"\"v1\"","length":200000}`), 0o644)
			}
			r := getRunBinary(t, nil, append(getFast, "--continue", "-o", file, srv.URL)...)
			if r.code != getExitContinue {
				t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, getExitContinue, r.stderr)
			}
			if !bytes.Contains(r.stderr, []byte("is untouched")) {
				t.Errorf("stderr does not say the file is untouched:\n%s", r.stderr)
			}
			if got, _ := os.ReadFile(file); !bytes.Equal(got, partial) {
				t.Fatalf("the partial file changed: %d bytes", len(got))
			}
		})
	}
}

// A partial file from another tool (no record) is checked by overlap and
// completed when its bytes match the server's.
func TestGetContinueWithoutRecordChecksTheOverlap(t *testing.T) {
	t.Parallel()
	doc := &faultserver.Resource{Body: getBody(500_000), ETag: `"o1"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.ServeResource(doc))})
	file := filepath.Join(t.TempDir(), "doc")
	os.WriteFile(file, doc.Body[:150_000], 0o644)
	r := getRunBinary(t, nil, append(getFast, "--continue", "-o", file, srv.URL)...)
	if r.code != getExitOK {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	if got, _ := os.ReadFile(file); !bytes.Equal(got, doc.Body) {
		t.Fatalf("the file holds %d bytes that differ from the document", len(got))
	}
	if rg := srv.Log()[0].Header.Get("Range"); rg != fmt.Sprintf("bytes=%d-", 150_000-65536) {
		t.Errorf("asked Range %q, want the last 64 KiB again", rg)
	}
}

// The attempt timeout bounds the wait for the headers, not the body: a body
// arriving at 200 KB/s for 1.3 s with --attempt-timeout 500ms lands whole
// after one request. And a body that stops is resumed after --stall-timeout.
func TestGetSlowAndStalledBodies(t *testing.T) {
	t.Parallel()
	t.Run("slow", func(t *testing.T) {
		t.Parallel()
		doc := &faultserver.Resource{Body: getBody(256 << 10), ETag: `"s"`}
		srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
			faultserver.ServeResource(doc).WithBodyFault(faultserver.BodyFault{BytesPerSecond: 200_000}))})
		r := getRunBinary(t, nil, append(getFast, "--attempt-timeout", "500ms", srv.URL)...)
		if r.code != getExitOK || !bytes.Equal(r.stdout, doc.Body) || srv.Requests() != 1 {
			t.Fatalf("exit %d, %d bytes, %d requests; want 0, the whole body, 1; stderr:\n%s", r.code, len(r.stdout), srv.Requests(), r.stderr)
		}
	})
	t.Run("stalled", func(t *testing.T) {
		t.Parallel()
		doc := &faultserver.Resource{Body: getBody(200_000), ETag: `"st"`}
		srv := faultserver.Start(t, faultserver.Config{Behavior: cutFirst(1, doc, faultserver.BodyFault{StallAfter: 50_000})})
		r := getRunBinary(t, nil, append(getFast, "-v", "--stall-timeout", "200ms", srv.URL)...)
		if r.code != getExitOK || !bytes.Equal(r.stdout, doc.Body) {
			t.Fatalf("exit %d, %d bytes; stderr:\n%s", r.code, len(r.stdout), r.stderr)
		}
		if !bytes.Contains(r.stderr, []byte("response body stalled: no data for 200ms")) || srv.Requests() != 2 {
			t.Fatalf("want a stall then one resume (2 requests, got %d); stderr:\n%s", srv.Requests(), r.stderr)
		}
	})
}

// A server with a private CA: --cacert trusts it, -k skips the check with a
// warning, and without either the TLS failure is not retried (exit 4).
func TestGetCACertAndInsecure(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secure") }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted handshake fails on purpose
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)

	r := getRunBinary(t, nil, append(getFast, srv.URL)...)
	if r.code != getExitNetwork || !bytes.Contains(r.stderr, []byte("certificate")) {
		t.Fatalf("untrusted: exit %d; stderr:\n%s", r.code, r.stderr)
	}
	r = getRunBinary(t, nil, append(getFast, "--cacert", ca, srv.URL)...)
	if r.code != getExitOK || string(r.stdout) != "secure" || len(r.stderr) != 0 {
		t.Fatalf("--cacert: exit %d, %q; stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	r = getRunBinary(t, nil, append(getFast, "-k", srv.URL)...)
	if r.code != getExitOK || !bytes.Contains(r.stderr, []byte("WARNING: --insecure")) {
		t.Fatalf("-k: exit %d; stderr:\n%s", r.code, r.stderr)
	}
	bad := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o644)
	if r = getRunBinary(t, nil, append(getFast, "--cacert", bad, srv.URL)...); r.code != exitUsage ||
		!strings.Contains(string(r.stderr), "holds no PEM certificate") {
		t.Fatalf("--cacert without PEM: exit %d; stderr:\n%s", r.code, r.stderr)
	}
}

// --hedge sends a second request when the first one's headers are late, and
// the first answer wins.
func TestGetHedge(t *testing.T) {
	t.Parallel()
	srv := faultserver.Start(t, faultserver.Config{Behavior: func(n int, _ *http.Request) faultserver.Fault {
		if n == 0 {
			return faultserver.StallBeforeHeaders()
		}
		return faultserver.OK().WithBody([]byte("second"))
	}})
	r := getRunBinary(t, nil, append(getFast, "-v", "--hedge", "50ms", srv.URL)...)
	if r.code != getExitOK || string(r.stdout) != "second" || srv.Requests() != 2 {
		t.Fatalf("exit %d, %q after %d requests; stderr:\n%s", r.code, r.stdout, srv.Requests(), r.stderr)
	}
	if r = getRunBinary(t, nil, "--hedge", "soon", srv.URL); r.code != exitUsage {
		t.Fatalf("--hedge soon: exit %d", r.code)
	}
}
