package audit

import (
	"sync"

	apiaudit "github.com/weftmesh/weft/api/audit"
)

// buffer is a bounded FIFO of events not yet acknowledged by the control
// plane. One sender peeks a prefix, sends it, and acks that prefix once the
// control plane confirmed it; Record only appends, so the prefix is still
// at the front when it is acked.
//
// The ring grows as events wait, up to max, and is given back once it
// drains: a sidecar whose control plane keeps up holds a few events, not
// max of them (10,000 preallocated events were 3.2 MB of every sidecar).
type buffer struct {
	mu     sync.Mutex
	max    int
	events []apiaudit.Event // ring; len(events) is its current capacity
	head   int
	n      int
	wake   chan struct{} // one token when events arrive
}

// minRing is the ring's first size, and the size it may keep when drained.
const minRing = 16

func newBuffer(max int) *buffer {
	return &buffer{max: max, wake: make(chan struct{}, 1)}
}

// push appends e; false when the buffer is full.
func (b *buffer) push(e apiaudit.Event) bool {
	b.mu.Lock()
	if b.n == len(b.events) {
		if b.n >= b.max {
			b.mu.Unlock()
			return false
		}
		b.grow()
	}
	b.events[(b.head+b.n)%len(b.events)] = e
	b.n++
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return true
}

// grow doubles the ring (within max), keeping the events in order.
// Called with b.mu held and the ring full.
func (b *buffer) grow() {
	size := min(b.max, max(minRing, 2*len(b.events)))
	events := make([]apiaudit.Event, size)
	for i := range b.n {
		events[i] = b.events[(b.head+i)%len(b.events)]
	}
	b.events, b.head = events, 0
}

// peek copies up to max events from the front.
func (b *buffer) peek(max int) []apiaudit.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := min(max, b.n)
	out := make([]apiaudit.Event, k)
	for i := range k {
		out[i] = b.events[(b.head+i)%len(b.events)]
	}
	return out
}

// ack removes the first k events.
func (b *buffer) ack(k int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k = min(k, b.n)
	for i := range k {
		b.events[(b.head+i)%len(b.events)] = apiaudit.Event{}
	}
	if b.n -= k; b.n == 0 {
		b.head = 0
		if len(b.events) > minRing {
			b.events = nil // a burst's ring goes back to the collector
		}
		return
	}
	b.head = (b.head + k) % len(b.events)
}

func (b *buffer) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}
