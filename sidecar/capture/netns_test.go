package capture

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

// netns is a fresh network namespace owned by one locked OS thread. Do runs
// functions on that thread, so sockets (TCP and netlink alike) opened inside
// Do live in the namespace; they stay there when used from other goroutines
// afterwards. When the test ends the goroutine returns without unlocking,
// and the Go runtime discards the thread, and with it the namespace once its
// sockets are closed.
type netns struct {
	name  string
	tid   int
	calls chan func()
	done  chan struct{}
}

// newNetns returns a fresh namespace with lo up, or skips the test when not
// root or when the kernel cannot create one.
func newNetns(t testing.TB, name string) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("capture: netns tests need root (CAP_SYS_ADMIN for unshare, CAP_NET_ADMIN for nftables)")
	}
	n := &netns{name: name, calls: make(chan func()), done: make(chan struct{})}
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
		if sameNetns(hostNetns, n.path()) {
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
			t.Skipf("capture: cannot create a network namespace: %v", err)
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

// hostNetns is the test process's namespace as TestMain found it, before
// any thread moved (the thread-group leader may be one of the moved ones, so
// /proc/self/ns/net is no reference later).
var hostNetns string

func recordHostNetns() {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err == nil {
		hostNetns = fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	}
}

func sameNetns(ref, path string) bool {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return true // cannot tell: refuse
	}
	return ref == "" || ref == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// path names the namespace for other processes and namespaces.
func (n *netns) path() string { return fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), n.tid) }

// Do runs f on the namespace's thread and returns its error.
func (n *netns) Do(f func() error) error {
	errc := make(chan error, 1)
	n.calls <- func() { errc <- f() }
	return <-errc
}

// Must runs f on the namespace's thread and fails the test on error.
func (n *netns) Must(t testing.TB, f func() error) {
	t.Helper()
	if err := n.Do(f); err != nil {
		t.Fatalf("netns %s: %v", n.name, err)
	}
}

// veth connects two namespaces: a gets cidrsA on "veth-<a.name>", b gets
// cidrsB on "veth-<b.name>"; both ends up.
func veth(t testing.TB, a *netns, cidrsA []string, b *netns, cidrsB []string) {
	t.Helper()
	nameA, nameB := "veth-"+a.name, "veth-"+b.name
	f, err := os.Open(b.path())
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
