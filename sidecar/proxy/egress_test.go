package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// egressPod is pod A alone with an "external" server on loopback.
func egressPod(t *testing.T, registryOnly bool, handle func(*net.TCPConn, *app)) (*pod, *app) {
	t.Helper()
	ca := testutil.NewCA(t, td, nil)
	ext := startApp(t, handle)
	a := startPod(t, ca, workloadID("shop", "frontend"))
	a.cfg.Store(meshConfig(nil, nil, nil, registryOnly))
	return a, ext
}

// expectClosed expects c to be closed by the proxy without a byte.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 64))
	if err == nil || n != 0 {
		t.Fatalf("read %d bytes, err %v; want the connection closed", n, err)
	}
}

func TestEgressTLSBySNI(t *testing.T) {
	a, ext := egressPod(t, true, nil)
	hello := func(sni string) *net.TCPConn {
		c := a.dialOutbound(ext.addr())
		go func() {
			tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
			_ = tc.Handshake() // the echo server answers with the hello itself: it fails
		}()
		return c
	}
	// Allowed SNI: the ClientHello reaches the original destination.
	hello("allowed.example.com")
	testutil.Eventually(t, "the allowed ClientHello's connection at its destination", func() bool { return ext.accepted.Load() > 0 })
	if ext.accepted.Load() != 1 {
		t.Fatalf("allowed SNI: destination accepted %d connections", ext.accepted.Load())
	}
	// Denied SNI, and an unknown one under REGISTRY_ONLY: blackholed, the
	// destination never sees a connection.
	hello("denied.example.com")
	hello("unknown.example.com")
	a.waitCounter(2, "connection_failures", outbound, "blackhole")
	if n := ext.accepted.Load(); n != 1 {
		t.Fatalf("destination accepted %d connections, want 1", n)
	}
}

func TestBlackHoleSendsNothing(t *testing.T) {
	a, ext := egressPod(t, true, nil)
	c := a.dialOutbound(ext.addr())
	c.Write([]byte("must not leave the pod"))
	expectClosed(t, c)
	a.waitCounter(1, "connection_failures", outbound, "blackhole")
	if n := ext.accepted.Load(); n != 0 {
		t.Fatalf("destination accepted %d connections", n)
	}
}

func TestPassthroughDefault(t *testing.T) {
	a, ext := egressPod(t, false, nil)
	roundTrip(t, a.dialOutbound(ext.addr()), []byte("ALLOW_ANY passes through"))
	// A server-first protocol (nothing sent first) is not held up for long.
	srv := startApp(t, func(c *net.TCPConn, _ *app) { io.WriteString(c, "220 hello\r\n"); io.Copy(io.Discard, c) })
	c := a.dialOutbound(srv.addr())
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "220 hello\r\n" {
		t.Fatalf("server-first greeting %q, %v", line, err)
	}
}

func TestEgressHTTPByHost(t *testing.T) {
	srv := func(c *net.TCPConn, a *app) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		a.received.Add(1)
		body := "hello " + req.Host
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
	}
	a, ext := egressPod(t, true, srv)
	// The HTTP chain listens for ext's port, so that the passthrough of an
	// allowed host reaches ext.
	cfg := meshConfig(nil, nil, nil, true)
	for _, fc := range cfg.Outbound.Chains {
		if fc.Name == "egress-http" {
			fc.Match.DestPort = ext.port()
		}
	}
	cfg.Routes["egress|"+strconv.Itoa(int(ext.port()))] = cfg.Routes["egress|8080"]
	a.cfg.Store(cfg)
	get := func(host string) (*http.Response, string) {
		t.Helper()
		c := a.dialOutbound(ext.addr())
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: "+host+"\r\nUser-Agent: t\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	// Denied host: 403 with the route's body, nothing reaches the server.
	resp, body := get("evil.example.com")
	if resp.StatusCode != 403 || !strings.Contains(body, "denied by demo/deny-evil") {
		t.Fatalf("denied host: %d %q", resp.StatusCode, body)
	}
	resp, body = get("other.example.com")
	if resp.StatusCode != 403 || body != "weft: REGISTRY_ONLY\n" {
		t.Fatalf("unknown host: %d %q", resp.StatusCode, body)
	}
	if n := ext.accepted.Load(); n != 0 {
		t.Fatalf("server accepted %d connections", n)
	}
	a.waitCounter(2, "connection_failures", outbound, "http_denied")
	// Allowed host: the request goes through unchanged.
	resp, body = get("api.example.com")
	if resp.StatusCode != 200 || body != "hello api.example.com" {
		t.Fatalf("allowed host: %d %q", resp.StatusCode, body)
	}
	// With strip_any_host_port, "host:port", upper case and a trailing dot
	// match the same virtual host (the audit decision normalises alike).
	for _, fc := range cfg.Outbound.Chains {
		if fc.Name == "egress-http" {
			fc.Target.StripAnyHostPort = true
		}
	}
	for _, h := range []string{"api.example.com:" + strconv.Itoa(int(ext.port())), "API.Example.com.", "evil.example.com:80"} {
		resp, _ = get(h)
		want := 200
		if strings.HasPrefix(h, "evil") {
			want = 403
		}
		if resp.StatusCode != want {
			t.Fatalf("Host %q: %d, want %d", h, resp.StatusCode, want)
		}
	}
}
