package rawio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair is a loopback TCP connection: a is wrapped as Wrap would (whether or
// not this build makes raw calls: wrap always takes the package's path),
// b is the plain peer.
func pair(t *testing.T) (a *Conn, b *net.TCPConn) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		c, err := l.AcceptTCP()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.DialTCP("tcp", nil, l.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	w, ok := Wrap(c).(*Conn)
	if !ok {
		t.Fatal("wrap did not wrap a TCP connection")
	}
	t.Cleanup(func() { w.Close(); s.Close() })
	return w, s
}

// Wrap wraps in every build: under the race detector only the system
// calls differ, not the code the proxy runs around them.
func TestWrapWraps(t *testing.T) {
	a, _ := pair(t)
	if _, ok := Wrap(a.TCPConn).(*Conn); !ok {
		t.Errorf("Wrap did not wrap a TCP connection (raw system calls in this build: %v)", raw)
	}
}

// Bytes cross both ways intact, a write larger than the socket buffers
// waits for room while the peer reads slowly, and the peer's FIN is EOF.
func TestReadWriteAsNetConn(t *testing.T) {
	a, b := pair(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB: more than the socket buffers hold
	big[len(big)-1] = '!'
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		chunk := make([]byte, 64<<10)
		for buf.Len() < len(big) {
			n, err := b.Read(chunk)
			buf.Write(chunk[:n])
			if err != nil {
				break
			}
			if buf.Len() < 1<<20 {
				time.Sleep(time.Millisecond) // a slow start: the writer meets full buffers
			}
		}
		got <- buf.Bytes()
	}()
	n, err := a.Write(big)
	if n != len(big) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(big))
	}
	if g := <-got; !bytes.Equal(g, big) {
		t.Fatalf("peer read %d bytes, not what was written", len(g))
	}

	if n, err := a.Read(nil); n != 0 || err != nil {
		t.Errorf("Read of nothing = %d, %v; want 0, nil", n, err)
	}
	if _, err := b.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := b.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	all, err := readToEOF(a)
	if string(all) != "hello" || err != nil {
		t.Fatalf("read to EOF = %q, %v; want hello, nil (EOF at the FIN)", all, err)
	}
	if n, err := a.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("Read after EOF = %d, %v; want 0, EOF", n, err)
	}
}

// A deadline ends a waiting Read or Write as net.Conn's does: a
// *net.OpError of the right operation that is a timeout and
// os.ErrDeadlineExceeded.
func TestDeadlines(t *testing.T) {
	a, b := pair(t)
	check := func(what, op string, err error) {
		t.Helper()
		var oe *net.OpError
		var ne net.Error
		switch {
		case !errors.As(err, &oe) || oe.Op != op:
			t.Errorf("%s: %v (%T) is not a *net.OpError of %q", what, err, err, op)
		case !errors.Is(err, os.ErrDeadlineExceeded):
			t.Errorf("%s: %v is not os.ErrDeadlineExceeded", what, err)
		case !errors.As(err, &ne) || !ne.Timeout():
			t.Errorf("%s: %v is not a timeout", what, err)
		}
	}
	if err := a.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := a.Read(make([]byte, 8))
	check("read past its deadline", "read", err)

	if err := a.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err = a.Read(make([]byte, 8)) // nothing comes: waits, then times out
	check("read waiting at its deadline", "read", err)

	// Data that arrives before the deadline is read.
	if err := a.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	go b.Write([]byte("x"))
	if n, err := a.Read(make([]byte, 8)); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v; want 1, nil", n, err)
	}

	// A peer that never reads: the write fills the buffers, waits, and
	// times out having written part of what it was given.
	// (A second: time enough for the first send on a loaded machine.)
	if err := a.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 64<<20)
	n, err := a.Write(big)
	check("write waiting at its deadline", "write", err)
	if n <= 0 || n >= len(big) {
		t.Errorf("Write wrote %d of %d bytes before its deadline; want some, not all", n, len(big))
	}
}

// Close ends a Read that waits, and later calls fail, with net.ErrClosed.
func TestClose(t *testing.T) {
	a, _ := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // most likely waiting by now; either way the Read must fail
	a.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read ended by Close: %v, want net.ErrClosed", err)
	}
	if _, err := a.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
	if _, err := a.Write(nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write of nothing after Close: %v, want net.ErrClosed", err)
	}
}

// A peer that resets the connection makes Write fail with the system's
// error (no SIGPIPE ends the process: the test goes on) and Read with
// ECONNRESET, each a *net.OpError around a *os.SyscallError.
func TestPeerReset(t *testing.T) {
	a, b := pair(t)
	if err := b.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	b.Close() // RST
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = a.Write([]byte("after the reset"))
		time.Sleep(time.Millisecond)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || (!errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("Write to a reset peer: %v (%T), want a *os.SyscallError of EPIPE or ECONNRESET", err, err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" || oe.Source == nil || oe.Addr == nil {
		t.Errorf("Write's error %#v is not a *net.OpError of write with both addresses", err)
	}

	c, d := pair(t)
	if err := d.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	d.Close()
	_, err = c.Read(make([]byte, 8))
	if !errors.As(err, &se) || !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Errorf("Read from a reset peer: %v (%T), want a *net.OpError of read around ECONNRESET", err, err)
	}
}

