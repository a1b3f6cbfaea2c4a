package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/weftmesh/weft/internal/rawio"
)

// Copy buffers. A plaintext TCP source is read only once the poller reports
// it readable, straight into a pooled bufSize buffer that goes back to the
// pool as soon as its bytes are written (to a TLS destination in one system
// call: coalesce.go); a TLS source (whose reads block inside crypto/tls) is
// read into a smallBufSize buffer while traffic is light and into a pooled
// bufSize one, record after record, while it is busy. A direction silent for
// Config.IdleParkAfter gives its buffer and its goroutine up (park.go), so
// an idle connection holds neither.
const (
	bufSize      = 32 << 10 // a TCP read, or the records a TLS source holds: two records' worth of plaintext
	recordSize   = 16 << 10 // the plaintext of a full TLS record
	smallBufSize = 2 << 10  // a read of a quiet or idle TLS source
)

var (
	bufPool   = newBufPool(bufSize)
	smallPool = newBufPool(smallBufSize)
)

func newBufPool(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
}

// closeWriter is a connection whose sending side can be shut alone:
// *net.TCPConn (FIN) and *tls.Conn (close_notify).
type closeWriter interface{ CloseWrite() error }

// runner starts the goroutines that forward bytes and counts them, so drain
// can wait for them: a *sync.WaitGroup. A parked flow holds one count of
// its own (Add before its goroutine ends, Done once a new one is started).
type runner interface {
	Go(func())
	Add(int)
	Done()
}

// pipeEnv is what a pipe's flows run under.
type pipeEnv struct {
	run  runner
	park *parker       // nil: flows wait in the poller, never in the parker
	idle time.Duration // how long a source is silent before its flow parks
	// write bounds each write (Config.WriteTimeout; 0: unbounded), and
	// writeTimedOut counts one that failed so. Per connection: watch
	// records its progress for Config.IdleTimeout (nil: none).
	write         time.Duration
	writeTimedOut func()
	watch         *idleWatch
}

// pipe copies bytes both ways between down (the accepted connection) and up
// (the dialled one), one direction (flow) on each of two goroutines started
// with env.run, until both directions have ended; then it closes both and
// calls done. When one side finishes sending (EOF), the other side's
// sending half is shut (half-close) and the opposite direction carries on;
// an error in either direction closes everything. Bytes are added to toUp
// and toDown as they are read, so live views see them, and reported to
// onChunk. The returned kick must be called before anything else closes
// down or up: it wakes parked flows so they see the close.
func pipe(down, up net.Conn, toUp, toDown *atomic.Int64, onChunk func(toUpstream bool, n int), env pipeEnv, done func()) (kick func()) {
	var flows [2]*flow
	kick = func() {
		if env.park != nil {
			for _, f := range flows {
				env.park.kick(f)
			}
		}
	}
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			kick()
			down.Close()
			up.Close()
		})
	}
	var left atomic.Int32
	left.Store(2)
	end := func(f *flow, err error) {
		defer func() {
			if left.Add(-1) == 0 {
				closeBoth()
				done()
			}
		}()
		if err != nil {
			closeBoth()
			return
		}
		if cw, ok := f.dst.(closeWriter); ok {
			if cw.CloseWrite() == nil {
				return
			}
		}
		closeBoth()
	}
	flows[0] = newFlow(up, down, toUp, func(n int) { onChunk(true, n) }, env, end)
	flows[1] = newFlow(down, up, toDown, func(n int) { onChunk(false, n) }, env, end)
	env.run.Go(flows[0].run)
	env.run.Go(flows[1].run)
	return kick
}

// flow is one direction of a pipe: src copied to dst, resumable after a
// stay in the parker.
type flow struct {
	dst, src net.Conn
	out      net.Conn // dst as written: coalesced(dst)
	count    *atomic.Int64
	onChunk  func(int)
	env      pipeEnv
	end      func(*flow, error)

	tcp     *net.TCPConn    // src when it is plaintext TCP
	tls     *tls.Conn       // src when it is TLS over TCP
	rc      syscall.RawConn // src's socket: readiness waits and parking
	started bool            // the first run has begun (sniffed prefix sent)

	// Guarded by env.park.mu.
	closing bool   // the connection is being closed: never park again
	token   uint64 // in the parker under this token (0: not parked)
	fd      int    // the socket registered in the parker
}

