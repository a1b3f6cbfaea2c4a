package testutil

import (
	"net"
	"net/netip"
	"sync"
	"testing"

	"google.golang.org/grpc"
)

// Listen listens on a free port of 127.0.0.1 until t ends.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// ServeTCP listens on a free port of 127.0.0.1 until t ends and runs
// handle on each connection in a goroutine of its own, closing the
// connection when handle returns. It returns the listener's address.
func ServeTCP(t testing.TB, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	l := Listen(t)
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

// ServeGRPC serves gs on l until t ends, then stops gs and waits for Serve
// to return. It returns l's address.
func ServeGRPC(t testing.TB, gs *grpc.Server, l net.Listener) string {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() { gs.Stop(); wg.Wait() })
	wg.Go(func() { _ = gs.Serve(l) })
	return l.Addr().String()
}
