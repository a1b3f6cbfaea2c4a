package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Requests that switch protocols on an in-mesh HTTP port ([l7] #19): a
// WebSocket goes on an mTLS connection of its own (no ALPN h2), which the
// server sidecar takes on the port's L4 chain, and becomes a byte tunnel
// after the 101. Through the pooled HTTP/2 connections it could not work:
// these tests fail if the upgrade path is removed.

// wsEcho is a WebSocket app: a greeting naming the request, then every
// message echoed.
func wsEcho(name string) http.HandlerFunc {
	return websocket.Server{Handler: func(ws *websocket.Conn) {
		r := ws.Request()
		src, _, _ := net.SplitHostPort(r.RemoteAddr)
		if err := websocket.Message.Send(ws, fmt.Sprintf("%s %s %s from=%s x-app=%s", name, r.Method, r.URL.RequestURI(), src,
			r.Header.Get("X-App"))); err != nil {
			return
		}
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(ws, "echo: "+msg); err != nil {
				return
			}
		}
	}}.ServeHTTP
}

// appConn is a connection of A's app to the service, through A, open
// until the test ends, its deadline 20s away.
func appConn(t *testing.T, a *pod) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", a.outboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// dialWS opens a WebSocket from A's app to the service, through A.
func dialWS(t *testing.T, a *pod, path string) *websocket.Conn {
	t.Helper()
	cfg, err := websocket.NewConfig("ws://web.demo"+path, "http://web.demo/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Header = http.Header{"X-App": {"frontend"}}
	ws, err := websocket.NewClient(cfg, appConn(t, a))
	if err != nil {
		t.Fatalf("WebSocket handshake through the pair: %v", err)
	}
	return ws
}

func wsRoundTrip(t *testing.T, ws *websocket.Conn, msg string) {
	t.Helper()
	if err := websocket.Message.Send(ws, msg); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
	var got string
	if err := websocket.Message.Receive(ws, &got); err != nil {
		t.Fatalf("receive the echo of %q: %v", msg, err)
	}
	if got != "echo: "+msg {
		t.Fatalf("echo of %q: %q", msg, got)
	}
}

// A WebSocket through client sidecar, mTLS, server sidecar, to the app:
// the handshake is the app's, messages go both ways, the tunnel is the
// server's L4 chain (no ALPN, the client's identity), counted as one
// request of class 1xx that stays in flight, for the metrics and the
// balancer, until it closes; then every connection ends.
func TestL7WebSocketThroughThePair(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	plain := *b.handle.Load()
	ws := wsEcho("b")
	b.set(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			ws(w, r)
			return
		}
		plain(w, r)
	})
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}}))

	conn := dialWS(t, a, "/chat?room=1")
	var hello string
	if err := websocket.Message.Receive(conn, &hello); err != nil {
		t.Fatalf("the app's greeting: %v", err)
	}
	if want := "b GET /chat?room=1 from=127.0.0.6 x-app=frontend"; hello != want {
		t.Fatalf("greeting %q, want %q", hello, want)
	}
	for i := range 5 {
		wsRoundTrip(t, conn, fmt.Sprintf("message %d %s", i, strings.Repeat("x", i*10000)))
	}

	bc := b.pod.connections()
	if len(bc) != 1 || bc[0].Chain != fmt.Sprintf("inbound|%d|tls", b.port) || bc[0].TLSInfo == nil || bc[0].ALPN != "" ||
		bc[0].PeerID != a.id.String() {
		t.Fatalf("B's connections: %+v, want one on the L4 TLS chain from A without ALPN", bc)
	}
	if got := a.value("weft_sidecar_http_requests_total", outbound, "default", l7Route, webID.String(), "1xx", ""); got != 1 {
		t.Errorf("A counted %v switched requests, want 1", got)
	}
	if got := a.value("weft_sidecar_http_requests_in_flight", outbound, "default"); got != 1 {
		t.Errorf("A has %v requests in flight during the tunnel, want 1", got)
	}
	pending := func() int {
		a.p.l7.mu.Lock()
		defer a.p.l7.mu.Unlock()
		return a.p.l7.out[l7Route].c.Balancer.State()[0].Pending
	}
	if n := pending(); n != 1 {
		t.Errorf("the balancer has %d requests in flight to b during the tunnel, want 1", n)
	}
	// Ordinary requests go on the h2 chain beside it.
	hc := httpClient(t, a)
	if code, body := doReq(t, hc, "GET", "/plain"); code != 200 || !strings.HasPrefix(body, "b HTTP/1.1 GET") {
		t.Fatalf("a request beside the tunnel: %d %q", code, body)
	}
	hc.Transport.(*http.Transport).CloseIdleConnections()

	conn.Close()
	testutil.Eventually(t, "the tunnel's connections to end", func() bool {
		return a.counter("connections", outbound) == 0 && l4Conns(b) == 0
	})
	if got := a.value("weft_sidecar_http_requests_in_flight", outbound, "default"); got != 0 {
		t.Errorf("A has %v requests in flight after the tunnel closed", got)
	}
	if n := pending(); n != 0 {
		t.Errorf("the balancer has %d requests in flight after the tunnel closed", n)
	}
	if got := a.value("weft_sidecar_http_requests_total", outbound, "default", l7Route, webID.String(), "1xx", ""); got != 1 {
		t.Errorf("A counted %v switched requests after the close, want 1", got)
	}
}

