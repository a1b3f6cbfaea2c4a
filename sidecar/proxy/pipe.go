package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// bufSize is the copy buffer: two TLS records' worth of plaintext.
const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// closeWriter is a connection whose sending side can be shut alone:
// *net.TCPConn (FIN) and *tls.Conn (close_notify).
type closeWriter interface{ CloseWrite() error }

// pipe copies bytes both ways between down (the accepted connection) and up
// (the dialled one) until both directions have ended, then closes both.
// When one side finishes sending (EOF), the other side's sending half is
// shut (half-close) and the opposite direction carries on; an error in
// either direction closes everything. Bytes are added to toUp and toDown as
// they are read, so live views see them, and reported to onChunk.
func pipe(down, up net.Conn, toUp, toDown *atomic.Int64, onChunk func(toUpstream bool, n int)) {
	var wg sync.WaitGroup
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			down.Close()
			up.Close()
		})
	}
	half := func(dst, src net.Conn, count *atomic.Int64, toUpstream bool) {
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
	wg.Add(1)
	go func() {
		defer wg.Done()
		half(up, down, toUp, true)
	}()
	half(down, up, toDown, false)
	wg.Wait()
	closeBoth()
}

// copyCounted copies src to dst with a pooled buffer until EOF (nil error)
// or an error.
func copyCounted(dst io.Writer, src io.Reader, count *atomic.Int64, onChunk func(int)) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			// Counted as read, before it is written: the reply to these
			// bytes can never be counted before them.
			count.Add(int64(n))
			onChunk(n)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			return rerr
		}
	}
}
