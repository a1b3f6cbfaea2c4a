package proxy

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// Parking idle connections.
//
// A forwarding direction waiting for bytes is a goroutine parked in the
// poller, and the runtime never shrinks a parked goroutine's stack below
// 4 KiB (it shrinks a stack only while less than a quarter of it is used,
// counting an 800-byte reserve): two such stacks are 8 KiB of every idle
// connection, a third of what crypto/tls itself keeps. So a direction whose
// source has been silent for Config.IdleParkAfter gives its goroutine up
// and waits in the parker instead: one epoll set for the whole proxy,
// watched by one goroutine, holding a few dozen bytes per direction. When
// the source becomes readable (bytes, EOF or an error), a new goroutine
// picks the direction up where it stopped; it holds no buffer across the
// wait, so there is nothing else to restore.
//
// Closing a connection must wake its parked directions first (kick): epoll
// forgets a socket silently when it is closed, and a direction left parked
// would never finish. Every close path of a forwarded connection (a pipe
// ending, drain cutting connections) kicks before it closes.

// errParked ends a flow's goroutine: the flow waits in the parker.
var errParked = errors.New("proxy: flow parked")

// parker is the proxy's epoll set of idle flows.
type parker struct {
	epfd        int
	stopR, stop int // a pipe: a byte on stop ends run

	mu     sync.Mutex
	next   uint64
	parked map[uint64]*flow // by token, the epoll event's data
}

func newParker() (*parker, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, os.NewSyscallError("pipe2", err)
	}
	pk := &parker{epfd: epfd, stopR: p[0], stop: p[1], parked: map[uint64]*flow{}}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	setToken(&ev, 0) // token 0 is the stop pipe; flows get 1, 2, ...
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pk.stopR, &ev); err != nil {
		pk.close()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return pk, nil
}

func setToken(ev *syscall.EpollEvent, t uint64) {
	ev.Fd, ev.Pad = int32(uint32(t)), int32(uint32(t>>32))
}

func token(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// park adds f, whose source socket is rc, to the set. It returns false,
// having added nothing, when f's connection is being closed (the caller
// then waits for the close in the poller) or when the socket cannot be
// added. The registration happens inside rc.Control, while the socket
// cannot be closed under it.
func (pk *parker) park(f *flow) bool {
	ok := false
	err := f.rc.Control(func(fd uintptr) {
		pk.mu.Lock()
		defer pk.mu.Unlock()
		if f.closing {
			return
		}
		pk.next++
		t := pk.next
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
		setToken(&ev, t)
		if syscall.EpollCtl(pk.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev) != nil {
			return
		}
		f.token, f.fd = t, int(fd)
		pk.parked[t] = f
		ok = true
	})
	return ok && err == nil
}

// take removes the flow of token t from the set, if it is still there.
// Called with pk.mu held.
func (pk *parker) take(t uint64) *flow {
	f := pk.parked[t]
	if f == nil {
		return nil
	}
	delete(pk.parked, t)
	_ = syscall.EpollCtl(pk.epfd, syscall.EPOLL_CTL_DEL, f.fd, nil)
	f.token, f.fd = 0, -1
	return f
}

// kick marks f's connection as closing, so f never parks again, and
// resumes f if it is parked. Callers close f's sockets after kicking.
func (pk *parker) kick(f *flow) {
	pk.mu.Lock()
	f.closing = true
	var g *flow
	if f.token != 0 {
		g = pk.take(f.token)
	}
	pk.mu.Unlock()
	if g != nil {
		g.resume()
	}
}

// parkedFlows is how many flows wait in the set.
func (pk *parker) parkedFlows() int {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	return len(pk.parked)
}

// run resumes flows as their sockets become readable, until stop.
func (pk *parker) run() error {
	events := make([]syscall.EpollEvent, 64)
	for {
		n, err := syscall.EpollWait(pk.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("epoll_wait", err)
		}
		var ready []*flow
		pk.mu.Lock()
		for i := range n {
			t := token(&events[i])
			if t == 0 {
				pk.mu.Unlock()
				return nil
			}
			if f := pk.take(t); f != nil {
				ready = append(ready, f)
			}
		}
		pk.mu.Unlock()
		for _, f := range ready {
			f.resume()
		}
	}
}

// shutdown ends run and releases the set. Every flow must have finished:
// Run calls it after its forwarding goroutines are done.
func (pk *parker) shutdown() error {
	if _, err := syscall.Write(pk.stop, []byte{0}); err != nil {
		return fmt.Errorf("proxy: stopping the parker: %w", os.NewSyscallError("write", err))
	}
	return nil
}

func (pk *parker) close() {
	syscall.Close(pk.epfd)
	syscall.Close(pk.stopR)
	syscall.Close(pk.stop)
}
