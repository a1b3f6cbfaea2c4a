package audit

import "sync"

// buffer is a bounded FIFO of events not yet acknowledged by the control
// plane. One sender peeks a prefix, sends it, and acks that prefix once the
// control plane confirmed it; Record only appends, so the prefix is still
// at the front when it is acked.
type buffer struct {
	mu     sync.Mutex
	events []Event // ring of capacity len(events)
	head   int
	n      int
	wake   chan struct{} // one token when events arrive
}

func newBuffer(size int) *buffer {
	return &buffer{events: make([]Event, size), wake: make(chan struct{}, 1)}
}

// push appends e; false when the buffer is full.
func (b *buffer) push(e Event) bool {
	b.mu.Lock()
	if b.n == len(b.events) {
		b.mu.Unlock()
		return false
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

// peek copies up to max events from the front.
func (b *buffer) peek(max int) []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := min(max, b.n)
	out := make([]Event, k)
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
		b.events[(b.head+i)%len(b.events)] = Event{}
	}
	b.head = (b.head + k) % len(b.events)
	b.n -= k
}

func (b *buffer) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}
