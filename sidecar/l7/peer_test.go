package l7

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/testutil"
)

// A cluster's peerID is each connection's own server, as connections to
// different servers alternate (it keeps only the last one's), and ""
// for a connection without mTLS.
func TestClusterPeerIDPerConnection(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	dial := func(id spiffeid.ID) net.Conn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		srv := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{testutil.Certificate(t, ca, id)}})
		go srv.Handshake()
		cli := tls.Client(a, &tls.Config{RootCAs: testutil.Roots(ca), InsecureSkipVerify: true})
		if err := cli.Handshake(); err != nil {
			t.Fatal(err)
		}
		return cli
	}
	idA, idB := spiffeid.RequireFromPath(td, "/ns/demo/sa/a"), spiffeid.RequireFromPath(td, "/ns/demo/sa/b")
	ca1, cb := dial(idA), dial(idB)
	plain, other := net.Pipe()
	t.Cleanup(func() { plain.Close(); other.Close() })
	var c Cluster
	for i, step := range []struct {
		conn net.Conn
		want string
	}{{ca1, idA.String()}, {ca1, idA.String()}, {cb, idB.String()}, {ca1, idA.String()}, {plain, ""}, {cb, idB.String()}} {
		if got := c.peerID(step.conn); got != step.want {
			t.Fatalf("step %d: peer %q, want %q", i, got, step.want)
		}
	}
}

// uncomparableConn is a net.Conn whose values cannot be compared (==
// panics on them): a transport may report any net.Conn in GotConn.
type uncomparableConn struct {
	net.Conn
	pending []byte
}

// A cluster's transport is any http.RoundTripper, and the connection its
// trace reports any net.Conn: one of a type that cannot be compared has
// no peer, every time (the cache of the last connection's peer must not
// compare it).
func TestClusterPeerIDUncomparableConn(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	var c Cluster
	for i := range 3 {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("call %d: peerID panicked: %v", i, p)
				}
			}()
			if got := c.peerID(uncomparableConn{Conn: a}); got != "" {
				t.Fatalf("call %d: peer %q of a connection without TLS", i, got)
			}
		}()
	}
}

// A transport may report a TLS connection before its handshake (a
// tls.Client handshakes on its first write): it has no peer yet, and
// once handshaken its server is its peer — what was said before the
// handshake is not kept for it.
func TestClusterPeerIDAfterHandshake(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	id := spiffeid.RequireFromPath(td, "/ns/demo/sa/a")
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	srv := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{testutil.Certificate(t, ca, id)}})
	go srv.Handshake()
	cli := tls.Client(a, &tls.Config{RootCAs: testutil.Roots(ca), InsecureSkipVerify: true})
	var c Cluster
	if got := c.peerID(cli); got != "" {
		t.Fatalf("before the handshake: peer %q", got)
	}
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if got := c.peerID(cli); got != id.String() {
		t.Fatalf("after the handshake: peer %q, want %q", got, id)
	}
}
