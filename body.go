package httpretry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

// respBody is the body of a response the Transport returns. It is the one
// allocation a fault-free response costs, and it carries what the call
// needs after RoundTrip has returned: it reports the call's outcome to the
// breaker when the body ends, keeps the body under the stall watchdog, and
// continues a cut GET body with range requests made by the same retry
// machinery as the call's attempts.
type respBody struct {
	w      watched
	mu     sync.Mutex  // one Read at a time; Close takes it once the Read is unblocked
	closed atomic.Bool // set first thing by Close

	c      call           // the logical call, moved off RoundTrip's stack
	resp   *http.Response // the first response: its validators and length
	status int            // the status of the response being read: the first's, or a resume's 206
	base   int64          // where the first response's body starts in the resource: 0, or a 206's first byte
	got    int64          // bytes handed to the caller
	total  int64          // the resource's length; -1 when unknown
	mark   int64          // got at the last failure, to tell progress
	tries  int            // failures since the body last made progress
	// resumes counts the range requests made for this body.
	resumes int

	pending error // a failure that came with bytes, handled at the next Read
	err     error // the body's final error, returned by every later Read
	ended   bool  // the outcome is recorded and the attempt ended

	ctx  context.Context    // the resumes' context, made at the first one
	stop context.CancelFunc // cancels it; set under w.mu so Close can see it
}

// errBodyClosed is what a Read after Close returns, as net/http's does.
var errBodyClosed = errors.New("http: read on closed response body")

func newRespBody(c *call, resp *http.Response) *respBody {
	b := &respBody{c: *c, resp: resp, status: resp.StatusCode, total: resp.ContentLength}
	if resp.StatusCode == http.StatusPartialContent {
		// The caller asked for a range: positions are the resource's.
		b.base, b.total, _ = parseContentRange(resp.Header.Get("Content-Range"))
	}
	b.w.rc = resp.Body
	if c.t.watch.on() && !eventStream(resp.Header) {
		c.t.watch.add(&b.w)
	}
	return b
}

// eventStream reports a text/event-stream response, silent by nature. The
// header is read by its canonical key, skipping Get's canonicalisation: it
// runs for every response.
func eventStream(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream")
}

// Read reads the body; a transient failure is resumed when the response
// allows it, and otherwise returned as a *BodyError.
func (b *respBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	for {
		n, err := 0, b.pending
		if err == nil {
			n, err = b.w.Read(p)
			b.got += int64(n)
		}
		b.pending = nil
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF && (b.total < 0 || b.base+b.got >= b.total):
			b.end(breaker.Success, nil)
			return n, io.EOF
		case err == io.EOF:
			err = io.ErrUnexpectedEOF // a range answered short of the whole
		}
		if n > 0 {
			b.pending = err
			return n, nil
		}
		if err = b.fail(err); err != nil {
			b.err = err
			return 0, err
		}
	}
}

// Close closes the body. It unblocks a Read in progress (and any resume it
// is making), then reports the call's outcome if the body had not ended: a
// success, since nothing failed.
func (b *respBody) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.w.mu.Lock()
	rc, stop := b.w.rc, b.stop
	b.w.mu.Unlock()
	if stop != nil {
		stop()
	}
	err := rc.Close()
	b.mu.Lock()
	b.end(breaker.Success, nil)
	b.mu.Unlock()
	return err
}

// end reports the call's outcome, once, and releases what the body held.
func (b *respBody) end(o breaker.Outcome, err error) {
	if b.ended {
		return
	}
	b.ended = true
	b.c.permit.Record(o)
	b.c.endTrace(b.status, err, o)
	b.c.endAttempt()
	if b.c.t.watch.on() {
		b.c.t.watch.remove(&b.w)
	}
	if b.stop != nil {
		b.stop()
	}
}

// fail handles a read that failed: it resumes the body, or returns the
// error that ends it.
func (b *respBody) fail(cut error) error {
	c := &b.c
	if b.closed.Load() {
		return cut // Close unblocked the read; it reports the outcome
	}
	if c.req.Context().Err() != nil || !IsTransient(cut) {
		b.end(breaker.Neutral, cut)
		return cut
	}
	c.observe(Event{Kind: EventBodyFailed, Attempt: c.attempt, StatusCode: b.status, Err: cut,
		Resume: true, Offset: b.got})
	c.endTrace(b.status, cut, breaker.Failure)
	if why := b.whyNotResumable(); why != "" {
		return b.giveUp(&BodyError{Received: b.got, Resumes: b.resumes, Reason: StopNotResumable, Why: why, Err: cut})
	}
	if b.got > b.mark || b.resumes == 0 {
		// Bytes came since the last failure: this cut starts the count of
		// attempts afresh, so a long download survives many cuts.
		b.tries, b.mark = 0, b.got
	}
	return b.resume(cut)
}

