package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/balance"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("weft.test")
	clientID = spiffeid.RequireFromPath(td, "/ns/demo/sa/client")
	serverID = spiffeid.RequireFromPath(td, "/ns/demo/sa/server")
)

// serverSidecar is the server side of the mesh path on loopback: an mTLS
// listener (the server's SVID, the client's verified) whose connections
// an Inbound serves, delivering to app.
type serverSidecar struct {
	addr netip.AddrPort
	in   *Inbound
	mu   sync.Mutex
	seen []string // protocol and peer of every request Authorize saw
}

func newServerSidecar(t *testing.T, ca *certs.CA, app netip.AddrPort, h2c bool, deny func(*http.Request) bool) *serverSidecar {
	t.Helper()
	dial := (&net.Dialer{}).DialContext
	s := &serverSidecar{}
	s.in = &Inbound{
		HTTP1: NewAppH1(dial),
		H2C:   AppH2C(dial),
		Authorize: func(r *http.Request, p Peer) error {
			s.mu.Lock()
			s.seen = append(s.seen, fmt.Sprintf("%s %s", r.Proto, p.ID))
			s.mu.Unlock()
			if deny != nil && deny(r) {
				return &Denied{Policy: "demo/no-admin"}
			}
			return nil
		},
		Limits: ServerLimits{HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute},
	}
	s.addr = serveInbound(t, ca, s.in, app, h2c)
	return s
}

// meshCluster reaches the server sidecars with the client's SVID, checking
// that they are serverID.
func meshCluster(t *testing.T, ca *certs.CA, servers ...*serverSidecar) *Cluster {
	t.Helper()
	svid := testutil.SVID(t, ca, clientID, 0)
	cfg := tlsconfig.MTLSClientConfig(svid, ca.Bundle(), tlsconfig.AuthorizeID(serverID))
	cfg.NextProtos = []string{"h2"}
	cfg.MinVersion = tls.VersionTLS13
	tr := MeshTransport(func(ctx context.Context, network, addr string) (*tls.Conn, error) {
		c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return c.(*tls.Conn), nil
	})
	t.Cleanup(tr.CloseIdleConnections)
	b := balance.New(balance.Config{})
	var addrs []netip.AddrPort
	for _, s := range servers {
		addrs = append(addrs, s.addr)
	}
	b.Update(addrs)
	return &Cluster{Name: "outbound|8080|server.demo", Balancer: b, Transport: tr, Scheme: "https"}
}

// The whole path on loopback: an HTTP/1.1 app client, the client
// sidecar, HTTP/2 over mTLS between the sidecars (the client's SPIFFE ID
// verified by the server side), and an HTTP/1.1 app behind the server
// sidecar that sees the request as the client sent it.
func TestMeshPathHTTP1(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	appSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %s body=%s", r.Proto, r.Method, r.Host, r.URL.RequestURI(), b)
	}))
	t.Cleanup(appSrv.Close)
	server := newServerSidecar(t, ca, netip.MustParseAddrPort(appSrv.Listener.Addr().String()), false, func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/admin") })
	addr := app(t, static(&Route{Name: "r", Backends: []Backend{{Cluster: meshCluster(t, ca, server), Weight: 1}}}))
	client := oneConn(t, false)

	req, _ := http.NewRequest("POST", "http://"+addr+"/orders?id=7", strings.NewReader("pay"))
	req.Host = "server.demo:8080"
	resp, b := testutil.Do(t, client, req)
	if want := "HTTP/1.1 POST server.demo:8080 /orders?id=7 body=pay"; resp.StatusCode != 200 || b != want {
		t.Fatalf("app answered %d %q, want 200 %q", resp.StatusCode, b, want)
	}
	server.mu.Lock()
	seen := strings.Join(server.seen, ";")
	server.mu.Unlock()
	if seen != "HTTP/2.0 "+clientID.String() {
		t.Fatalf("the server sidecar saw %q, want one HTTP/2 request from %s", seen, clientID)
	}

	// Denied by the server sidecar: 403 (Envoy's body), and the app
	// never sees it.
	req, _ = http.NewRequest("GET", "http://"+addr+"/admin/users", nil)
	resp, b = testutil.Do(t, client, req)
	if resp.StatusCode != 403 || b != "weft: RBAC: access denied\n" {
		t.Fatalf("denied path: %d %q", resp.StatusCode, b)
	}
}

