package horde

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// DefaultMaxBodySize bounds one response body when Client.MaxBodySize is 0.
// The largest body the API sends, the list of every worker, is a few
// megabytes.
const DefaultMaxBodySize = 32 << 20

// DefaultBodyMemory is the size of ProcessBodyMemory: room for two bodies of
// DefaultMaxBodySize at once, or many ordinary ones. Eight concurrent
// fetches of oversized bodies keep the proxy's peak RSS near 100 MB with it
// (TestPeakRSSWithOversizedBodies in cmd/hordeproxy).
const DefaultBodyMemory = 64 << 20

// ErrBodyMemory is matched (errors.Is) by the error of an attempt that
// stopped reading a response body because the BodyMemory it shares with
// other fetches was used up. The attempt is retried, and it is not a
// breaker failure: the API did nothing wrong.
var ErrBodyMemory = errors.New("the memory bound for AI Horde response bodies in flight is reached")

// BodyMemory bounds the memory that response bodies take while fetches read
// and check them, all fetches sharing it together. A body over a Client's
// MaxBodySize already fails on its own; BodyMemory is what keeps several at
// once, or many large ones, from adding up: each byte read is reserved
// first, and a read that finds no room fails the attempt with
// ErrBodyMemory. Nothing waits for room, so fetches holding part of a body
// can never wait on each other.
//
// Reservations are released once the body has been checked. The copies the
// Store keeps afterwards are bounded by the Store (MemoryStore.MaxEntries).
//
// A BodyMemory is safe for concurrent use.
type BodyMemory struct {
	max  int64
	used atomic.Int64
}

// ProcessBodyMemory is the BodyMemory of every Client whose BodyMemory field
// is nil, so that by default the bound holds for the whole process.
var ProcessBodyMemory = NewBodyMemory(DefaultBodyMemory)

// NewBodyMemory returns a BodyMemory of maxBytes. It panics if maxBytes is
// not positive.
func NewBodyMemory(maxBytes int64) *BodyMemory {
	if maxBytes <= 0 {
		panic(fmt.Sprintf("horde: NewBodyMemory(%d): the bound must be positive", maxBytes))
	}
	return &BodyMemory{max: maxBytes}
}

// Max returns the bound, in bytes.
func (m *BodyMemory) Max() int64 { return m.max }

// InUse returns how many bytes are reserved now.
func (m *BodyMemory) InUse() int64 { return m.used.Load() }

// reserve takes n bytes if they fit under the bound.
func (m *BodyMemory) reserve(n int64) bool {
	for {
		used := m.used.Load()
		if used+n > m.max {
			return false
		}
		if m.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

func (m *BodyMemory) release(n int64) {
	if n != 0 {
		m.used.Add(-n)
	}
}

// tooLarge is the error of a body over limit bytes.
func tooLarge(limit int64) error {
	return &BodyError{Item: -1, Problem: fmt.Sprintf("the body exceeds %d bytes", limit)}
}

// limitBody makes resp's body count against mem and fail past limit bytes.
// A Content-Length over the limit fails at once, without reading; the body
// is then closed.
func limitBody(resp *http.Response, limit int64, mem *BodyMemory) error {
	if resp.ContentLength > limit {
		resp.Body.Close()
		return tooLarge(limit)
	}
	resp.Body = &meteredBody{rc: resp.Body, mem: mem, limit: limit}
	return nil
}

// meteredBody reserves every byte it reads from mem, holds the reservation
// until Close, and fails once more than limit bytes have come.
type meteredBody struct {
	rc    io.ReadCloser
	mem   *BodyMemory
	limit int64
	n     int64 // bytes read, all of them reserved
	err   error // sticky once set
}

func (b *meteredBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	// One byte past the limit is enough to prove the body too large.
	if room := b.limit + 1 - b.n; int64(len(p)) > room {
		p = p[:room]
	}
	want := int64(len(p))
	if !b.mem.reserve(want) {
		b.err = fmt.Errorf("horde: %w (%d bytes)", ErrBodyMemory, b.mem.Max())
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	b.mem.release(want - int64(n))
	b.n += int64(n)
	if b.n > b.limit {
		b.err = tooLarge(b.limit)
		return 0, b.err
	}
	return n, err
}

// Close releases the reservation and closes the body.
func (b *meteredBody) Close() error {
	b.mem.release(b.n)
	b.n = 0
	if b.err == nil {
		b.err = errors.New("horde: read of a closed body")
	}
	return b.rc.Close()
}

// chunkSize is the unit in which a body of unknown length is read. Fixed
// chunks from a pool, joined once at the end, keep the memory of a read
// close to what it reserved; growing one slice would leave every smaller
// copy behind as garbage, about as much again.
const chunkSize = 256 << 10

var chunks = sync.Pool{New: func() any { return new([chunkSize]byte) }}

// readBody reads r to its end. size is the body's length when known (-1
// otherwise), so that a body with a Content-Length is read into one
// allocation of the right size.
func readBody(r io.Reader, size int64) ([]byte, error) {
	if size >= 0 {
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		// net/http enforces the length; this only surfaces its error.
		if n, err := r.Read(make([]byte, 1)); n > 0 || err != io.EOF {
			if err == nil || err == io.EOF {
				err = errors.New("body longer than its Content-Length")
			}
			return nil, err
		}
		return buf, nil
	}
	var (
		full  []*[chunkSize]byte
		total int
	)
	defer func() {
		for _, c := range full {
			chunks.Put(c)
		}
	}()
	for {
		c := chunks.Get().(*[chunkSize]byte)
		full = append(full, c)
		n, err := fill(r, c[:])
		total += n
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	out := make([]byte, 0, total)
	for _, c := range full {
		out = append(out, c[:min(chunkSize, total-len(out))]...)
	}
	return out, nil
}

// fill reads into buf until it is full or r fails; io.EOF is the body's
// end. Unlike io.ReadFull it passes a body cut short (io.ErrUnexpectedEOF
// from net/http) through as the error it is.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
