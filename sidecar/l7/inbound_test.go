package l7

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
)

// serveInbound serves in behind an mTLS listener with serverID's SVID, as
// the server sidecar's inbound h2 chain does, each connection's peer
// going to dst; it returns the listener's address.
func serveInbound(t *testing.T, ca *certs.CA, in *Inbound, dst netip.AddrPort, h2c bool) netip.AddrPort {
	t.Helper()
	cfg := tlsconfig.MTLSServerConfig(testutil.SVID(t, ca, serverID, 0), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td))
	cfg.NextProtos = []string{"h2", "http/1.1"}
	cfg.MinVersion = tls.VersionTLS13
	addr := testutil.ServeTCP(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if tc.HandshakeContext(context.Background()) != nil {
			return
		}
		id, err := x509svid.IDFromCert(tc.ConnectionState().PeerCertificates[0])
		if err == nil {
			in.ServeConn(tc, Peer{ID: id, Dst: dst, H2C: h2c})
		}
	})
	t.Cleanup(func() { in.Close() })
	return addr
}

// inboundCall sends one request through a client sidecar's forwarder to
// the Inbound at addr and returns the status, the gRPC status (header or
// trailer) and the body.
func inboundCall(t *testing.T, ca *certs.CA, addr netip.AddrPort, path string, grpc bool) (int, string, string) {
	t.Helper()
	route := &Route{Name: "r", Backends: []Backend{{Cluster: meshCluster(t, ca, &serverSidecar{addr: addr}), Weight: 1}}}
	req, _ := http.NewRequest("POST", "http://server.demo:8080"+path, strings.NewReader("x"))
	if grpc {
		req.Header.Set("Content-Type", "application/grpc")
	}
	resp, err := (&Forwarder{}).Forward(route, req)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, gs := readGRPC(t, resp)
	return resp.StatusCode, gs, b
}

// When the app cannot be reached the server sidecar answers itself: 502
// "app unreachable" (gRPC UNAVAILABLE), or 504 when reaching it timed out
// (gRPC DEADLINE_EXCEEDED). It needs no logger to do so.
func TestInboundAnswersForAnUnreachableApp(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	refused := &Inbound{HTTP1: NewAppH1((&net.Dialer{}).DialContext)}
	refusedAddr := serveInbound(t, ca, refused, deadTCP(t), false)
	slowDial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return nil, fmt.Errorf("dial 198.18.0.9:8080: %w", context.DeadlineExceeded)
	}
	slow := &Inbound{H2C: AppH2C(slowDial)}
	slowAddr := serveInbound(t, ca, slow, netip.MustParseAddrPort("198.18.0.9:8080"), true)
	for _, tc := range []struct {
		name     string
		addr     netip.AddrPort
		grpc     bool
		status   int
		grpcCode string
		body     string
	}{
		{"refused", refusedAddr, false, 502, "", "weft: app unreachable\n"},
		{"refused, gRPC", refusedAddr, true, 200, "14", ""},
		{"timed out", slowAddr, false, 504, "", "weft: app unreachable\n"},
		{"timed out, gRPC", slowAddr, true, 200, "4", ""},
	} {
		if status, gs, body := inboundCall(t, ca, tc.addr, "/x", tc.grpc); status != tc.status || gs != tc.grpcCode || body != tc.body {
			t.Errorf("%s: %d grpc-status %q %q, want %d %q %q", tc.name, status, gs, body, tc.status, tc.grpcCode, tc.body)
		}
	}
}