// TestQuiet checks Quiet of a RawConn and Conn's own Quiet alike.
func TestQuiet(t *testing.T) {
	for _, form := range []struct {
		name  string
		quiet func(*Conn) bool
	}{
		{"Quiet(rc)", func(c *Conn) bool { return Quiet(c.rc) }},
		{"Conn.Quiet", (*Conn).Quiet},
	} {
		t.Run(form.name, func(t *testing.T) {
			a, b := pair(t)
			quiet := form.quiet
			if !quiet(a) {
				t.Error("an idle open connection is not quiet")
			}
			if _, err := b.Write([]byte("unasked")); err != nil {
				t.Fatal(err)
			}
			waitReadable(t, a)
			if quiet(a) {
				t.Error("a connection with bytes to read is quiet")
			}
			// Quiet only peeked: the bytes are still there.
			if got, err := io.ReadAll(io.LimitReader(a, 7)); string(got) != "unasked" || err != nil {
				t.Errorf("after Quiet, read %q, %v", got, err)
			}
			if !quiet(a) {
				t.Error("a connection read empty again is not quiet")
			}
			b.Close()
			waitReadable(t, a)
			if quiet(a) {
				t.Error("a connection its peer closed is quiet")
			}
			a.Close()
			if quiet(a) {
				t.Error("a closed connection is quiet")
			}
		})
	}
}

// waitReadable waits until the socket under a has something to read (or
// its peer's FIN), without reading.
func waitReadable(t *testing.T, a *Conn) {
	t.Helper()
	if err := a.rc.Read(func(fd uintptr) bool { return sysPeek(fd) != syscall.EAGAIN }); err != nil {
		t.Fatal(err)
	}
}

// Read is read(2) on a descriptor inside RawConn's Read, as syscall.Read:
// EAGAIN when there is nothing, the bytes when there are.
func TestReadFD(t *testing.T) {
	a, b := pair(t)
	buf := make([]byte, 8)
	var n int
	var err error
	if rerr := a.rc.Read(func(fd uintptr) bool { n, err = Read(fd, buf); return true }); rerr != nil {
		t.Fatal(rerr)
	}
	if err != syscall.EAGAIN || n != -1 {
		t.Errorf("Read on an empty socket = %d, %v; want -1, EAGAIN", n, err)
	}
	if _, err := b.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if rerr := a.rc.Read(func(fd uintptr) bool {
		n, err = Read(fd, buf)
		return err != syscall.EAGAIN
	}); rerr != nil {
		t.Fatal(rerr)
	}
	if n != 3 || err != nil || string(buf[:3]) != "abc" {
		t.Errorf("Read = %d, %v (%q); want 3, nil, abc", n, err, buf[:n])
	}
	if rerr := a.rc.Read(func(fd uintptr) bool { n, err = Read(fd, nil); return true }); rerr != nil || n != 0 || err != nil {
		t.Errorf("Read of nothing = %d, %v, %v", n, err, rerr)
	}
}

// readToEOF reads r until it fails, as io.ReadAll, but ends a Read that
// returns nothing and no error (a FIN not reported as io.EOF) instead of
// spinning on it.
func readToEOF(r io.Reader) ([]byte, error) {
	var all []byte
	buf := make([]byte, 512)
	for empty := 0; ; {
		n, err := r.Read(buf)
		all = append(all, buf[:n]...)
		switch {
		case err == io.EOF:
			return all, nil
		case err != nil:
			return all, err
		case n == 0:
			if empty++; empty == 100 {
				return all, fmt.Errorf("%d reads returned nothing and no error", empty)
			}
		}
	}
}

// The errors of a closed connection and of a deadline already past are
// net.Conn's own, field for field: the wrapped connection and its
// *net.TCPConn fail alike, a Read or Write of nothing included.
func TestErrorsAsNetConn(t *testing.T) {
	same := func(what string, raw, std error) {
		t.Helper()
		if raw == nil || !reflect.DeepEqual(raw, std) {
			t.Errorf("%s: %#v (%v), net.Conn's: %#v (%v)", what, raw, raw, std, std)
		}
	}
	a, _ := pair(t)
	past := time.Now().Add(-time.Second)
	if err := a.SetDeadline(past); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	_, raw := a.Read(buf)
	_, std := a.TCPConn.Read(buf)
	same("Read past its deadline", raw, std)
	_, raw = a.Write([]byte("x"))
	_, std = a.TCPConn.Write([]byte("x"))
	same("Write past its deadline", raw, std)

	a.Close()
	_, raw = a.Read(buf)
	_, std = a.TCPConn.Read(buf)
	same("Read after Close", raw, std)
	_, raw = a.Read(nil)
	_, std = a.TCPConn.Read(nil)
	same("Read of nothing after Close", raw, std)
	_, raw = a.Write([]byte("x"))
	_, std = a.TCPConn.Write([]byte("x"))
	same("Write after Close", raw, std)
	_, raw = a.Write(nil)
	_, std = a.TCPConn.Write(nil)
	same("Write of nothing after Close", raw, std)
}

