// Package rawio reads and writes TCP sockets with system calls the Go
// scheduler is not told of.
//
// A Go program that goes idle parks its threads: the one left polls the
// network, and sysmon, the runtime's monitor thread, sleeps. The first
// system call after that enters the kernel through the scheduler
// (entersyscall), which wakes sysmon so that it could take the processor
// back should the call block. A sidecar at a few thousand requests a
// second goes idle between most requests, so most requests pay for that
// wake: a futex to wake sysmon, a switch to its thread, its sleep
// (nanosleep) and a futex to park it again. Measured on the L7 pair
// (sidecar/proxy/bench, HTTP/1.1 at 1,000 req/s over 4 connections): 2–3
// futex and 1–2 nanosleep calls and ~7 context switches per request on
// each sidecar, as many system calls as the request's own reads and writes.
//
// The sockets a sidecar serves are non-blocking: a read or a write either
// moves bytes or fails with EAGAIN at once, it never sleeps in the kernel,
// so there is nothing for sysmon to take back (the calls pass MSG_DONTWAIT,
// so that holds even of a socket switched to blocking mode). This package
// makes those calls with syscall.RawSyscall, which bypasses the scheduler,
// and waits for readiness as net.Conn does, through the socket's
// syscall.RawConn (the runtime's poller), so deadlines and Close behave as
// they do for net.Conn.
//
// Under the race detector (build tag race) the calls are the syscall
// package's: the detector learns of the synchronisation a socket gives
// between goroutines only from them.
package rawio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// maxRW bounds one system call's bytes, as internal/poll does (1 GiB).
const maxRW = 1 << 30

// Conn is a TCP connection whose Read and Write are this package's.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn
	r  reader
	w  writer
}

// Wrap returns c with this package's Read and Write; c itself when it
// gives no syscall.RawConn (it always does). Under the race detector the
// system calls are the syscall package's, but the code around them is the
// same.
func Wrap(c *net.TCPConn) net.Conn {
	rc, err := c.SyscallConn()
	if err != nil {
		return c
	}
	w := &Conn{TCPConn: c, rc: rc}
	w.r.init()
	w.w.init()
	return w
}

// Read reads as net.Conn's Read does.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		// net.Conn's reads nothing, but fails on a closed connection.
		if err := c.rc.Control(func(uintptr) {}); err != nil {
			return 0, c.opError("read", err)
		}
		return 0, nil
	}
	n, err := c.r.read(c.rc, b)
	if err != nil && err != io.EOF {
		err = c.opError("read", err)
	}
	return n, err
}

// Write writes as net.Conn's Write does: all of b, or an error.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.w.write(c.rc, b)
	if err != nil {
		err = c.opError("write", err)
	}
	return n, err
}

// opError gives err the form net.Conn's errors have: a *net.OpError whose
// Err is a *os.SyscallError, os.ErrDeadlineExceeded or net.ErrClosed.
//
// RawConn's own errors (a closed connection, a deadline) are a
// *net.OpError it makes for this one call ("raw-read", "raw-write"): that
// one is given the form and returned, not copied. A deadline's error comes
// once a request on a sidecar's HTTP/1.1 connections (net/http's server
// ends its background read with one), so it is not made twice.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		oe.Op, oe.Net, oe.Source, oe.Addr = op, "tcp", c.LocalAddr(), c.RemoteAddr()
		return oe
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Quiet is Quiet of c's socket, allocating nothing.
func (c *Conn) Quiet() bool {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	c.r.quiet = false
	if err := c.rc.Read(c.r.peek); err != nil {
		return false
	}
	return c.r.quiet
}

// reader is one direction's state for read: the function RawConn.Read
// calls is made once, in init, and finds its buffer and leaves its result
// here, so that a read allocates nothing (a closure over the call's own
// variables escapes to the heap on every call: 3 allocations a read). mu
// holds the state for one read at a time; the poller's lock, taken inside
// RawConn.Read, would serialise concurrent reads only after the state was
// set.
type reader struct {
	mu    sync.Mutex
	b     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
	quiet bool                  // Quiet's result
	peek  func(fd uintptr) bool // Quiet's probe: never waits
}

func (r *reader) init() {
	r.fn = r.try
	r.peek = func(fd uintptr) bool {
		r.quiet = sysPeek(fd) == syscall.EAGAIN
		return true
	}
}

// try is one attempt of the read, inside RawConn.Read: true when it is
// done (bytes, the end of the stream or an error), false to wait for
// readiness.
func (r *reader) try(fd uintptr) bool {
	for {
		n, e := sysRead(fd, r.b)
		switch e {
		case 0:
			r.n = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait for readiness
		default:
			r.errno = e
			return true
		}
	}
}

// read is one read of rc into b: n > 0 bytes, io.EOF at the end of the
// stream, or the error (a *os.SyscallError, or RawConn's own for a closed
// connection or a deadline).
func (r *reader) read(rc syscall.RawConn, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if len(b) > maxRW {
		b = b[:maxRW]
	}
	r.mu.Lock()
	r.b, r.n, r.errno = b, 0, 0
	err := rc.Read(r.fn)
	n, errno := r.n, r.errno
	r.b = nil // the caller's buffer is not kept
	r.mu.Unlock()
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// writer is write's state, as reader is read's.
type writer struct {
	mu    sync.Mutex
	b     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func (w *writer) init() { w.fn = w.try }

// try writes what is left of the write, inside RawConn.Write: true when
// all of it is written or an error stops it, false to wait for room.
func (w *writer) try(fd uintptr) bool {
	for w.n < len(w.b) {
		chunk := w.b[w.n:]
		if len(chunk) > maxRW {
			chunk = chunk[:maxRW]
		}
		r, e := sysSend(fd, chunk)
		switch e {
		case 0:
			w.n += r
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait for room
		default:
			w.errno = e
			return true
		}
	}
	return true
}

// write writes all of b to rc, waiting for room as needed; n is what was
// written when it fails.
func (w *writer) write(rc syscall.RawConn, b []byte) (int, error) {
	w.mu.Lock()
	w.b, w.n, w.errno = b, 0, 0
	err := rc.Write(w.fn)
	n, errno := w.n, w.errno
	w.b = nil
	w.mu.Unlock()
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, os.NewSyscallError("write", errno)
	}
	return n, nil
}

// Read is a read of fd (recv(2) with MSG_DONTWAIT: EAGAIN, never a wait),
// as syscall.Read: for a caller inside a syscall.RawConn's Read.
func Read(fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, e := sysRead(fd, b)
	if e != 0 {
		return -1, e
	}
	return n, nil
}

// Quiet reports whether the socket of rc has nothing to read and is open:
// its peer has neither closed it nor sent anything (a pooled idle
// connection fit to be used again). It never waits.
func Quiet(rc syscall.RawConn) bool {
	quiet := false
	if err := rc.Read(func(fd uintptr) bool {
		quiet = sysPeek(fd) == syscall.EAGAIN
		return true // never wait
	}); err != nil {
		return false
	}
	return quiet
}
