package h2

import (
	"net/http"
	"sync"
)

// maxIdleWorkers is how many workers wait for a stream at most; a worker
// that finishes with more waiting ends.
const maxIdleWorkers = 64

// workers run streams' handlers: a worker that has run one waits for the
// next, so a handler starts on a goroutine whose stack has grown to what
// handlers need already. Started afresh for every request, a goroutine
// begins with the runtime's small stack and grows it (runtime.newstack,
// copying the stack at each doubling) in every request: a tenth of a
// sidecar's CPU per gRPC request, profiled (sidecar/proxy/bench). A
// waiting worker costs its stack, which the collector shrinks while it
// waits; the most that wait is maxIdleWorkers, process-wide.
var workers workerPool

type workerPool struct {
	mu   sync.Mutex
	idle []chan heldStream // waiting workers, the last to finish last
}

// run runs st's handler for req on a waiting worker, or a new one.
func (p *workerPool) run(st *stream, req *http.Request) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		ch := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		ch <- heldStream{st, req} // buffered: the worker is waiting or about to
		return
	}
	p.mu.Unlock()
	go p.work(st, req)
}

func (p *workerPool) work(st *stream, req *http.Request) {
	ch := make(chan heldStream, 1)
	for {
		st.run(req)
		st, req = nil, nil
		p.mu.Lock()
		if len(p.idle) >= maxIdleWorkers {
			p.mu.Unlock()
			return
		}
		p.idle = append(p.idle, ch)
		p.mu.Unlock()
		h := <-ch
		st, req = h.st, h.req
	}
}
