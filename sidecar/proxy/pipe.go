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
// reads fill what they are given, until it runs dry again. The goroutine of
// an idle direction is parked a few frames deep, so the collector can shrink
// its stack to the minimum.
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

// pipe copies bytes both ways between down (the accepted connection) and up
// (the dialled one), one direction on each of two goroutines started with
// spawn, until both directions have ended; then it closes both and calls
// done. When one side finishes sending (EOF), the other side's sending half
// is shut (half-close) and the opposite direction carries on; an error in
// either direction closes everything. Bytes are added to toUp and toDown as
// they are read, so live views see them, and reported to onChunk.
func pipe(down, up net.Conn, toUp, toDown *atomic.Int64, onChunk func(toUpstream bool, n int), spawn func(func()), done func()) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			down.Close()
			up.Close()
		})
	}
	var left atomic.Int32
	left.Store(2)
	half := func(dst, src net.Conn, count *atomic.Int64, toUpstream bool) {
		defer func() {
			if left.Add(-1) == 0 {
				closeBoth()
				done()
			}
		}()
		err := copyCounted(dst, src, count, func(n int) { onChunk(toUpstream, n) })
		if err != nil {
			closeBoth()
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			if cw.CloseWrite() == nil {
				return
			}
		}
		closeBoth()
	}
	spawn(func() { half(up, down, toUp, true) })
	spawn(func() { half(down, up, toDown, false) })
}

// copyCounted copies src to dst until EOF (nil error) or an error. Bytes
// are counted as read, before they are written: the reply to them can never
// be counted before them.
func copyCounted(dst io.Writer, src io.Reader, count *atomic.Int64, onChunk func(int)) error {
	emit := func(b []byte) error {
		count.Add(int64(len(b)))
		onChunk(len(b))
		_, err := dst.Write(b)
		return err
	}
	switch s := src.(type) {
	case *prefixConn:
		if p := s.takePrefix(); len(p) > 0 {
			if err := emit(p); err != nil {
				return err
			}
		}
		return copyReady(s.TCPConn, emit)
	case *net.TCPConn:
		return copyReady(s, emit)
	case *tls.Conn:
		if rc := rawConnOf(s); rc != nil {
			return copyTLS(s, rc, emit)
		}
	}
	return copyGrowing(src, emit, nil, false)
}

// rawConnOf is the socket under a TLS connection, for readiness waits; nil
// when it is not a plain TCP socket (or still replays sniffed bytes).
func rawConnOf(c *tls.Conn) syscall.RawConn {
	var tcp *net.TCPConn
	switch u := c.NetConn().(type) {
	case *net.TCPConn:
		tcp = u
	case *prefixConn:
		if len(u.prefix) > 0 {
			return nil
		}
		tcp = u.TCPConn
	default:
		return nil
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// copyTLS copies a TLS source in bursts: copyGrowing reads records as
// they come (blocking: the rest of a record follows its first bytes) until
// a read comes back short and crypto/tls holds nothing more decrypted; then
// copyTLS waits, holding no buffer, until the socket has bytes again. The
// first burst starts with what crypto/tls already holds: the handshake's
// last read may have taken records too.
func copyTLS(src *tls.Conn, rc syscall.RawConn, emit func([]byte) error) error {
	for held := true; ; held = false {
		if err := copyGrowing(src, emit, errDry, held); !errors.Is(err, errDry) {
			return err
		}
		if err := waitReadable(rc); err != nil {
			return err
		}
	}
}

// errDry ends a copyGrowing burst: nothing more can be read without waiting.
var errDry = errors.New("proxy: source dry")

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

// copyReady reads c whenever the poller reports it readable, each time
// into a pooled buffer held only for that read and its write, so a quiet
// connection holds no buffer.
func copyReady(c *net.TCPConn, emit func([]byte) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var (
			bp   *[]byte
			n    int
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
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
				return false // wait until readable, then call again
			}
			return true
		})
		if err == nil && rerr != nil {
			err = os.NewSyscallError("read", rerr)
		}
		if n > 0 && err == nil {
			err = emit((*bp)[:n])
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