// A path CheckPath cannot decide is refused 400 (gRPC INVALID_ARGUMENT)
// with the reason, and never reaches the app; a path it can is delivered.
func TestInboundRefusesUndecidablePaths(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	var reached atomic.Int32
	appAddr := testutil.ServeTCP(t, func(c net.Conn) {
		reached.Add(1)
		r, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		io.Copy(io.Discard, r.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	in := &Inbound{HTTP1: NewAppH1((&net.Dialer{}).DialContext), Authorize: func(r *http.Request, _ Peer) error { return CheckPath(r) }}
	addr := serveInbound(t, ca, in, appAddr, false)
	for _, tc := range []struct {
		path     string
		grpc     bool
		status   int
		grpcCode string
		body     string
	}{
		{"/api/../admin", false, 400, "", "weft: bad request: a dot or empty segment in the path\n"},
		{"/api/../admin", true, 200, "3", ""},
		{"/api%2Fadmin", false, 400, "", "weft: bad request: an escaped separator in the path\n"},
	} {
		if status, gs, body := inboundCall(t, ca, addr, tc.path, tc.grpc); status != tc.status || gs != tc.grpcCode || body != tc.body {
			t.Errorf("%s grpc=%v: %d grpc-status %q %q, want %d %q %q", tc.path, tc.grpc, status, gs, body, tc.status, tc.grpcCode, tc.body)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the app was reached %d times by refused requests", n)
	}
	if status, _, body := inboundCall(t, ca, addr, "/api/x", false); status != 200 || body != "ok" || reached.Load() != 1 {
		t.Fatalf("a decidable path: %d %q, want the app's 200", status, body)
	}
}

// Once closed, an Inbound refuses the connections it is given: ServeConn
// says so at once instead of holding them.
func TestInboundServeConnAfterClose(t *testing.T) {
	in := &Inbound{}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer b.Close()
	done := make(chan error, 1)
	go func() { done <- in.ServeConn(tls.Client(a, &tls.Config{}), Peer{}) }()
	select {
	case err := <-done:
		if !errors.Is(err, errServerClosed) || err.Error() != "l7: server closed" {
			t.Fatalf("ServeConn after Close: %v, want l7: server closed", err)
		}
	case <-time.After(testutil.EventuallyTimeout):
		t.Fatal("ServeConn after Close did not return")
	}
}

// The transports' bounds on idle connections: 90 s to the app (as
// net/http's default transport), 5 min between sidecars (pooled HTTP/2
// connections live long); the HTTP/1.1 app transport does not decompress
// (weft's HTTP/2 client never does) and keeps up to 64 idle connections
// to the app.
func TestTransportBounds(t *testing.T) {
	app := AppTransport((&net.Dialer{}).DialContext)
	if app.IdleConnTimeout != 90*time.Second || app.MaxIdleConnsPerHost != 64 || !app.DisableCompression || app.ResponseHeaderTimeout != 0 {
		t.Errorf("AppTransport: idle %v, %d idle per host, compression off %v, header timeout %v; want 90s, 64, true, 0",
			app.IdleConnTimeout, app.MaxIdleConnsPerHost, app.DisableCompression, app.ResponseHeaderTimeout)
	}
	if !app.Protocols.HTTP1() || app.Protocols.UnencryptedHTTP2() {
		t.Errorf("AppTransport speaks %v", app.Protocols)
	}
	if h2c := AppH2C((&net.Dialer{}).DialContext); h2c.IdleTimeout != 90*time.Second {
		t.Errorf("AppH2C: idle %v, want 90s", h2c.IdleTimeout)
	}
	if mesh := MeshTransport(nil); mesh.IdleTimeout != 5*time.Minute {
		t.Errorf("MeshTransport: idle %v, want 5m0s", mesh.IdleTimeout)
	}
}

// The errors' messages, whole.
func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&Denied{Policy: "demo/no-admin"}, "denied by demo/no-admin"},
		{&BadRequest{Reason: "a dot or empty segment in the path"}, "bad request: a dot or empty segment in the path"},
		{&ConnectError{Err: errors.New("connection refused")}, "connect: connection refused"},
		{&Error{Route: "r", Status: 503, Reason: "connect_failure", Err: &ConnectError{Err: errors.New("connection refused")}},
			`l7: route "r": connect_failure (503): connect: connection refused`},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%T: %q, want %q", tc.err, got, tc.want)
		}
	}
}

// writeCounter counts the Writes made on the connections it dials.
type writeCounter struct {
	writes atomic.Int64
}

func (w *writeCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countedWrites{Conn: c, n: &w.writes}, nil
}

type countedWrites struct {
	net.Conn
	n *atomic.Int64
}

