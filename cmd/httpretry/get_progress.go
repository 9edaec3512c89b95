package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// getBarWidth is the width of the bar itself, in cells, when the length of
// the body is known.
const getBarWidth = 24

// getProgress is the download progress bar: an io.Writer that counts the
// body bytes copied through it (via io.TeeReader) and redraws one line on a
// terminal. It draws from the copying goroutine, between reads, so it needs
// no goroutine or lock of its own; the price is that a stalled download's
// line stands still rather than showing its rate fall.
type getProgress struct {
	w     io.Writer        // the terminal (stderr)
	total int64            // Content-Length, or -1 when unknown
	now   func() time.Time // injectable so tests need no real waiting
	after time.Duration    // nothing is drawn before this: quick downloads stay silent
	every time.Duration    // at most one redraw per this interval

	start, last time.Time
	n           int64
	shown       bool
}

// newGetProgress returns a bar drawn on w for a body of total bytes (-1:
// unknown), starting now.
func newGetProgress(w io.Writer, total int64, now func() time.Time, after, every time.Duration) *getProgress {
	t := now()
	return &getProgress{w: w, total: total, now: now, after: after, every: every, start: t}
}

// Write counts p and redraws when due. It never fails, so a terminal that
// goes away cannot abort the download the bar only decorates.
func (p *getProgress) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	t := p.now()
	if t.Sub(p.start) >= p.after && (!p.shown || t.Sub(p.last) >= p.every) {
		p.draw(t)
	}
	return len(b), nil
}

// finish draws the final state and ends the line, if the bar was ever shown,
// so what follows on stderr (the -v summary) starts on a line of its own.
func (p *getProgress) finish() {
	if !p.shown {
		return
	}
	p.draw(p.now())
	fmt.Fprint(p.w, "\n")
}

// draw rewrites the line: carriage return, the text, erase to end of line
// (the terminal is known to be one, so the ANSI code is safe).
func (p *getProgress) draw(t time.Time) {
	p.shown, p.last = true, t
	var b strings.Builder
	b.WriteString("\r")
	if p.total > 0 {
		frac := min(float64(p.n)/float64(p.total), 1)
		full := int(frac * getBarWidth)
		b.WriteString("[" + strings.Repeat("=", full) + strings.Repeat(" ", getBarWidth-full) + "] ")
		fmt.Fprintf(&b, "%3.0f%% %s / %s", 100*frac, getBytes(p.n), getBytes(p.total))
	} else {
		b.WriteString(getBytes(p.n))
	}
	if secs := t.Sub(p.start).Seconds(); secs > 0 {
		fmt.Fprintf(&b, "  %s/s", getBytes(int64(float64(p.n)/secs)))
	}
	b.WriteString("\x1b[K")
	_, _ = io.WriteString(p.w, b.String())
}

// getBytes formats a byte count in binary units, three significant digits.
func getBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}
