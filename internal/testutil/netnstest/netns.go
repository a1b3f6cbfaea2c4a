// Package netnstest runs test code in throwaway Linux network namespaces:
// nftables rules, veth pairs, listeners and dials that must not touch the
// machine's own network. Tests using it need root and skip without it.
//
// A namespace is owned by one locked OS thread. [NS.Do] runs functions on
// that thread, so sockets (TCP, UDP and netlink alike) opened inside Do
// live in the namespace and stay there when used from other goroutines
// afterwards. [NS.Go] starts a goroutine on a thread of its own in the
// namespace, for code that blocks (a server whose listeners it opens
// itself). When the test ends those goroutines return without unlocking,
// and the Go runtime discards their threads, and with them the namespace
// once its sockets are closed. Nothing here ever programs the namespace
// the test binary started in: New refuses a thread that did not move.
package netnstest

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostNetns identifies the test binary's namespace as it was at package
// initialisation, before any thread moved (the thread-group leader may be
// one of the moved ones, so /proc/self/ns/net is no reference later).
var hostNetns = nsID("/proc/self/ns/net")

func nsID(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// IsHost reports whether path (a /proc/.../ns/net file) is the namespace
// the test binary started in; true when it cannot tell.
func IsHost(path string) bool {
	id := nsID(path)
	return id == "" || hostNetns == "" || id == hostNetns
}

// NS is one throwaway network namespace.
type NS struct {
	Name  string
	tid   int
	calls chan func()
	done  chan struct{}
}

// New returns a fresh namespace with lo up, or skips the test when not
// root or when the kernel cannot create one. It is gone after the test.
func New(t testing.TB, name string) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netns tests need root (CAP_SYS_ADMIN for unshare, CAP_NET_ADMIN for nftables and links)")
	}
	n := &NS{Name: name, calls: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Deliberately never unlocked: the thread dies with this goroutine.
		defer close(n.done)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		n.tid = unix.Gettid()
		// Guard: never let a test program the host's namespace.
		if IsHost(n.Path()) {
			ready <- errors.New("unshare did not move the thread into a new network namespace")
			return
		}
		ready <- nil
		for f := range n.calls {
			f()
		}
	}()
	if err := <-ready; err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			t.Skipf("cannot create a network namespace: %v", err)
		}
		t.Fatalf("netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		close(n.calls)
		<-n.done
	})
	n.Must(t, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	return n
}

// Path names the namespace for other processes and namespaces.
func (n *NS) Path() string { return fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), n.tid) }

// Do runs f on the namespace's thread and returns its error.
func (n *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	n.calls <- func() { errc <- f() }
	return <-errc
}

// Must runs f on the namespace's thread and fails the test on error.
func (n *NS) Must(t testing.TB, f func() error) {
	t.Helper()
	if err := n.Do(f); err != nil {
		t.Fatalf("netns %s: %v", n.Name, err)
	}
}

// Go runs f on a new goroutine locked to a thread of its own that has
// joined the namespace, so that f may block (a server's Run) while Do
// goes on serving. Sockets f opens live in the namespace. Go returns once
// the thread has joined, or an error if it could not; f then never runs.
func (n *NS) Go(f func()) error {
	fd, err := unix.Open(n.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	joined := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked, whatever happens: the thread may have moved.
		err := unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err == nil && IsHost(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())) {
			err = errors.New("setns left the thread in the host's network namespace")
		}
		joined <- err
		if err == nil {
			f()
		}
	}()
	return <-joined
}

// Veth connects two namespaces: a gets cidrsA on "veth-<a.Name>", b gets
// cidrsB on "veth-<b.Name>"; both ends up and carrying. IPv6 addresses
// skip duplicate address detection, so they are usable at once.
func Veth(t testing.TB, a *NS, cidrsA []string, b *NS, cidrsB []string) {
	t.Helper()
	nameA, nameB := "veth-"+a.Name, "veth-"+b.Name
	f, err := os.Open(b.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a.Must(t, func() error {
		la := netlink.NewLinkAttrs()
		la.Name = nameA
		v := &netlink.Veth{LinkAttrs: la, PeerName: nameB, PeerNamespace: netlink.NsFd(int(f.Fd()))}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("veth add: %w", err)
		}
		return linkUp(nameA, cidrsA)
	})
	b.Must(t, func() error { return linkUp(nameB, cidrsB) })
	// Until the kernel's linkwatch has seen the carrier (up to a second
	// later) the device drops what it is given: wait for operstate up.
	a.Must(t, func() error { return waitOperUp(nameA) })
	b.Must(t, func() error { return waitOperUp(nameB) })
}

func waitOperUp(link string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return err
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: operstate %v after 5s", link, l.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func linkUp(link string, cidrs []string) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return fmt.Errorf("%s: %w", link, err)
	}
	for _, cidr := range cidrs {
		addr, err := netlink.ParseAddr(cidr)
		if err != nil {
			return err
		}
		addr.Flags |= unix.IFA_F_NODAD // IPv6: usable at once
		if err := netlink.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("%s addr %s: %w", link, cidr, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s up: %w", link, err)
	}
	return nil
}