func (c *countedWrites) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// A request body of declared length up to MaxWholeBody goes to an HTTP/1.1
// app with its head in one write (wholeSmallBody), one that asked for
// 100-continue too (the sidecar's server answers it); a longer one and one
// of unknown length stream as before — and the app gets every body whole
// either way.
func TestInboundSendsASmallBodyWithItsHead(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	app := testutil.Listen(t)
	go func() {
		_ = http.Serve(app, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%d %s", len(b), b)
		}))
	}()
	var wc writeCounter
	in := &Inbound{HTTP1: NewAppH1(wc.dial)}
	addr := serveInbound(t, ca, in, netip.MustParseAddrPort(app.Addr().String()), false)
	route := &Route{Name: "r", Backends: []Backend{{Cluster: meshCluster(t, ca, &serverSidecar{addr: addr}), Weight: 1}}}
	for _, tc := range []struct {
		name     string
		size     int
		length   bool // Content-Length declared
		expect   bool
		trailer  http.Header // declared, with the values sent
		oneWrite bool
	}{
		{"1 KiB", 1 << 10, true, false, nil, true},
		{"MaxWholeBody", MaxWholeBody, true, false, nil, true},
		{"above MaxWholeBody", MaxWholeBody + 1, true, false, nil, false},
		{"100-continue", 1 << 10, true, true, nil, true},
		{"trailers", 1 << 10, true, false, http.Header{"X-Sum": {"1"}}, false},
		// A declared trailer that may not be one (nor sent) leaves the
		// request without trailers: whole, as one without.
		{"a trailer that may not be one", 1 << 10, true, false, http.Header{"Host": nil}, true},
		{"unknown length", 1 << 10, false, false, nil, false},
	} {
		body := strings.Repeat("b", tc.size)
		var rd io.Reader = strings.NewReader(body)
		if !tc.length {
			rd = io.MultiReader(rd) // NewRequest then knows no length
		}
		req, _ := http.NewRequest("POST", "http://server.demo:8080/x", rd)
		if tc.expect {
			req.Header.Set("Expect", "100-continue")
		}
		req.Trailer = tc.trailer
		before := wc.writes.Load()
		resp, err := (&Forwarder{}).Forward(route, req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d %s", tc.size, body); resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("%s: %d, the app got %.40q…, want the whole body", tc.name, resp.StatusCode, got)
		}
		if n := wc.writes.Load() - before; (n == 1) != tc.oneWrite {
			t.Errorf("%s: the request reached the app in %d writes, want one: %v", tc.name, n, tc.oneWrite)
		}
	}
}