// resume makes range requests until one continues the body where the
// caller stopped, or a limit or the server's answer ends it.
func (b *respBody) resume(cut error) error {
	c := &b.c
	ctx := b.resumeContext()
	failure, outcome := cut, breaker.Failure
	for {
		if b.resumes >= c.t.maxResumes() {
			return b.giveUp(&BodyError{Received: b.got, Resumes: b.resumes, Reason: StopMaxResumes, Err: cut})
		}
		b.tries++
		wait, stop := c.decide(ctx, b.tries, c.attempt, failure, outcome)
		if stop != nil {
			return b.giveUp(&BodyError{Received: b.got, Resumes: b.resumes, Reason: stop.Reason, Err: cut, stop: stop})
		}
		c.endAttempt()
		c.t.Policy.announce(ctx, c.attempt, wait, failure, slog.String("method", c.req.Method),
			slog.String("url", RedactURL(c.req.URL)), slog.Int64("resume_at", b.got))
		c.observe(Event{Kind: EventRetry, Attempt: c.attempt, Err: failure, Wait: wait, Resume: true, Offset: b.got})
		if err := clock.Sleep(ctx, c.clock(), wait); err != nil {
			return b.giveUp(&BodyError{Received: b.got, Resumes: b.resumes, Reason: StopCanceled, Err: cut,
				stop: &RetryError{Err: failure, Attempts: c.attempt, Reason: StopCanceled, cause: err}})
		}
		if open := c.openedMeanwhile(); open != nil {
			return b.giveUp(&BodyError{Received: b.got, Resumes: b.resumes, Reason: StopBreakerOpen, Err: cut,
				stop: &RetryError{Err: failure, Attempts: c.attempt, Reason: StopBreakerOpen, cause: open}})
		}
		if err := c.awaitTurn(ctx); err != nil {
			stop := c.turnStop(failure, c.attempt, err)
			return b.giveUp(&BodyError{Received: b.got, Resumes: b.resumes, Reason: stop.Reason, Err: cut, stop: stop})
		}
		c.prev = wait
		b.resumes++
		c.attempt++
		resp, err := c.t.send(c.startAttempt(b.rangeRequest(ctx), AttemptInfo{Attempt: c.attempt, Resume: true, Offset: b.got}), c.timer)
		c.timer = nil
		outcome = outcomeOf(ctx, resp, err)
		c.observe(Event{Kind: EventAttempt, Attempt: c.attempt, StatusCode: statusOf(resp), Err: err,
			Outcome: outcome, Resume: true, Offset: b.got})
		c.report(ctx, c.attempt, resp, err)
		if err != nil || resp.StatusCode != http.StatusPartialContent {
			c.endTrace(statusOf(resp), err, outcome)
		}
		switch {
		case err != nil && (ctx.Err() != nil || !IsTransient(err)):
			return b.giveUp(&BodyError{Received: b.got, Resumes: b.resumes, Reason: StopNotResumable,
				Why: "the range request failed: " + redactedError(err), Err: cut})
		case err != nil:
			failure = err
		case resp.StatusCode == http.StatusPartialContent:
			if why := b.mismatch(resp); why != "" {
				resp.Body.Close()
				return b.giveUp(&BodyError{Received: b.got, Resumes: b.resumes, Reason: StopNotResumable, Why: why, Err: cut})
			}
			if !b.w.swap(resp.Body, &b.closed) {
				return errBodyClosed
			}
			b.status = resp.StatusCode
			return nil
		case !c.t.retryStatus(resp.StatusCode):
			c.t.detach(resp)
			return b.giveUp(&BodyError{Received: b.got, Resumes: b.resumes, Reason: StopNotResumable, Err: cut,
				Why: fmt.Sprintf("the range request was answered %d, not 206 (the resource changed, or the server ignored the range)", resp.StatusCode)})
		default:
			c.t.detach(resp) // its Retry-After still counts
			failure = &StatusError{Response: resp}
		}
	}
}

// giveUp ends the body with be, a failure for the breaker unless the caller
// stopped it.
func (b *respBody) giveUp(be *BodyError) error {
	c := &b.c
	c.observe(Event{Kind: EventGiveUp, Attempt: c.attempt, Err: be.Err, Reason: be.Reason, Resume: true, Offset: b.got})
	if be.Reason == StopCanceled {
		b.end(breaker.Neutral, be)
	} else {
		b.end(breaker.Failure, be)
	}
	return be
}

// resumeContext returns the context of the resumes: the request's, which
// Close also cancels so that it never waits for a resume.
func (b *respBody) resumeContext() context.Context {
	if b.ctx == nil {
		ctx, stop := context.WithCancel(b.c.req.Context())
		b.w.mu.Lock()
		b.ctx, b.stop = ctx, stop
		b.w.mu.Unlock()
		if b.closed.Load() {
			stop()
		}
	}
	return b.ctx
}

