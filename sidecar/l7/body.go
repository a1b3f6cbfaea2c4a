package l7

import (
	"errors"
	"io"
	"slices"
	"sync"

	"github.com/weftmesh/weft/sidecar/l7/h2"
)

// RetryBodyLimit is the largest request body kept for a retry (Envoy's
// per-request buffer limit for retries is of the same order).
const RetryBodyLimit = 64 << 10

// errStaleTry is what an earlier try's body reads get once a later try
// has started: the transport of a failed try may still be reading.
var errStaleTry = errors.New("l7: request body read by a try that was superseded")

// replayBody records a request body as the tries read it, so that a retry
// can send it again, while it stays within limit. Nothing is read ahead:
// a try reads from the source only what it sends, so a streaming request
// flows as it would without retries.
type replayBody struct {
	limit int

	mu       sync.Mutex
	src      io.ReadCloser
	buf      []byte // every byte read from src, while !overflow
	overflow bool   // src gave more than limit: no replay
	read     int64  // bytes read from src
	err      error  // src's terminal error (io.EOF at the end)
	try      int    // the current try; older views are stale
}

func newReplayBody(src io.ReadCloser, limit int) *replayBody {
	return &replayBody{src: src, limit: limit}
}

// view returns the body for the next try, from its first byte; earlier
// views go stale. It fails once the body outgrew the limit.
func (b *replayBody) view() (io.ReadCloser, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.overflow {
		return nil, false
	}
	b.try++
	return &bodyView{b: b, try: b.try}, true
}

// replayable reports whether another try could send the body again.
func (b *replayBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow
}

// Close closes the source (the caller's body): once, after the last try.
func (b *replayBody) Close() error { return b.src.Close() }

type bodyView struct {
	b   *replayBody
	try int
	off int64
}

func (v *bodyView) Read(p []byte) (int, error) {
	b := v.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if v.try != b.try {
		return 0, errStaleTry
	}
	if v.off < b.read {
		if b.overflow {
			// Only the current try reads past the recorded bytes, and
			// once they were dropped no try starts from the beginning.
			return 0, errStaleTry
		}
		n := copy(p, b.buf[v.off:])
		v.off += int64(n)
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	// Blocking in src.Read under the lock is deliberate: a later try's
	// reads wait for this one, and whatever it reads is recorded first.
	n, err := b.src.Read(p)
	if n > 0 {
		b.read += int64(n)
		v.off += int64(n)
		if !b.overflow {
			if len(b.buf)+n > b.limit {
				b.overflow, b.buf = true, nil
			} else {
				b.buf = append(b.buf, p[:n]...)
			}
		}
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// ReadHeld reads n bytes and one more (h2.HeldBody) into the record and
// returns them from it: the record is only ever appended to, so held
// stays as it is; what a later try reads comes from the record as
// before. Not ok (nothing read) when the record could not hold them, or
// the view has read some already.
func (v *bodyView) ReadHeld(n int) (held []byte, whole, ok bool, err error) {
	b := v.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if v.try != b.try {
		return nil, false, false, errStaleTry
	}
	want := int64(n) + 1
	if b.overflow || v.off != 0 || want > int64(b.limit) {
		return nil, false, false, nil
	}
	for b.read < want && b.err == nil {
		b.buf = slices.Grow(b.buf, int(want-b.read))
		m, err := b.src.Read(b.buf[len(b.buf) : len(b.buf)+int(want-b.read)])
		b.buf = b.buf[:len(b.buf)+m]
		b.read += int64(m)
		if err != nil {
			b.err = err
		}
	}
	got := min(b.read, want)
	if b.err != nil && b.err != io.EOF && b.read < want {
		return nil, false, true, b.err
	}
	v.off = got
	return b.buf[:got:got], got == int64(n) && b.err == io.EOF, true, nil
}

// Buffered says what the view's next reads return without blocking
// (h2.BufferedBody): the bytes recorded that it has not read, then what
// the source holds.
func (v *bodyView) Buffered() (int, bool) {
	b := v.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if v.try != b.try || b.overflow {
		return 0, false
	}
	n := int(b.read - v.off)
	if b.err != nil {
		return n, b.err == io.EOF
	}
	src, ok := b.src.(h2.BufferedBody)
	if !ok {
		return n, false
	}
	m, end := src.Buffered()
	return n + m, end
}

// Close does nothing: the transport of each try closes its body, and the
// source must survive for the next try.
func (v *bodyView) Close() error { return nil }