// TestInboundExcessBodyNeverReachesTheApp: a client declares
// Content-Length 10 and sends 10 bytes of DATA, then more — a request
// smuggled behind them: nothing past the declared length reaches the
// HTTP/1.1 app, the body read whole (wholeSmallBody) or not — at most the
// one request with its 10 bytes (net/http's HTTP/2 server usually resets
// the stream first, and the app sees nothing). (Session 22's review.)
func TestInboundExcessBodyNeverReachesTheApp(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	appL := testutil.Listen(t)
	var mu sync.Mutex
	var seen bytes.Buffer
	go func() {
		for {
			c, err := appL.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
					n, err := c.Read(buf)
					mu.Lock()
					seen.Write(buf[:n])
					s := seen.String()
					mu.Unlock()
					if strings.Contains(s, "\r\n\r\n0123456789") && n > 0 {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	in := &Inbound{HTTP1: NewAppH1((&net.Dialer{}).DialContext)}
	addr := serveInbound(t, ca, in, netip.MustParseAddrPort(appL.Addr().String()), false)

	cfg := tlsconfig.MTLSClientConfig(testutil.SVID(t, ca, clientID, 0), ca.Bundle(), tlsconfig.AuthorizeID(serverID))
	cfg.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", addr.String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "server.demo"}, {":path", "/x"}, {"content-length", "10"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	_ = fr.WriteData(1, false, []byte("0123456789"))
	_ = fr.WriteData(1, true, []byte("\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"))
	// Read frames until the stream ends one way or another.
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		if f.Header().StreamID == 1 && (f.Header().Flags.Has(http2.FlagDataEndStream) || f.Header().Type == http2.FrameRSTStream) {
			break
		}
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	s := seen.String()
	mu.Unlock()
	t.Logf("the app saw %q", s)
	if strings.Contains(s, "smuggled") {
		t.Fatalf("bytes past the declared Content-Length reached the app: %q", s)
	}
}

// A client sidecar of the L4 path speaks HTTP/1.1 over the mTLS connection
// (no ALPN h2): the Inbound serves it with weft's HTTP/1.1 server —
// keep-alive requests delivered to the app with the peer's authorization
// applied to each, a refused one answered 403 on the same connection
// without reaching the app — and Shutdown closes the idle connection.
func TestInboundServesHTTP1OverMTLS(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	var reached atomic.Int32
	appAddr := testutil.ServeTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			reached.Add(1)
			b, _ := io.ReadAll(r.Body)
			body := r.Method + " " + r.URL.Path + " " + string(b)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	peers := make(chan string, 4)
	in := &Inbound{HTTP1: NewAppH1((&net.Dialer{}).DialContext), Authorize: func(r *http.Request, p Peer) error {
		peers <- p.ID.String()
		if r.URL.Path == "/admin" {
			return &Denied{Policy: "deny-admin"}
		}
		return nil
	}}
	addr := serveInbound(t, ca, in, appAddr, false)
	cfg := tlsconfig.MTLSClientConfig(testutil.SVID(t, ca, clientID, 0), ca.Bundle(), tlsconfig.AuthorizeID(serverID))
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.Dial("tcp", addr.String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	send := func(raw string) (*http.Response, string) {
		t.Helper()
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := send("POST /x HTTP/1.1\r\nHost: server.demo\r\nContent-Length: 2\r\n\r\nhi"); resp.StatusCode != 200 || body != "POST /x hi" {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	if resp, body := send("GET /admin HTTP/1.1\r\nHost: server.demo\r\n\r\n"); resp.StatusCode != 403 || body != "weft: RBAC: access denied\n" {
		t.Fatalf("denied request: %d %q, want 403", resp.StatusCode, body)
	}
	if resp, body := send("GET /y HTTP/1.1\r\nHost: server.demo\r\n\r\n"); resp.StatusCode != 200 || body != "GET /y " {
		t.Fatalf("third request on the connection: %d %q", resp.StatusCode, body)
	}
	if n := reached.Load(); n != 2 {
		t.Fatalf("the app got %d requests, want the 2 allowed", n)
	}
	for range 3 {
		if id := <-peers; id != clientID.String() {
			t.Fatalf("authorized as %q, want the client's SPIFFE ID", id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.EventuallyTimeout)
	defer cancel()
	if err := in.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with an idle HTTP/1.1 connection: %v", err)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the idle connection is still open after Shutdown")
	}
}

// Any pod holds an SVID: a client that completes the mTLS handshake and
// then sends nothing is closed once its first request head (HTTP/1.1) or
// its client preface (h2) has not come within HeaderTimeout (as net/http's
// server, which counted the first head's time from the connection's
// start), not kept open for IdleTimeout — or for ever, without one.
func TestInboundSilentConnectionEndsAtHeaderTimeout(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	for _, tc := range []struct {
		proto string
		idle  time.Duration
	}{{"http/1.1", 0}, {"http/1.1", time.Hour}, {"h2", 0}, {"h2", time.Hour}} {
		t.Run(fmt.Sprint(tc.proto, " idle ", tc.idle), func(t *testing.T) {
			in := &Inbound{HTTP1: NewAppH1((&net.Dialer{}).DialContext),
				Limits: ServerLimits{HeaderTimeout: 200 * time.Millisecond, IdleTimeout: tc.idle}}
			addr := serveInbound(t, ca, in, netip.MustParseAddrPort("127.0.0.1:1"), false)
			cfg := tlsconfig.MTLSClientConfig(testutil.SVID(t, ca, clientID, 0), ca.Bundle(), tlsconfig.AuthorizeID(serverID))
			cfg.NextProtos = []string{tc.proto}
			c, err := tls.Dial("tcp", addr.String(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(testutil.EventuallyTimeout))
			if b, err := io.ReadAll(c); len(b) > 0 || err != nil {
				t.Fatalf("a connection that sent nothing: read %q, %v; want it closed", b, err)
			}
		})
	}
}