// gRPC-shaped: h2c from the app, HTTP/2 over mTLS, h2c to an app that
// speaks only HTTP/2 with prior knowledge, trailers back; a denied call
// ends PERMISSION_DENIED.
func TestMeshPathGRPC(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	appSrv := &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		fmt.Fprintf(w, "%s %s", r.Proto, r.URL.Path)
		w.Header().Set("Grpc-Status", "0")
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go appSrv.Serve(l)
	t.Cleanup(func() { appSrv.Close() })
	server := newServerSidecar(t, ca, netip.MustParseAddrPort(l.Addr().String()), true, func(r *http.Request) bool { return r.URL.Path == "/pkg.Admin/Drop" })
	addr := app(t, static(&Route{Name: "r", Backends: []Backend{{Cluster: meshCluster(t, ca, server), Weight: 1}}}))
	client := oneConn(t, true)
	call := func(method string) (int, string, string) {
		req, _ := http.NewRequest("POST", "http://"+addr+method, strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", "application/grpc")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, gs := readGRPC(t, resp)
		return resp.StatusCode, b, gs
	}
	if code, body, gs := call("/pkg.Svc/Get"); code != 200 || body != "HTTP/2.0 /pkg.Svc/Get" || gs != "0" {
		t.Fatalf("call: %d %q grpc-status %q", code, body, gs)
	}
	if code, _, gs := call("/pkg.Admin/Drop"); code != 200 || gs != "7" {
		t.Fatalf("denied call: %d grpc-status %q, want 200 and PERMISSION_DENIED (7)", code, gs)
	}
}

// A server sidecar that does not offer h2 is a connect failure: nothing
// was sent, so the forwarder may try another endpoint.
func TestMeshTransportNeedsH2(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	svid := testutil.SVID(t, ca, serverID, 0)
	cfg := tlsconfig.MTLSServerConfig(svid, ca.Bundle(), tlsconfig.AuthorizeMemberOf(td))
	cfg.NextProtos = []string{"http/1.1"}
	addr := testutil.ServeTCP(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if tc.Handshake() == nil {
			io.Copy(io.Discard, tc)
		}
	})
	s := &serverSidecar{addr: addr}
	c := meshCluster(t, ca, s)
	req := httptest.NewRequest("GET", "http://server.demo/", nil)
	_, err := (&Forwarder{}).Forward(&Route{Name: "r", Backends: []Backend{{Cluster: c, Weight: 1}}}, req)
	var le *Error
	var ce *ConnectError
	if !errors.As(err, &le) || le.Reason != "connect_failure" || !errors.As(err, &ce) {
		t.Fatalf("a server without h2: %v, want a connect failure", err)
	}
}

// A request's trailers reach the app with their values, over the whole
// path: an HTTP/1.1 app's chunked request and an h2c app's stream, each
// through both sidecars (HTTP/2 between them) to an app of the same
// protocol. (httputil.ReverseProxy, which both sidecars used before the
// relay, cloned the trailer map before the body filled it: the app got
// the names and no values.)
func TestMeshPathRequestTrailers(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2c=%v", h2c), func(t *testing.T) {
			ca := testutil.NewCA(t, td, nil)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				fmt.Fprintf(w, "%s body=%s sum=%q", r.Proto, b, r.Trailer.Get("X-Sum"))
			})
			var appAddr netip.AddrPort
			if h2c {
				var p http.Protocols
				p.SetUnencryptedHTTP2(true)
				srv := &http.Server{Protocols: &p, Handler: h}
				l := testutil.Listen(t)
				go srv.Serve(l)
				t.Cleanup(func() { srv.Close() })
				appAddr = netip.MustParseAddrPort(l.Addr().String())
			} else {
				srv := httptest.NewServer(h)
				t.Cleanup(srv.Close)
				appAddr = netip.MustParseAddrPort(srv.Listener.Addr().String())
			}
			server := newServerSidecar(t, ca, appAddr, h2c, nil)
			addr := app(t, static(&Route{Name: "r", Backends: []Backend{{Cluster: meshCluster(t, ca, server), Weight: 1}}}))
			req, _ := http.NewRequest("POST", "http://"+addr+"/upload", nil)
			req.Host = "server.demo:8080"
			req.Trailer = http.Header{"X-Sum": nil}
			req.Body, req.ContentLength = &fillTrailer{Reader: strings.NewReader("payload"), tr: req.Trailer}, -1 // chunked
			resp, b := testutil.Do(t, oneConn(t, h2c), req)
			proto := "HTTP/1.1"
			if h2c {
				proto = "HTTP/2.0"
			}
			if want := proto + ` body=payload sum="7"`; resp.StatusCode != 200 || b != want {
				t.Fatalf("app answered %d %q, want 200 %q", resp.StatusCode, b, want)
			}
		})
	}
}

// fillTrailer is a request body that sets its request's trailer when the
// body ends, as a client that computes a checksum while it sends.
type fillTrailer struct {
	io.Reader
	tr http.Header
}

func (f *fillTrailer) Read(p []byte) (int, error) {
	n, err := f.Reader.Read(p)
	if err == io.EOF {
		f.tr.Set("X-Sum", "7")
	}
	return n, err
}

func (f *fillTrailer) Close() error { return nil }

// A response given up for a retry does not hold the retry back: over
// HTTP/2 between the sidecars it is reset at once, however slowly its body
// comes. Here the first answer is a streamed 503 whose body stops after
// one byte (an app that hangs mid-response): before, the forwarder read up
// to 4 KiB of it to keep the connection, and the retry waited for the
// route's timeout (a minute here).
func TestRetryNotHeldByASlowDiscardedBody(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	var n atomic.Int32
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	appSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 { // no length: streamed, each write flushed on
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "second try")
	}))
	t.Cleanup(appSrv.Close)
	server := newServerSidecar(t, ca, netip.MustParseAddrPort(appSrv.Listener.Addr().String()), false, nil)
	route := &Route{Name: "r", Timeout: time.Minute, Retry: RetryPolicy{Retries: 1, On: Status5xx},
		Backends: []Backend{{Cluster: meshCluster(t, ca, server), Weight: 1}}}
	addr := app(t, static(route))
	req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
	req.Host = "server.demo:8080"
	resp, b := testutil.Do(t, oneConn(t, false), req) // the client's 10 s: a guard, not a measure
	if resp.StatusCode != 200 || b != "second try" {
		t.Fatalf("answered %d %q, want the retry's 200", resp.StatusCode, b)
	}
}
