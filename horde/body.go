package horde

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// DefaultMaxBodySize bounds one response body when Client.MaxBodySize is 0:
// 16 MiB, as httpretry.DefaultMaxCheckBody. The largest body the API sends,
// the list of every worker, is a few megabytes.
const DefaultMaxBodySize = 16 << 20

// DefaultBodyMemory is the size of ProcessBodyMemory, 24 MiB: one body of
// DefaultMaxBodySize with room for ordinary ones beside it. The transport
// reads a body into growing chunks and copies them into one slice at the
// end, so a read briefly holds about twice what it reserved; with this size,
// eight concurrent fetches of 50 MB bodies keep the proxy's peak RSS near
// 100 MB (BenchmarkPeakRSS in cmd/hordeproxy).
const DefaultBodyMemory = 24 << 20

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
// A reservation lasts until the body has been read whole (or the read
// fails); the transport then checks the bytes and hands them on. The copies
// the Store keeps afterwards are bounded by the Store
// (MemoryStore.MaxEntries).
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
