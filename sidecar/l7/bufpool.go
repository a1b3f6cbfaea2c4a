package l7

import "sync"

// copyBufferSize is the size of the buffers a request's and a response's
// bodies are copied through (httputil.ReverseProxy's own default).
const copyBufferSize = 32 << 10

// bufferPool holds the copy buffers of both sides' relays (relay.go):
// without one, every request allocates a 32 KiB copy buffer per body per
// sidecar, which made most of the L7 path's garbage and, through the
// collector, most of its p99 (sidecar/proxy/bench/README.md, "HTTP
// routing").
type bufferPool struct{ p sync.Pool }

// The pool holds pointers to arrays: a buffer given back converts to its
// array's pointer without an allocation (a *[]byte would cost one per Put,
// two per request per sidecar).
func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}
}

// sharedBuffers serves every proxy of the process.
var sharedBuffers = newBufferPool()

func (b *bufferPool) Get() []byte { return b.p.Get().(*[copyBufferSize]byte)[:] }

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) < copyBufferSize {
		return
	}
	b.p.Put((*[copyBufferSize]byte)(buf[:copyBufferSize]))
}
