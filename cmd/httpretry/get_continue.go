package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/hordekit/httpretry"
)

// A partial -o download is resumable later when the server could serve the
// rest by range: while the download is incomplete, FILE.httpretry records
// the version it belongs to (the If-Range validator) and the document's
// length, and --continue asks for the rest of exactly that version. A file
// without a record (from another tool) is checked by overlap instead: the
// last 64 KiB are asked for again and must match byte for byte.

// getSidecarSuffix names the record kept beside an incomplete download.
const getSidecarSuffix = ".httpretry"

// getOverlap is how much of a partial file without a record is checked
// against the server before anything is appended.
const getOverlap = 64 << 10

// getSidecar is the record of an incomplete -o download.
type getSidecar struct {
	// Validator is the If-Range value of the version being downloaded.
	Validator string `json:"validator"`
	// Length is the whole document's length; -1 when unknown.
	Length int64 `json:"length"`
}

// getContinueError is --continue refusing to append: exit 8.
type getContinueError struct{ msg string }

// Error says why nothing was appended.
func (e *getContinueError) Error() string { return e.msg }

func getContinuef(format string, args ...any) error {
	return &getContinueError{msg: fmt.Sprintf(format, args...)}
}

// writeSidecar records the version of a response that a range request
// could continue, and reports whether it did; first is where the response's
// body starts in the document.
func (g *getRun) writeSidecar(path string, resp *http.Response, first int64) bool {
	if g.opts.include || resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent ||
		resp.Uncompressed || !strings.Contains(resp.Header.Get("Accept-Ranges"), "bytes") {
		return false
	}
	v := httpretry.Validator(resp.Header)
	if v == "" {
		return false
	}
	length := int64(-1)
	if resp.StatusCode == http.StatusOK {
		length = resp.ContentLength
	} else if _, total, ok := parseContentRange(resp.Header.Get("Content-Range")); ok {
		length = total
	}
	b, _ := json.Marshal(getSidecar{Validator: v, Length: length})
	return os.WriteFile(path+getSidecarSuffix, b, 0o644) == nil
}

// settle ends an -o download: a complete one loses its record; an
// incomplete one is reported with how to resume it.
func (g *getRun) settle(path string, recorded bool, n int64, err error) {
	var body *getBodyError
	switch {
	case err == nil:
		_ = os.Remove(path + getSidecarSuffix)
	case errors.As(err, &body) && recorded:
		fmt.Fprintf(g.stderr, "httpretry: %s keeps the %d bytes that arrived; run the same command with --continue to resume it\n", path, n)
	case errors.As(err, &body):
		fmt.Fprintf(g.stderr, "httpretry: %s keeps the %d bytes that arrived (the server does not allow resuming it)\n", path, n)
	}
}

// getContinue is a --continue download under way.
type getContinue struct {
	path    string
	size    int64       // bytes in the partial file
	start   int64       // the first byte asked for
	overlap []byte      // the file's last bytes, checked against the server's
	record  *getSidecar // nil for a file without one
}

// prepareContinue looks at the partial file and asks req for the rest of
// it. A missing or empty file returns nil: a plain download.
func prepareContinue(path string, req *http.Request) (*getContinue, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || err == nil && st.Size() == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, &getLocalError{err}
	}
	c := &getContinue{path: path, size: st.Size(), start: st.Size()}
	if raw, err := os.ReadFile(path + getSidecarSuffix); err == nil {
		var rec getSidecar
		if json.Unmarshal(raw, &rec) == nil && rec.Validator != "" {
			c.record = &rec
		}
	}
	if c.record != nil {
		req.Header.Set("If-Range", c.record.Validator)
	} else {
		k := min(c.size, getOverlap)
		c.start = c.size - k
		f, err := os.Open(path)
		if err != nil {
			return nil, &getLocalError{err}
		}
		c.overlap = make([]byte, k)
		_, err = f.ReadAt(c.overlap, c.start)
		f.Close()
		if err != nil {
			return nil, &getLocalError{fmt.Errorf("reading %s: %w", path, err)}
		}
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(c.start, 10)+"-")
	return c, nil
}

