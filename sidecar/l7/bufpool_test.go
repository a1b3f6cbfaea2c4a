package l7

import (
	"bytes"
	"io"
	"testing"
)

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
	// Both sides' relays copy bodies through the shared pool: a body
	// copied costs no buffer of its own (sync.Pool may drop a Put — under
	// -race one in four on purpose — so the bound is half an allocation
	// per copy, where a buffer per copy would be one).
	body := bytes.NewReader(make([]byte, 3*copyBufferSize+7))
	p2 := &relay{}
	if n := testing.AllocsPerRun(100, func() {
		body.Seek(0, io.SeekStart)
		if err := p2.copyBody(io.Discard, nil, body); err != nil {
			t.Fatal(err)
		}
	}); n >= 0.5 {
		t.Fatalf("copyBody: %.2f allocations per body, want the pool's buffers", n)
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
