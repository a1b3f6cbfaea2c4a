package testutil

import (
	"net"
	"net/netip"
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
	t.Cleanup(func() { l.Close() })
	go func() {
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
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}