// echoUpgrade answers an "Upgrade: echo" request with a protocol of our
// own: it hijacks the connection, writes the 101 (Connection, Upgrade,
// then extra's fields), and sends back, upper-cased, what comes until the
// client half-closes; then it calls after with the connection, and closes
// it once after returns. If the connection cannot be hijacked it does
// nothing.
func echoUpgrade(w http.ResponseWriter, extra http.Header, after func(c net.Conn)) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	var head strings.Builder
	head.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n")
	extra.Write(&head)
	head.WriteString("\r\n")
	io.WriteString(c, head.String())
	buf := make([]byte, 1024)
	for {
		n, err := brw.Read(buf)
		c.Write([]byte(strings.ToUpper(string(buf[:n]))))
		if err != nil {
			break
		}
	}
	after(c)
}

// rawExchange writes req on c and reads one response.
func rawExchange(t *testing.T, c net.Conn, br *bufio.Reader, req string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response to %q: %v", req, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("body of the response to %q: %v", req, err)
	}
	return resp, string(body)
}

// An upgrade the app refuses reaches the app as the app answered it (400,
// its header and body), and the connection goes on in HTTP/1.1: the next
// request on it is routed as usual. A half-close by the app ends a
// switched tunnel's upstream direction while the other carries on.
func TestL7UpgradeRefusedAndHalfClose(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	b.set(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Upgrade") == "websocket":
			w.Header().Set("X-Refused-By", "app")
			w.Header().Set("Sec-WebSocket-Version", "13")
			http.Error(w, "no websocket here: "+r.Header.Get("Connection")+" "+r.Header.Get("X-Case"), http.StatusBadRequest)
		case r.Header.Get("Upgrade") == "echo":
			// The echo protocol, then a last word.
			echoUpgrade(w, http.Header{"X-Switched": {"yes"}}, func(c net.Conn) {
				io.WriteString(c, "bye")
				c.(*net.TCPConn).CloseWrite()
			})
		default:
			fmt.Fprintf(w, "plain %s", r.URL.Path)
		}
	})
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}}))

	c := appConn(t, a)
	br := bufio.NewReader(c)
	resp, body := rawExchange(t, c, br, "GET /ws HTTP/1.1\r\nHost: web.demo\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Case: 19\r\n\r\n")
	if resp.StatusCode != 400 || resp.Header.Get("X-Refused-By") != "app" || resp.Header.Get("Sec-WebSocket-Version") != "13" ||
		body != "no websocket here: keep-alive, Upgrade 19\n" {
		t.Fatalf("refused upgrade: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if resp.Close {
		t.Fatal("the refusal closes the app's connection")
	}
	resp, body = rawExchange(t, c, br, "GET /after HTTP/1.1\r\nHost: web.demo\r\n\r\n")
	if resp.StatusCode != 200 || body != "plain /after" {
		t.Fatalf("the request after the refusal: %d %q", resp.StatusCode, body)
	}
	if got := a.value("weft_sidecar_http_requests_total", outbound, "default", l7Route, webID.String(), "4xx", ""); got != 1 {
		t.Errorf("A counted %v 4xx, want the refusal", got)
	}

	// Upgrade: echo on the same connection, with bytes sent right after
	// the request head: the 101 as the app wrote it, then the tunnel.
	io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: web.demo\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly ")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("X-Switched") != "yes" {
		t.Fatalf("echo upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "words")
	want := "EARLY WORDS"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
		t.Fatalf("through the tunnel: %q %v, want %q", got, err, want)
	}
	// Half-close: the app's EOF reaches the server app, whose last word
	// still comes back.
	c.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("after the half-close: %q %v, want \"bye\" then EOF", rest, err)
	}
	testutil.Eventually(t, "the tunnel's connections to end", func() bool {
		return a.counter("connections", outbound) == 0 && l4Conns(b) == 0
	})
}

