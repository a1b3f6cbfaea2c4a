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
)

// Copy buffers. An idle connection holds none of them: a plaintext TCP
// source is read only once the poller reports it readable, straight into a
// pooled bufSize buffer that goes back to the pool as soon as its bytes are
// written; a TLS source is waited on the same way (its socket readable, and
// nothing left decrypted inside crypto/tls), then read into a smallBufSize
// buffer while traffic is light and into a pooled recordSize one while
// reads fill what they are given, until it runs dry again. A direction idle
// for longer than Config.IdleParkAfter gives up its goroutine too (park.go).
const (
	bufSize      = 32 << 10 // a TCP read: two TLS records' worth of plaintext
	recordSize   = 16 << 10 // a TLS read: one record's plaintext
	smallBufSize = 2 << 10  // a read of a quiet or idle TLS source
)

var (
	bufPool    = newBufPool(bufSize)
	recordPool = newBufPool(recordSize)
	smallPool  = newBufPool(smallBufSize)
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
	f := &flow{dst: dst, src: src, count: count, onChunk: onChunk, env: env, end: end, fd: -1}
	switch s := src.(type) {
	case *prefixConn:
		f.tcp = s.TCPConn
	case *net.TCPConn:
		f.tcp = s
	case *tls.Conn:
		if tcp := tlsSocket(s); tcp != nil {
			f.tls = s
		}
	}
	var sock *net.TCPConn
	switch {
	case f.tcp != nil:
		sock = f.tcp
	case f.tls != nil:
		sock = tlsSocket(f.tls)
	}
	if sock != nil {
		if rc, err := sock.SyscallConn(); err == nil {
			f.rc = rc
		} else {
			f.tcp, f.tls = nil, nil
		}
	}
	return f
}

// tlsSocket is the TCP socket under a TLS connection; nil when it is not a
// plain TCP socket (or still replays sniffed bytes).
func tlsSocket(c *tls.Conn) *net.TCPConn {
	switch u := c.NetConn().(type) {
	case *net.TCPConn:
		return u
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
		err = f.copyTLS(first)
	default:
		err = copyGrowing(f.src, f.emit, nil, false)
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
	_, err := f.dst.Write(b)
	return err
}

// copyTCP reads the plaintext source whenever its socket is readable, each
// time into a pooled buffer held only for that read and its write, so a
// quiet connection holds no buffer; it returns nil at EOF.
func (f *flow) copyTCP() error {
	for {
		var (
			bp   *[]byte
			n    int
			rerr error
		)
		err := f.rc.Read(func(fd uintptr) bool {
			bp = bufPool.Get().(*[]byte)
			for {
				n, rerr = syscall.Read(int(fd), *bp)
				if rerr != syscall.EINTR {
					break
				}
			}
			if rerr == syscall.EAGAIN {
				bufPool.Put(bp)
				bp = nil
				// Without a parker, wait in the poller; with one, return
				// and wait below, where silence can end in parking.
				return f.env.park != nil
			}
			return true
		})
		if err == nil && rerr == syscall.EAGAIN {
			if err := f.wait(f.tcp); err != nil {
				return err
			}
			continue
		}
		if err == nil && rerr != nil {
			err = os.NewSyscallError("read", rerr)
		}
		if n > 0 && err == nil {
			err = f.emit((*bp)[:n])
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

// copyTLS copies a TLS source in bursts: copyGrowing reads records as they
// come (blocking: the rest of a record follows its first bytes) until a
// read comes back short and crypto/tls holds nothing more decrypted; then
// the flow waits, holding no buffer, until the socket has bytes again. The
// first burst starts with what crypto/tls already holds: the handshake's
// last read may have taken records too.
func (f *flow) copyTLS(first bool) error {
	for held := first; ; held = false {
		if err := copyGrowing(f.tls, f.emit, errDry, held); !errors.Is(err, errDry) {
			return err
		}
		if err := f.wait(f.tls); err != nil {
			return err
		}
	}
}

// errDry ends a copyGrowing burst: nothing more can be read without waiting.
var errDry = errors.New("proxy: source dry")

// wait returns once src's socket is readable. With a parker, a wait longer
// than env.idle parks the flow instead and returns errParked.
func (f *flow) wait(src interface{ SetReadDeadline(time.Time) error }) error {
	if f.env.park == nil || f.env.idle <= 0 {
		return waitReadable(f.rc)
	}
	if err := src.SetReadDeadline(time.Now().Add(f.env.idle)); err != nil {
		return err
	}
	err := waitReadable(f.rc)
	derr := src.SetReadDeadline(time.Time{})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		if err == nil {
			err = derr
		}
		return err
	}
	if derr != nil {
		return derr
	}
	f.env.run.Add(1) // the parked flow's count, dropped by resume
	if f.env.park.park(f) {
		return errParked
	}
	f.env.run.Done()
	return waitReadable(f.rc) // being closed: the close wakes this wait
}

// waitReadable returns once the socket has bytes to read, an EOF or an
// error, without reading any: a 1-byte MSG_PEEK, then the poller. (The
// poller alone would miss bytes that arrived before the wait began.)
func waitReadable(rc syscall.RawConn) error {
	var perr error
	err := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			_, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if perr != syscall.EINTR {
				break
			}
		}
		if perr == syscall.EAGAIN {
			return false // wait until readable, then call again
		}
		perr = nil // bytes, EOF or a socket error: the read that follows sees it
		return true
	})
	if err == nil {
		err = perr
	}
	return err
}

// copyGrowing reads src into a small buffer, and into a pooled
// recordSize one from the first read that fills the small one until a read
// returns less than the buffer holds. On the switch, the big buffer takes
// what the small one read and is topped up, without blocking, with what src
// already holds (crypto/tls decrypts a whole record at once), so the switch
// costs no extra write. With dry non-nil, every read after a short one
// (and the first, if held) takes only what src already holds, and when that
// is nothing copyGrowing returns dry (its buffers given back) instead of
// blocking.
func copyGrowing(src io.Reader, emit func([]byte) error, dry error, held bool) error {
	small := smallPool.Get().(*[]byte)
	defer smallPool.Put(small)
	var big *[]byte
	defer func() {
		if big != nil {
			recordPool.Put(big)
		}
	}()
	probe := dry != nil && held // take only what src holds, without waiting
	for {
		buf := *small
		if big != nil {
			buf = *big
		}
		var (
			n    int
			rerr error
		)
		if probe {
			if n, rerr = readBuffered(src, buf); n == 0 && rerr == nil {
				return dry
			}
		} else {
			n, rerr = src.Read(buf)
		}
		if big == nil && n == len(buf) && rerr == nil {
			big = recordPool.Get().(*[]byte)
			copy(*big, buf[:n])
			buf = *big
			var m int
			m, rerr = readBuffered(src, buf[n:])
			n += m
		}
		if n > 0 {
			if err := emit(buf[:n]); err != nil {
				return err
			}
		}
		probe = dry != nil && n < len(buf)
		if big != nil && n < len(buf) {
			recordPool.Put(big)
			big = nil
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			return rerr
		}
	}
}

// readBuffered reads from src only what it can return without waiting for
// the network: a read under a deadline already past, whose timeout is not an
// error (crypto/tls retries a record after a timeout).
func readBuffered(src io.Reader, b []byte) (int, error) {
	d, ok := src.(interface{ SetReadDeadline(time.Time) error })
	if !ok || d.SetReadDeadline(time.Unix(1, 0)) != nil {
		return 0, nil
	}
	n, err := src.Read(b)
	if derr := d.SetReadDeadline(time.Time{}); derr != nil && err == nil {
		err = derr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	}
	return n, err
}
