package proxy

import (
	"io"
	"net"
	"testing"
)

// sink reads to EOF, then answers one byte: the throughput server.
func sink(c *net.TCPConn, a *app) {
	n, _ := io.Copy(io.Discard, c)
	a.received.Add(n)
	c.Write([]byte{1})
}

// pingPong answers every 1 KiB request with 1 KiB.
func pingPong(c *net.TCPConn, _ *app) {
	buf := make([]byte, 1024)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// benchConn returns a client connection to handle's server: direct, or
// through the sidecar pair (client → A outbound → mTLS → B inbound → app).
func benchConn(b *testing.B, mesh bool, handle func(*net.TCPConn, *app)) net.Conn {
	b.Helper()
	if !mesh {
		a := startApp(b, handle)
		c, err := net.Dial("tcp", a.addr().String())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	return newMeshPair(b, handle, nil).dial()
}

func benchThroughput(b *testing.B, mesh bool) {
	c := benchConn(b, mesh, sink)
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkThroughputDirect is the baseline: one loopback TCP connection,
// 1 MiB per op.
func BenchmarkThroughputDirect(b *testing.B) { benchThroughput(b, false) }

// BenchmarkThroughputMeshPair sends the same through both sidecars and the
// mTLS between them.
func BenchmarkThroughputMeshPair(b *testing.B) { benchThroughput(b, true) }

// BenchmarkRequestLatency: 1 KiB request, 1 KiB response, on one open
// connection; ns/op is the round trip, direct vs through the pair.
func BenchmarkRequestLatency(b *testing.B) {
	for _, mesh := range []bool{false, true} {
		name := "direct"
		if mesh {
			name = "mesh_pair"
		}
		b.Run(name, func(b *testing.B) {
			c := benchConn(b, mesh, pingPong)
			buf := make([]byte, 1024)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