func newFlow(dst, src net.Conn, count *atomic.Int64, onChunk func(int), env pipeEnv, end func(*flow, error)) *flow {
	f := &flow{dst: dst, out: coalesced(dst), src: src, count: count, onChunk: onChunk, env: env, end: end, fd: -1}
	var sock *net.TCPConn
	switch s := src.(type) {
	case *prefixConn:
		f.tcp, sock = s.TCPConn, s.TCPConn
	case *net.TCPConn:
		f.tcp, sock = s, s
	case *rawio.Conn:
		f.tcp, sock = s.TCPConn, s.TCPConn
	case *tls.Conn:
		if sock = tlsSocket(s); sock != nil {
			f.tls = s
		}
	}
	if sock == nil {
		return f
	}
	rc, err := sock.SyscallConn()
	if err != nil {
		f.tcp, f.tls = nil, nil // copied the generic way
		return f
	}
	f.rc = rc
	return f
}

// tlsSocket is the TCP socket under a TLS connection; nil when it is not a
// plain TCP socket (or still replays sniffed bytes).
func tlsSocket(c *tls.Conn) *net.TCPConn {
	u := c.NetConn()
	if co, ok := u.(*coalescer); ok {
		u = co.Conn
	}
	switch u := u.(type) {
	case *net.TCPConn:
		return u
	case *rawio.Conn:
		return u.TCPConn
	case *prefixConn:
		if len(u.prefix) == 0 {
			return u.TCPConn
		}
	}
	return nil
}

// run copies until src ends or the flow parks; a parked flow's run is
// called again, on a new goroutine, when its source is readable.
func (f *flow) run() {
	first := !f.started
	f.started = true
	var err error
	switch {
	case f.tcp != nil:
		if p, ok := f.src.(*prefixConn); ok && first {
			if pre := p.takePrefix(); len(pre) > 0 {
				if err = f.emit(pre); err != nil {
					break
				}
			}
		}
		err = f.copyTCP()
	case f.tls != nil:
		err = f.copyTLS()
	default:
		err = copyGrowing(f.src, f.emit, nil)
	}
	if errors.Is(err, errParked) {
		return
	}
	f.end(f, err)
}

// resume starts f again on a new goroutine, then drops the count f held
// while parked.
func (f *flow) resume() {
	f.env.run.Go(f.run)
	f.env.run.Done()
}

// emit counts b as read, reports it, and writes it to dst. Bytes are
// counted before they are written: the reply to them can never be counted
// before them.
func (f *flow) emit(b []byte) error {
	f.count.Add(int64(len(b)))
	f.onChunk(len(b))
	f.env.watch.touch()
	_, err := writeBounded(f.out, b, f.env.write, f.env.watch, f.env.writeTimedOut)
	return err
}

// emitPooled is emit of (*bp)[:n], a bufPool buffer it puts back as soon as
// its bytes are no longer needed: to a coalesced TLS destination, once they
// are sealed in records, before those are written, so a write stuck on a
// peer that stopped reading holds the records, not the plaintext besides.
func (f *flow) emitPooled(bp *[]byte, n int) error {
	ct, _ := f.out.(*coalescedTLS)
	if ct != nil {
		ct.sealed = bp
	}
	err := f.emit((*bp)[:n])
	if ct != nil {
		bp, ct.sealed = ct.sealed, nil
	}
	if bp != nil {
		bufPool.Put(bp)
	}
	return err
}

// copyTCP reads the plaintext source whenever its socket is readable, each
// time into a pooled buffer held only for that read and its write, so a
// quiet connection holds no buffer; it returns nil at EOF. With a parker,
// each read may wait env.idle at most, then the flow parks.
func (f *flow) copyTCP() error {
	for {
		if err := f.idleDeadline(f.tcp); err != nil {
			return err
		}
		var (
			bp   *[]byte
			n    int
			rerr error
		)
		err := f.rc.Read(func(fd uintptr) bool {
			bp = bufPool.Get().(*[]byte)
			for {
				n, rerr = rawio.Read(fd, *bp)
				if rerr != syscall.EINTR {
					break
				}
			}
			if rerr == syscall.EAGAIN {
				bufPool.Put(bp)
				bp = nil
				return false // wait until readable (or the deadline), then call again
			}
			return true
		})
		if errors.Is(err, os.ErrDeadlineExceeded) && f.idle() {
			return f.park(f.tcp)
		}
		if err == nil && rerr != nil {
			err = os.NewSyscallError("read", rerr)
		}
		if n > 0 && err == nil {
			err, bp = f.emitPooled(bp, n), nil
		}
		if bp != nil {
			bufPool.Put(bp)
		}
		switch {
		case err != nil:
			return err
		case n <= 0:
			return nil // EOF
		}
	}
}