// A Write that fails part way reports what it wrote before the error, as
// net.Conn's does: at least what the peer read before it reset the
// connection.
func TestWriteReportsWhatItWroteBeforeAnError(t *testing.T) {
	a, b := pair(t)
	const seen = 1 << 20
	reset := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(b, make([]byte, seen))
		if err == nil {
			err = b.SetLinger(0)
		}
		b.Close() // RST: the writer's next send fails
		reset <- err
	}()
	n, err := a.Write(make([]byte, 64<<20)) // more than the socket buffers hold
	if rerr := <-reset; rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a peer that reset = %d, %v; want a system call's error", n, err)
	}
	if n < seen {
		t.Errorf("Write reported %d bytes written (%v); the peer read %d", n, err, seen)
	}
}

// A connection its peer reset is not quiet: the peek's ECONNRESET is not
// EAGAIN.
func TestQuietAfterReset(t *testing.T) {
	a, b := pair(t)
	if err := b.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	b.Close()
	// Waited for with poll(2): a peek would take the pending error.
	var perr error
	if err := a.rc.Control(func(fd uintptr) {
		_, perr = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10_000)
	}); err != nil || perr != nil {
		t.Fatal(err, perr)
	}
	if Quiet(a.rc) {
		t.Error("a connection its peer reset is quiet")
	}
}

// A socket switched to blocking mode (os.File's Fd does that to a dup of
// it, and the mode is shared) never blocks a raw call in the kernel: a raw
// call holds its P there, out of the scheduler's reach, so a stop-the-world
// would wait for the peer. The deadline still ends the wait, as on a
// non-blocking socket.
func TestBlockingSocketDoesNotBlockARawCall(t *testing.T) {
	if !raw {
		t.Skip("the syscall package's calls hand their P off while they block, as net.Conn's do")
	}
	// Should the call block, the peer below must still run, and no
	// stop-the-world may wait for it meanwhile.
	defer runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0)))
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	blocking := func(a *Conn) {
		t.Helper()
		var serr error
		if err := a.rc.Control(func(fd uintptr) { serr = syscall.SetNonblock(int(fd), false) }); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
	}
	// unblock runs release once the call under test has returned, or
	// after a while if it is stuck in the kernel.
	unblock := func(release func()) (returned func()) {
		done := make(chan struct{})
		go func() {
			select {
			case <-done:
			case <-time.After(2 * time.Second):
			}
			release()
		}()
		return func() { close(done) }
	}

	t.Run("read", func(t *testing.T) {
		a, b := pair(t)
		blocking(a)
		if err := a.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		returned := unblock(func() { b.Write([]byte("late")) })
		n, err := a.Read(make([]byte, 8))
		returned()
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read on a blocking socket = %d, %v; want its deadline's error", n, err)
		}
	})
	t.Run("write", func(t *testing.T) {
		a, b := pair(t)
		blocking(a)
		if err := a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		returned := unblock(func() { b.SetLinger(0); b.Close() })
		n, err := a.Write(make([]byte, 64<<20))
		returned()
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Write on a blocking socket = %d, %v; want its deadline's error", n, err)
		}
	})
}

// A read or a write that moves bytes allocates nothing: the function the
// poller calls is made once per connection, not once per call (a closure
// over a call's own variables escapes, 3 allocations a call, on every
// request's every read and write in a sidecar).
func TestReadWriteAllocateNothing(t *testing.T) {
	a, b := pair(t)
	msg := []byte("ping")
	buf := make([]byte, len(msg))
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(b, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(a, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("a write and a read of the wrapped connection allocate %.1f objects, want 0", allocs)
	}
	if allocs := testing.AllocsPerRun(200, func() {
		if !a.Quiet() {
			t.Fatal("an idle open connection is not quiet")
		}
	}); allocs != 0 {
		t.Errorf("Conn.Quiet allocates %.1f objects, want 0", allocs)
	}
	// A read ended by its deadline (net/http's HTTP/1.1 server ends its
	// background read so once a request) returns RawConn's own error,
	// given net.Conn's form, not a second one made from it.
	if err := a.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	var rerr error
	if allocs := testing.AllocsPerRun(200, func() {
		_, rerr = a.Read(buf)
	}); allocs > 1 {
		t.Errorf("a read past its deadline allocates %.1f objects, want at most 1 (the error RawConn makes)", allocs)
	}
	if !errors.Is(rerr, os.ErrDeadlineExceeded) {
		t.Errorf("a read past its deadline: %v, want os.ErrDeadlineExceeded", rerr)
	}
}