// l4Conns counts b's connections on its port's L4 chain (tunnels; the
// pooled HTTP/2 connections from A are on the h2 chain).
func l4Conns(b *l7Backend) int {
	n := 0
	for _, c := range b.pod.connections() {
		if c.Chain == fmt.Sprintf("inbound|%d|tls", b.port) {
			n++
		}
	}
	return n
}

// An upgrade to a port whose server denies the client by RBAC fails
// cleanly: the app gets the sidecar's 503 (the server refused the mTLS
// connection: nothing reached its app), the server's app sees
// nothing, the server counts the denial, and the app's connection stays
// usable. So does an upgrade to an endpoint that refuses connections.
func TestL7UpgradeFailures(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	b.set(wsEcho("b"))
	cfg := l7ServerConfig(b.port, model.HTTP1)
	deny := []model.RBACFilter{{Action: model.RBACDeny, Policies: []model.RBACPolicy{
		{Name: "demo/deny-frontend", Principals: []model.Principal{{Exact: workloadID("shop", "frontend").String()}}}}}}
	for _, fc := range cfg.Inbound.Chains {
		if fc.Match.DestPort == b.port {
			fc.RBAC = deny
		}
	}
	b.pod.cfg.Store(cfg)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := closed.Addr().(*net.TCPAddr).AddrPort()
	closed.Close()
	routes := []*model.Route{
		{Name: "denied", Match: model.RouteMatch{Prefix: "/denied"}, Clusters: []model.WeightedCluster{{Name: l7Route, Weight: 1}}},
		{Name: "nowhere", Match: model.RouteMatch{Prefix: "/nowhere"}, Clusters: []model.WeightedCluster{{Name: "outbound|80|gone.demo", Weight: 1}}},
	}
	a := startL7Client(t, ca, l7ClientConfig(routes, map[string][]model.Endpoint{
		l7Route: {b.endpoint()}, "outbound|80|gone.demo": {{Addr: netip.AddrPortFrom(refusing.Addr(), refusing.Port())}}}))

	c := appConn(t, a)
	br := bufio.NewReader(c)
	up := "Host: web.demo\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	resp, body := rawExchange(t, c, br, "GET /denied HTTP/1.1\r\n"+up)
	if resp.StatusCode != 503 || body != "weft: connect failure\n" {
		t.Fatalf("upgrade denied by the server's RBAC: %d %q, want 503 connect failure", resp.StatusCode, body)
	}
	b.pod.waitCounter(1, "authz_denials", inbound, "demo/deny-frontend")
	if n := b.hits.Load(); n != 0 {
		t.Fatalf("the denied upgrade reached the app (%d requests)", n)
	}
	resp, body = rawExchange(t, c, br, "GET /nowhere HTTP/1.1\r\n"+up)
	if resp.StatusCode != 503 || body != "weft: connect failure\n" {
		t.Fatalf("upgrade to an endpoint refusing connections: %d %q, want 503 connect failure", resp.StatusCode, body)
	}
	if got := a.value("weft_sidecar_http_requests_total", outbound, "nowhere", "outbound|80|gone.demo", "", "5xx", ""); got != 1 {
		t.Errorf("A counted %v failed upgrades to gone.demo, want 1", got)
	}
}

// An endpoint answering 503 five times in a row is ejected: the ejection
// is counted (weft_sidecar_http_ejections_total{cluster}) and the
// requests that follow avoid it.
func TestL7EjectionCounted(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	good, bad := startHTTPBackend(t, ca, "good"), startHTTPBackend(t, ca, "bad")
	bad.set(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	cfg := l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {good.endpoint(), bad.endpoint()}})
	// A's clock stands still: every answer takes no time, so the balancer
	// picks either endpoint by chance, and the ejection (30 s) lasts.
	a := startL7Client(t, ca, cfg, func(c *Config) { c.Clock = testutil.FakeClock(t) })
	c := httpClient(t, a)
	ejections := func() float64 { return a.value("weft_sidecar_http_ejections_total", l7Route) }
	for i := 0; ejections() == 0; i++ {
		if i == 500 {
			t.Fatalf("no ejection after %d requests, %d of them to the failing endpoint", i, bad.hits.Load())
		}
		doReq(t, c, "GET", "/")
	}
	if n := bad.hits.Load(); n != 5 {
		t.Errorf("ejected after %d failures, want 5 (consecutive_5xx)", n)
	}
	for range 30 {
		if code, body := doReq(t, c, "GET", "/"); code != 200 || !strings.HasPrefix(body, "good ") {
			t.Fatalf("after the ejection: %d %q, want good's 200", code, body)
		}
	}
	if n := bad.hits.Load(); n != 5 {
		t.Errorf("the ejected endpoint got %d more requests", n-5)
	}
	if got := ejections(); got != 1 {
		t.Errorf("ejections counted %v, want 1", got)
	}
}
