package l7

import "testing"

func TestBufferPool(t *testing.T) {
	p := newBufferPool()
	b := p.Get()
	if len(b) != copyBufferSize {
		t.Fatalf("Get: %d bytes, want %d", len(b), copyBufferSize)
	}
	p.Put(b[:10]) // a resliced buffer comes back whole
	if got := p.Get(); len(got) != copyBufferSize {
		t.Fatalf("after Put of a resliced buffer: %d bytes", len(got))
	}
	p.Put(make([]byte, 100)) // too small: dropped, never handed out
	for range 3 {
		if got := p.Get(); len(got) != copyBufferSize {
			t.Fatalf("a short buffer was handed out: %d bytes", len(got))
		}
	}
	h := &Handler{}
	h.init()
	if h.proxy.BufferPool != sharedBuffers {
		t.Fatal("the client side's proxy copies without the shared pool")
	}
	in := &Inbound{}
	in.init()
	if in.proxy.BufferPool != sharedBuffers {
		t.Fatal("the server side's proxy copies without the shared pool")
	}
}

// A buffer given back is handed out again: the pool saves the 32 KiB
// allocation per body it exists for. (sync.Pool may drop a Put, under
// -race one in four on purpose, so one reuse in a hundred tries is asked.)
func TestBufferPoolReusesBuffers(t *testing.T) {
	p := newBufferPool()
	for range 100 {
		b := p.Get()
		p.Put(b)
		c := p.Get()
		same := &c[0] == &b[0]
		p.Put(c)
		if same {
			return
		}
	}
	t.Fatal("a buffer of the pool's size was never handed out again")
}
