package testutil

import (
	"net"
	"net/netip"
	"sync"
	"testing"
)

// ServeTCP listens on a free port of 127.0.0.1 until t ends and runs
// handle on each connection in a goroutine of its own, closing the
// connection when handle returns. It returns the listener's address.
func ServeTCP(t testing.TB, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, l, handle)
	return netip.MustParseAddrPort(l.Addr().String())
}

// Serve accepts connections on l until t ends, then closes l and waits
// for the accepting goroutine to return. It runs handle on each
// connection in a goroutine of its own, closing the connection when
// handle returns. For a listener ServeTCP cannot open: one in another
// network namespace, or on a port shared with UDP.
func Serve(t testing.TB, l net.Listener, handle func(net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	})
}
