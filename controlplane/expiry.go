package controlplane

import (
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"k8s.io/utils/clock"
)

// expiringCreds closes a connection on port 15012 when the client
// certificate it was opened with expires (NotAfter, on the control plane's
// clock). gRPC multiplexes streams over one connection and TLS checks the
// certificate once, at the handshake: without this a sidecar whose ADS or
// audit stream ended at its SVID's expiry (streamauth) would reopen it on
// the same connection, with the same expired certificate, and be refused
// until the connection broke for another reason. Closed, the client's
// gRPC reconnects with a handshake that presents its renewed SVID.
// Connections without a client certificate (the certificate service's
// callers) are left alone.
type expiringCreds struct {
	credentials.TransportCredentials
	clock clock.Clock
}

func (c expiringCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, info, err
	}
	if ti, ok := info.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		conn = closeAt(conn, ti.State.PeerCertificates[0].NotAfter, c.clock)
	}
	return conn, info, nil
}

func (c expiringCreds) Clone() credentials.TransportCredentials {
	return expiringCreds{c.TransportCredentials.Clone(), c.clock}
}

// closeAt returns conn, closed at at by clk unless closed before.
func closeAt(conn net.Conn, at time.Time, clk clock.Clock) net.Conn {
	ec := &expiringConn{Conn: conn, done: make(chan struct{})}
	t := clk.NewTimer(at.Sub(clk.Now()))
	go func() {
		select {
		case <-t.C():
			_ = conn.Close()
		case <-ec.done:
			t.Stop()
		}
	}()
	return ec
}

type expiringConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *expiringConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}