// copyTLS copies a TLS source with copyGrowing; with a parker, a read that
// waits env.idle for a record ends in parking (crypto/tls keeps any part
// of a record it has read, and a timeout does not break the connection).
func (f *flow) copyTLS() error {
	var idle func() error
	if f.idle() {
		idle = func() error { return f.idleDeadline(f.tls) }
	}
	err := copyGrowing(f.tls, f.emit, idle)
	if errors.Is(err, errIdle) {
		return f.park(f.tls)
	}
	return err
}

// errIdle ends copyGrowing: a read waited a whole idle period.
var errIdle = errors.New("proxy: source idle")

// idle reports whether the flow parks when its source is silent.
func (f *flow) idle() bool { return f.env.park != nil && f.env.idle > 0 }

// deadliner is a connection whose reads can be given a deadline.
type deadliner interface{ SetReadDeadline(time.Time) error }

// idleDeadline bounds src's next read by env.idle, when the flow parks.
func (f *flow) idleDeadline(src deadliner) error {
	if !f.idle() {
		return nil
	}
	return src.SetReadDeadline(time.Now().Add(f.env.idle))
}

// park moves the flow, whose source has been silent for env.idle, to the
// parker and returns errParked. If its connection is being closed, the
// flow stops parking and carries on without a deadline: the close ends it.
func (f *flow) park(src deadliner) error {
	if err := src.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	f.env.run.Add(1) // the parked flow's count, dropped by resume
	if f.env.park.park(f) {
		return errParked
	}
	f.env.run.Done()
	f.env.idle = 0 // never park again
	if f.tls != nil {
		return f.copyTLS()
	}
	return f.copyTCP()
}

// copyGrowing reads src into a small buffer while traffic is light, and
// into a pooled bufSize one from the first read that fills the small one.
// Each read into the big buffer is topped up, without blocking, with what
// src already holds (crypto/tls returns one record per Read and has often
// read the next one already), so records that arrived together leave in
// one write; the switch itself costs no extra write. A read, with its top
// up, shorter than one record gives the big buffer back. With idle non-nil,
// it is called before every blocking read (to set the read's deadline), and
// a read that times out ends copyGrowing with errIdle, its buffers given
// back.
func copyGrowing(src io.Reader, emit func([]byte) error, idle func() error) error {
	small := smallPool.Get().(*[]byte)
	defer smallPool.Put(small)
	var big *[]byte
	defer func() {
		if big != nil {
			bufPool.Put(big)
		}
	}()
	for {
		buf := *small
		if big != nil {
			buf = *big
		}
		if idle != nil {
			if err := idle(); err != nil {
				return err
			}
		}
		n, rerr := src.Read(buf)
		if big == nil && n == len(buf) && rerr == nil {
			big = bufPool.Get().(*[]byte)
			copy(*big, buf[:n])
			buf = *big
		}
		if big != nil && rerr == nil && n < len(buf) {
			var m int
			m, rerr = readBuffered(src, buf[n:])
			n += m
		}
		if n > 0 {
			if err := emit(buf[:n]); err != nil {
				return err
			}
		}
		if big != nil && n < recordSize {
			bufPool.Put(big)
			big = nil
		}
		if rerr != nil {
			switch {
			case errors.Is(rerr, io.EOF):
				return nil
			case idle != nil && errors.Is(rerr, os.ErrDeadlineExceeded):
				return errIdle
			}
			return rerr
		}
	}
}

// readBuffered fills b from src as far as src can without waiting for the
// network: reads under a deadline already past, until b is full or src has
// nothing more at hand; that timeout is not an error (crypto/tls retries a
// record after a timeout).
func readBuffered(src io.Reader, b []byte) (int, error) {
	d, ok := src.(deadliner)
	if !ok || d.SetReadDeadline(time.Unix(1, 0)) != nil {
		return 0, nil
	}
	var n int
	var err error
	for n < len(b) && err == nil {
		var m int
		m, err = src.Read(b[n:])
		n += m
	}
	if derr := d.SetReadDeadline(time.Time{}); derr != nil && (err == nil || errors.Is(err, os.ErrDeadlineExceeded)) {
		err = derr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	}
	return n, err
}
