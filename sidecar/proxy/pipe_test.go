package proxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"
	"time"
)

// TestMeshPairMixedSizes sends writes of sizes around every buffer size
// (the small TLS read buffer, a record, the TCP read buffer) through the
// pair to the echo app, so each side switches between its small and large
// buffers many times, and checks every byte comes back in order.
func TestMeshPairMixedSizes(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	c := mp.dial()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var msg []byte
	for _, n := range []int{1, smallBufSize - 1, smallBufSize, smallBufSize + 1, 7, recordSize - 1, recordSize,
		recordSize + 1, 3, bufSize - 1, bufSize, bufSize + 1, 100_000, 1, 1 << 20, 5} {
		part := make([]byte, n)
		rand.Read(part)
		msg = append(msg, part...)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c)
		got <- b
	}()
	for off := 0; off < len(msg); {
		// Write in uneven pieces, pausing now and then so reads come back short.
		n := min(len(msg)-off, 1+off%70_001)
		if _, err := c.Write(msg[off : off+n]); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		off += n
		if off%3 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	c.CloseWrite()
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatalf("echoed %d bytes, want the %d sent, byte for byte", len(b), len(msg))
	}
	for _, pd := range []*pod{mp.a, mp.b} {
		pd.waitCounter(0, "connections", map[*pod]string{mp.a: outbound, mp.b: inbound}[pd])
	}
}