// whyNotResumable says what stops the body from being resumed, or "".
func (b *respBody) whyNotResumable() string {
	req, resp := b.c.req, b.resp
	switch {
	case b.c.t.MaxResumes < 0:
		return "resuming is off (Transport.MaxResumes is negative)"
	case req.Method != http.MethodGet && req.Method != "":
		return "only GET bodies are resumed, this is " + req.Method
	case req.Body != nil && req.Body != http.NoBody:
		return "the request has a body"
	case resp.StatusCode == http.StatusOK && req.Header.Get("Range") != "":
		return "the request asked for a range, and the server sent the whole body"
	case resp.StatusCode == http.StatusPartialContent && req.Header.Get("Range") != "bytes="+strconv.FormatInt(b.base, 10)+"-":
		return "the request asked for a range other than one open-ended range (bytes=N-)"
	case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent:
		return fmt.Sprintf("the response is a %d, not a 200 or 206", resp.StatusCode)
	case resp.Uncompressed:
		return "net/http decompressed the body on the fly, so the bytes read are not the bytes sent (ask for an encoding yourself, or identity, to make it resumable)"
	case !acceptsRanges(resp.Header):
		return "the server does not announce Accept-Ranges: bytes"
	case b.validator() == "":
		return "the response has no strong validator (a strong ETag, or a Last-Modified at least a second older than its Date)"
	}
	return ""
}

func acceptsRanges(h http.Header) bool {
	for _, v := range h.Values("Accept-Ranges") {
		for unit := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(unit), "bytes") {
				return true
			}
		}
	}
	return false
}

// validator returns the If-Range value that ties a range to the first
// response (RFC 9110 section 13.1.5), or "" when there is none.
func (b *respBody) validator() string { return Validator(b.resp.Header) }

// Validator returns the value for an If-Range header that ties a later range
// request to the response with header h (RFC 9110 section 13.1.5): its
// strong ETag; or, when it has no ETag at all, its Last-Modified if that is
// a strong validator, at least a second older than the response's Date. It
// returns "" when the response has none, and then no range request can be
// tied to it safely.
func Validator(h http.Header) string {
	if etag := h.Get("ETag"); etag != "" {
		if strings.HasPrefix(etag, "W/") {
			return ""
		}
		return etag
	}
	lm, err1 := http.ParseTime(h.Get("Last-Modified"))
	date, err2 := http.ParseTime(h.Get("Date"))
	if err1 != nil || err2 != nil || date.Sub(lm) < time.Second {
		return ""
	}
	return h.Get("Last-Modified")
}

// rangeRequest asks for the rest of the body, tied to the first response.
func (b *respBody) rangeRequest(ctx context.Context) *http.Request {
	c := &b.c
	r := c.req.Clone(c.attemptContext(ctx))
	r.Header.Set("Range", "bytes="+strconv.FormatInt(b.base+b.got, 10)+"-")
	r.Header.Set("If-Range", b.validator())
	r.Body, r.GetBody, r.ContentLength = nil, nil, 0
	return r
}

// mismatch says why a 206 cannot continue the body, or "".
func (b *respBody) mismatch(resp *http.Response) string {
	first, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
	etag := b.resp.Header.Get("ETag")
	switch {
	case !ok:
		return fmt.Sprintf("the 206 has no usable Content-Range (%q)", prefix([]byte(resp.Header.Get("Content-Range")), 64))
	case first != b.base+b.got:
		return fmt.Sprintf("the 206 starts at byte %d, not %d", first, b.base+b.got)
	case b.total >= 0 && total != b.total:
		return fmt.Sprintf("the 206 says the body is %d bytes long, not %d", total, b.total)
	case etag != "" && resp.Header.Get("ETag") != "" && resp.Header.Get("ETag") != etag:
		return "the 206 has another ETag: the resource changed"
	case resp.Header.Get("Content-Encoding") != b.resp.Header.Get("Content-Encoding"):
		return "the 206 has another Content-Encoding"
	}
	if b.total < 0 {
		b.total = total
	}
	return ""
}

// parseContentRange parses "bytes first-last/complete" (complete may be
// "*", reported as -1).
func parseContentRange(v string) (first, complete int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	span, size, found := strings.Cut(rest, "/")
	a, z, found2 := strings.Cut(span, "-")
	if !found || !found2 {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(z, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, 0, false
	}
	if size == "*" {
		return first, -1, true
	}
	complete, err := strconv.ParseInt(size, 10, 64)
	if err != nil || complete <= last {
		return 0, 0, false
	}
	return first, complete, true
}
