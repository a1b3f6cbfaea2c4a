//go:build !race

package rawio

import (
	"syscall"
	"unsafe"
)

// raw: the system calls are raw ones.
const raw = true

// sysRead is recv(2) on fd with MSG_DONTWAIT, unknown to the scheduler:
// read(2)'s result on a TCP socket, but EAGAIN rather than a wait in the
// kernel even if the socket was switched to blocking mode (a raw call
// holds its P while it waits: a stop-the-world would wait for the peer).
// len(b) > 0.
func sysRead(fd uintptr, b []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), syscall.MSG_DONTWAIT, 0, 0)
	return int(r), e
}

// sysSend is send(2) on fd with MSG_NOSIGNAL (a peer gone is EPIPE, never
// SIGPIPE) and MSG_DONTWAIT (as sysRead), unknown to the scheduler.
// len(b) > 0.
func sysSend(fd uintptr, b []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), syscall.MSG_NOSIGNAL|syscall.MSG_DONTWAIT, 0, 0)
	return int(r), e
}

// sysPeek is recv(2) of one byte on fd with MSG_PEEK|MSG_DONTWAIT, unknown
// to the scheduler: EAGAIN when there is nothing to read, 0 (with or
// without a byte) when there is data or the peer closed.
func sysPeek(fd uintptr) syscall.Errno {
	var b [1]byte
	_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return e
}
