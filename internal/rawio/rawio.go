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
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// maxRW bounds one system call's bytes, as internal/poll does (1 GiB).
const maxRW = 1 << 30

// Conn is a TCP connection whose Read and Write are this package's.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn
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
	return &Conn{TCPConn: c, rc: rc}
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
	n, err := read(c.rc, b)
	if err != nil && err != io.EOF {
		err = c.opError("read", err)
	}
	return n, err
}

// Write writes as net.Conn's Write does: all of b, or an error.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := write(c.rc, b)
	if err != nil {
		err = c.opError("write", err)
	}
	return n, err
}

// opError gives err the form net.Conn's errors have: a *net.OpError whose
// Err is a *os.SyscallError, os.ErrDeadlineExceeded or net.ErrClosed.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) { // RawConn's own ("raw-read", "raw-write")
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// read is one read of rc into b: n > 0 bytes, io.EOF at the end of the
// stream, or the error (a *os.SyscallError, or RawConn's own for a closed
// connection or a deadline).
func read(rc syscall.RawConn, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if len(b) > maxRW {
		b = b[:maxRW]
	}
	var n int
	var errno syscall.Errno
	err := rc.Read(func(fd uintptr) bool {
		for {
			r, e := sysRead(fd, b)
			switch e {
			case 0:
				n = r
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait for readiness
			default:
				errno = e
				return true
			}
		}
	})
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

// write writes all of b to rc, waiting for room as needed; n is what was
// written when it fails.
func write(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			chunk := b[n:]
			if len(chunk) > maxRW {
				chunk = chunk[:maxRW]
			}
			r, e := sysSend(fd, chunk)
			switch e {
			case 0:
				n += r
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait for room
			default:
				errno = e
				return true
			}
		}
		return true
	})
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