// continueResponse checks that resp continues the partial file and appends
// the rest. Anything else leaves the file as it was.
func (g *getRun) continueResponse(c *getContinue, resp *http.Response) (int64, error) {
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusRequestedRangeNotSatisfiable:
		if total, ok := unsatisfiedLength(resp.Header.Get("Content-Range")); ok && total == c.size &&
			(c.record == nil || c.record.Length < 0 || c.record.Length == total) {
			_ = os.Remove(c.path + getSidecarSuffix)
			fmt.Fprintf(g.stderr, "httpretry: %s is already complete (%d bytes)\n", c.path, c.size)
			return 0, nil
		}
		return 0, getContinuef("--continue: the server cannot serve bytes from %d of %s: its copy is not the one the file began; %s is untouched",
			c.start, c.path, c.path)
	case http.StatusOK:
		return 0, getContinuef("--continue: the server sent the whole document instead of the rest: its copy changed since %s was begun, or it serves no ranges; %s is untouched (drop --continue to download it again)",
			c.path, c.path)
	default:
		if resp.StatusCode >= 400 {
			return 0, nil // the status says it all (exit 3); the file is untouched
		}
		return 0, getContinuef("--continue: unexpected HTTP %s; %s is untouched", resp.Status, c.path)
	}
	first, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
	switch {
	case !ok || first != c.start:
		return 0, getContinuef("--continue: the server's range starts at byte %d, not %d; %s is untouched", first, c.start, c.path)
	case c.record != nil && c.record.Length >= 0 && total != c.record.Length:
		return 0, getContinuef("--continue: the server's copy is %d bytes, the download began on %d; %s is untouched", total, c.record.Length, c.path)
	case c.record != nil && resp.Header.Get("ETag") != "" && resp.Header.Get("ETag") != c.record.Validator &&
		!strings.Contains(c.record.Validator, ","): // a Last-Modified date holds a comma
		return 0, getContinuef("--continue: the server's copy has another ETag; %s is untouched", c.path)
	}
	if len(c.overlap) > 0 {
		got := make([]byte, len(c.overlap))
		if _, err := io.ReadFull(resp.Body, got); err != nil {
			return 0, &getBodyError{fmt.Errorf("reading the bytes to check: %w", err)}
		}
		if !bytes.Equal(got, c.overlap) {
			return 0, getContinuef("--continue: the server's bytes %d-%d differ from the end of %s: its copy changed; %s is untouched",
				c.start, c.size-1, c.path, c.path)
		}
	}
	if total == c.size {
		_ = os.Remove(c.path + getSidecarSuffix)
		fmt.Fprintf(g.stderr, "httpretry: %s is already complete (%d bytes)\n", c.path, c.size)
		return 0, nil
	}
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return 0, &getLocalError{err}
	}
	if st, err := f.Stat(); err != nil || st.Size() != c.size {
		f.Close()
		return 0, getContinuef("--continue: %s changed while the request was made; nothing appended", c.path)
	}
	recorded := c.record != nil || g.writeSidecar(c.path, resp, first)
	n, err := g.copyBody(resp, f, c.path)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = &getLocalError{fmt.Errorf("writing %s: %w", c.path, cerr)}
	}
	g.settle(c.path, recorded, c.size+n, err)
	return n, err
}

// parseContentRange parses "bytes first-last/complete"; complete is -1 for
// "*".
func parseContentRange(v string) (first, complete int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	span, size, found2 := strings.Cut(rest, "/")
	a, _, found3 := strings.Cut(span, "-")
	if !found || !found2 || !found3 {
		return 0, 0, false
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if size == "*" {
		return first, -1, true
	}
	complete, err = strconv.ParseInt(size, 10, 64)
	return first, complete, err == nil
}

// unsatisfiedLength parses a 416's "bytes */complete".
func unsatisfiedLength(v string) (int64, bool) {
	size, ok := strings.CutPrefix(v, "bytes */")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(size, 10, 64)
	return n, err == nil
}
