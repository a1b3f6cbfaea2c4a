package l7

import (
	"bufio"
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

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/balance"
)

// tunnelEndpoint is an endpoint of upgrades on loopback: it reads each
// request's head and hands the connection, its reader and the head to
// serve.
func tunnelEndpoint(t *testing.T, serve func(c net.Conn, br *bufio.Reader, head string)) netip.AddrPort {
	t.Helper()
	return testutil.ServeTCP(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		head, err := readHead(br, 64<<10)
		if err != nil {
			return
		}
		serve(c, br, string(head))
	})
}

// answering is an endpoint that answers every upgrade with resp.
func answering(t *testing.T, resp string) netip.AddrPort {
	t.Helper()
	return tunnelEndpoint(t, func(c net.Conn, _ *bufio.Reader, _ string) { io.WriteString(c, resp) })
}

// dialTCP is a DialTunnel over plain TCP; a failed dial is a
// *ConnectError, as the sidecar's is.
func dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &ConnectError{Err: err}
	}
	return c, nil
}

// tunnelCluster reaches addrs for upgrades over TCP.
func tunnelCluster(addrs ...netip.AddrPort) *Cluster {
	b := balance.New(balance.Config{})
	b.Update(addrs)
	return &Cluster{Name: "c", Balancer: b, Scheme: "https", DialTunnel: dialTCP}
}

// pipeTunnel is a DialTunnel whose endpoint, at the far end of a
// net.Pipe, reads the request's head and writes answer. Both ends give up
// after 10 s: a test fails rather than hangs.
func pipeTunnel(t testing.TB, answer string) func(context.Context, string) (net.Conn, error) {
	return func(context.Context, string) (net.Conn, error) {
		near, far := net.Pipe()
		deadline := time.Now().Add(10 * time.Second)
		near.SetDeadline(deadline)
		far.SetDeadline(deadline)
		go func() {
			defer far.Close()
			if _, err := readHead(bufio.NewReader(far), maxResponseHead); err == nil {
				io.WriteString(far, answer)
			}
		}()
		return near, nil
	}
}

// deadTCP is an address where nothing listens.
func deadTCP(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return netip.MustParseAddrPort(l.Addr().String())
}

// triesSeen collects what Forwarder.Observe is told.
type triesSeen struct {
	mu    sync.Mutex
	tries []Try
}

func (s *triesSeen) observe(tr Try) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tries = append(s.tries, tr)
}

func (s *triesSeen) get() []Try {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Try(nil), s.tries...)
}

// serveApp serves h to the app's connections, as serveOn does, and
// returns the address the app connects to.
func serveApp(t *testing.T, h *Handler) string {
	t.Helper()
	s := NewConnServer(h, ServerLimits{HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}, nil)
	t.Cleanup(func() { s.Close() })
	return serveOn(t, s)
}

// appConn is the app's connection to the client sidecar: raw bytes out,
// responses read back.
type appConn struct {
	net.Conn
	br *bufio.Reader
}

func dialApp(t *testing.T, addr string) *appConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &appConn{Conn: c, br: bufio.NewReader(c)}
}

// roundTrip writes raw and reads the response to it, body and all unless
// it is a 101.
func (a *appConn) roundTrip(t *testing.T, raw string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(a, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(a.br, nil)
	if err != nil {
		t.Fatalf("the response to %.40q: %v", raw, err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, ""
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the body of %d: %q %v", resp.StatusCode, b, err)
	}
	return resp, string(b)
}

const upgradeGET = "GET /ws HTTP/1.1\r\nHost: svc.demo\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"

const switched = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"

// Upgrades are retried as the route's policy says: a refused one on
// another endpoint, at most Retries times; a connect failure even with a
// body (nothing was sent); a refused one with a body never (its body was
// sent once, and is gone).
func TestUpgradeRetries(t *testing.T) {
	t.Run("a refused upgrade is retried once", func(t *testing.T) {
		var hits atomic.Int32
		var addrs []netip.AddrPort
		for range 3 {
			addrs = append(addrs, tunnelEndpoint(t, func(c net.Conn, _ *bufio.Reader, head string) {
				hits.Add(1)
				if strings.Contains(head, "Content-Length") || strings.Contains(head, "Transfer-Encoding") {
					io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 6\r\n\r\nframed") // a bodiless request is sent without framing
					return
				}
				if hits.Load() > 2 { // a third try: answer it, so that a test run with too many tries fails at once
					io.WriteString(c, switched)
					return
				}
				me := c.LocalAddr().String()
				fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s", len(me), me)
			}))
		}
		var seen triesSeen
		route := &Route{Name: "r", Retry: RetryPolicy{Retries: 1, On: GatewayError}, Backends: []Backend{{Cluster: tunnelCluster(addrs...), Weight: 1}}}
		a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{Observe: seen.observe}}))
		resp, body := a.roundTrip(t, upgradeGET)
		tries := seen.get()
		if len(tries) != 2 || hits.Load() != 2 {
			t.Fatalf("%d tries (%d at the endpoints), want 2: %+v", len(tries), hits.Load(), tries)
		}
		if tries[0].Status != 503 || !tries[0].Retry || tries[0].Attempt != 0 || tries[1].Status != 503 || tries[1].Retry || tries[1].Attempt != 1 ||
			tries[0].Endpoint == tries[1].Endpoint {
			t.Fatalf("tries %+v, want two 503s from two endpoints, the first retried", tries)
		}
		if resp.StatusCode != 503 || body != tries[1].Endpoint.String() {
			t.Fatalf("the app got %d %q, want the second try's 503 from %s", resp.StatusCode, body, tries[1].Endpoint)
		}
	})
	t.Run("a connect failure is retried, even with a body, within the budget", func(t *testing.T) {
		ep := tunnelEndpoint(t, func(c net.Conn, br *bufio.Reader, head string) {
			b := make([]byte, 5)
			io.ReadFull(br, b)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nbody=%s", 5+len(b), b)
		})
		c := tunnelCluster(testAddrs(2)...)
		var dials atomic.Int32
		c.DialTunnel = func(ctx context.Context, _ string) (net.Conn, error) {
			if dials.Add(1)%2 == 1 {
				return nil, &ConnectError{Err: errors.New("connection refused")}
			}
			return dialTCP(ctx, ep.String())
		}
		var seen triesSeen
		route := &Route{Name: "r", Retry: RetryPolicy{Retries: 1, On: ConnectFailure}, Backends: []Backend{{Cluster: c, Weight: 1}}}
		a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{Observe: seen.observe}}))
		// One after the other, more than the default budget's three
		// retries at once: each retry gives its slot back.
		for i := range 5 {
			resp, body := a.roundTrip(t, "POST /ws HTTP/1.1\r\nHost: svc.demo\r\nConnection: Upgrade\r\nUpgrade: echo\r\nContent-Length: 5\r\n\r\nhello")
			if resp.StatusCode != 200 || body != "body=hello" || dials.Load() != int32(2*(i+1)) {
				t.Fatalf("upgrade %d: the app got %d %q after %d dials in all, want the second try's 200 with the body", i, resp.StatusCode, body, dials.Load())
			}
			if tries := seen.get()[2*i:]; len(tries) != 2 || tries[0].Status != 0 || !tries[0].Retry || tries[1].Status != 200 {
				t.Fatalf("upgrade %d: tries %+v, want a connect failure (status 0) retried, then the 200", i, tries)
			}
		}
	})
	t.Run("a refused upgrade with a body is not retried", func(t *testing.T) {
		var hits atomic.Int32
		refuse := func(c net.Conn, _ *bufio.Reader, _ string) {
			hits.Add(1)
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
		}
		route := &Route{Name: "r", Retry: RetryPolicy{Retries: 1, On: GatewayError},
			Backends: []Backend{{Cluster: tunnelCluster(tunnelEndpoint(t, refuse), tunnelEndpoint(t, refuse)), Weight: 1}}}
		a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{}}))
		resp, _ := a.roundTrip(t, "PUT /ws HTTP/1.1\r\nHost: svc.demo\r\nConnection: Upgrade\r\nUpgrade: echo\r\nContent-Length: 5\r\n\r\nhello")
		if resp.StatusCode != 503 || hits.Load() != 1 {
			t.Fatalf("the app got %d after %d tries, want the one try's 503", resp.StatusCode, hits.Load())
		}
	})
}

// What the app gets when an upgrade gets no response: the sidecar's
// answers of other requests (503 no backend, no endpoint or connect
// failure; 502 reset; 504 timeout; 502 for a cluster that cannot carry
// upgrades), and what Observe is told of the try.
func TestUpgradeFailures(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	silent := tunnelEndpoint(t, func(c net.Conn, br *bufio.Reader, _ string) { io.Copy(io.Discard, br) })
	for _, tc := range []struct {
		name    string
		cluster func(t *testing.T) *Cluster
		timeout time.Duration
		status  int
		body    string
		err     error // what Observe is told of the try (nil: not checked)
	}{
		{"a route without a backend", func(t *testing.T) *Cluster { return nil }, 0, 503, "weft: no backend\n", nil},
		{"a cluster without DialTunnel", func(t *testing.T) *Cluster {
			c := tunnelCluster(silent)
			c.DialTunnel = nil
			return c
		}, 0, 502, "weft: upgrade unsupported\n", nil},
		{"a cluster without endpoints", func(t *testing.T) *Cluster { return tunnelCluster() }, 0, 503, "weft: no endpoint\n", nil},
		{"a connect failure", func(t *testing.T) *Cluster { return tunnelCluster(deadTCP(t)) }, 0, 503, "weft: connect failure\n", nil},
		{"the endpoint closes without a byte", func(t *testing.T) *Cluster {
			return tunnelCluster(tunnelEndpoint(t, func(net.Conn, *bufio.Reader, string) {}))
		}, 0, 502, "weft: reset\n", io.EOF},
		{"the endpoint closes in the head", func(t *testing.T) *Cluster {
			return tunnelCluster(tunnelEndpoint(t, func(c net.Conn, _ *bufio.Reader, _ string) {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n")
			}))
		}, 0, 502, "weft: reset\n", io.ErrUnexpectedEOF},
		{"the endpoint resets the connection", func(t *testing.T) *Cluster {
			return tunnelCluster(tunnelEndpoint(t, func(c net.Conn, _ *bufio.Reader, _ string) {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}))
		}, 0, 502, "weft: reset\n", nil},
		{"the route's timeout", func(t *testing.T) *Cluster { return tunnelCluster(silent) }, 100 * time.Millisecond, 504, "weft: timeout\n", nil},
		{"a response head over 64 KiB", func(t *testing.T) *Cluster {
			return tunnelCluster(answering(t, paddedHead(maxResponseHead+1)))
		}, 0, 502, "weft: reset\n", errHeadTooLarge},
		{"a server sidecar that refuses the client's certificate", func(t *testing.T) *Cluster {
			nobody := spiffeid.RequireFromPath(td, "/ns/demo/sa/nobody")
			scfg := tlsconfig.MTLSServerConfig(testutil.SVID(t, ca, serverID, 0), ca.Bundle(), tlsconfig.AuthorizeID(nobody))
			scfg.MinVersion = tls.VersionTLS13
			ep := testutil.ServeTCP(t, func(c net.Conn) {
				tc := tls.Server(c, scfg)
				if tc.Handshake() == nil {
					io.Copy(io.Discard, tc)
				}
			})
			ccfg := tlsconfig.MTLSClientConfig(testutil.SVID(t, ca, clientID, 0), ca.Bundle(), tlsconfig.AuthorizeID(serverID))
			ccfg.MinVersion = tls.VersionTLS13
			c := tunnelCluster(ep)
			c.DialTunnel = func(ctx context.Context, addr string) (net.Conn, error) {
				tc, err := (&tls.Dialer{Config: ccfg}).DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, &ConnectError{Err: err}
				}
				return tc, nil
			}
			return c
		}, 0, 503, "weft: connect failure\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			route := &Route{Name: "r", Timeout: tc.timeout}
			if c := tc.cluster(t); c != nil {
				c.Transport = answers(func(*http.Request) (*http.Response, error) { return reply(200), nil })
				route.Backends = []Backend{{Cluster: c, Weight: 1}}
			} else {
				route.Backends = []Backend{{Cluster: tunnelCluster(silent), Weight: 0}}
			}
			var seen triesSeen
			a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{Observe: seen.observe}}))
			resp, body := a.roundTrip(t, upgradeGET)
			if resp.StatusCode != tc.status || body != tc.body {
				t.Fatalf("the app got %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if tc.err != nil {
				if tries := seen.get(); len(tries) != 1 || !errors.Is(tries[0].Err, tc.err) {
					t.Fatalf("tries %+v, want one that failed with %v", tries, tc.err)
				}
			}
			// The app's connection goes on.
			a.roundTrip(t, "GET /x HTTP/1.1\r\nHost: svc.demo\r\n\r\n")
		})
	}
}

const padPre, padPost = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Pad: ", "\r\n\r\n"

// paddedHead is a 101 response head of exactly n bytes.
func paddedHead(n int) string {
	return padPre + strings.Repeat("p", n-len(padPre)-len(padPost)) + padPost
}

// A response head of exactly 64 KiB is taken (one more byte is refused:
// TestUpgradeFailures), its long line whole.
func TestUpgradeResponseHeadOfTheLimit(t *testing.T) {
	head := paddedHead(maxResponseHead)
	ep := tunnelEndpoint(t, func(c net.Conn, br *bufio.Reader, _ string) {
		io.WriteString(c, head+"after the head")
		io.Copy(io.Discard, br)
	})
	route := &Route{Name: "r", Backends: []Backend{{Cluster: tunnelCluster(ep), Weight: 1}}}
	a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{}}))
	resp, _ := a.roundTrip(t, upgradeGET)
	if pad := resp.Header.Get("X-Pad"); resp.StatusCode != 101 || len(pad) != maxResponseHead-len(padPre)-len(padPost) {
		t.Fatalf("the app got %d with an X-Pad of %d bytes, want the 101 whole", resp.StatusCode, len(pad))
	}
	got := make([]byte, len("after the head"))
	if _, err := io.ReadFull(a.br, got); err != nil || string(got) != "after the head" {
		t.Fatalf("the bytes after the head: %q %v", got, err)
	}
}

// An upgrade the endpoint does not switch is delivered as a response like
// any other: status, end-to-end header fields (the hop-by-hop ones,
// including those Connection names, dropped), the body as it streams,
// trailers; an interim 1xx before it is dropped; a response without a
// body keeps a length of 0; a body cut short cuts the app's connection.
// A 200 (an endpoint that ignores Upgrade, as RFC 9110 lets it) is such
// an answer too. After a whole response the app's connection goes on.
func TestUpgradeAnsweredWithoutASwitch(t *testing.T) {
	chunk := func(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }
	big1, big2 := strings.Repeat("a", 60000), strings.Repeat("b", 60000)
	for _, tc := range []struct {
		name   string
		answer string
		status int
		body   string
		check  func(t *testing.T, resp *http.Response)
		cutOff bool
	}{
		{"a 200 that ignores the Upgrade", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, "hello", nil, false},
		{"a 403 streamed, with trailers", "HTTP/1.1 100 Continue\r\n\r\n" +
			"HTTP/1.1 403 Forbidden\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-End: kept\r\nTrailer: X-Reason\r\nTransfer-Encoding: chunked\r\n\r\n" +
			chunk(big1) + chunk(big2) + "0\r\nX-Reason: no\r\n\r\n", 403, big1 + big2, func(t *testing.T, resp *http.Response) {
			if resp.Header.Get("X-End") != "kept" || resp.Header.Get("X-Hop") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Trailer.Get("X-Reason") != "no" {
				t.Errorf("header %v trailer %v, want X-End kept, no X-Hop or Keep-Alive, trailer X-Reason: no", resp.Header, resp.Trailer)
			}
		}, false},
		{"an empty 403 until the endpoint closes", "HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n", 403, "", func(t *testing.T, resp *http.Response) {
			if resp.ContentLength != 0 || len(resp.TransferEncoding) != 0 {
				t.Errorf("Content-Length %d, Transfer-Encoding %v: want an empty body framed by a length of 0", resp.ContentLength, resp.TransferEncoding)
			}
		}, false},
		{"a body cut short", "HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nabc", 403, "abc", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tunnelCluster(answering(t, tc.answer))
			c.Transport = answers(func(*http.Request) (*http.Response, error) { return reply(200), nil })
			route := &Route{Name: "r", Backends: []Backend{{Cluster: c, Weight: 1}}}
			a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{}}))
			if _, err := io.WriteString(a, upgradeGET); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(a.br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || string(b) != tc.body || (err != nil) != tc.cutOff {
				t.Fatalf("the app got %d, %d bytes %.20q, %v; want %d, %d bytes %.20q, cut off %v", resp.StatusCode, len(b), b, err, tc.status, len(tc.body), tc.body, tc.cutOff)
			}
			if tc.check != nil {
				tc.check(t, resp)
			}
			if tc.cutOff {
				return
			}
			if resp, body := a.roundTrip(t, "GET /x HTTP/1.1\r\nHost: svc.demo\r\n\r\n"); resp.StatusCode != 200 || body != "OK" {
				t.Fatalf("the next request on the app's connection: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// A chunked request body goes to the endpoint chunked, its trailer with
// it, and ends where the app ended it.
func TestUpgradeChunkedRequestBody(t *testing.T) {
	ep := tunnelEndpoint(t, func(c net.Conn, br *bufio.Reader, head string) {
		r, err := http.ReadRequest(bufio.NewReader(io.MultiReader(strings.NewReader(head), br)))
		if err != nil {
			return
		}
		b, err := io.ReadAll(r.Body)
		msg := fmt.Sprintf("%v body=%s trailer=%s err=%v", r.TransferEncoding, b, r.Trailer.Get("X-T"), err)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
	})
	route := &Route{Name: "r", Backends: []Backend{{Cluster: tunnelCluster(ep), Weight: 1}}}
	a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{}}))
	resp, body := a.roundTrip(t, "POST /ws HTTP/1.1\r\nHost: svc.demo\r\nConnection: Upgrade\r\nUpgrade: echo\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"+
		"5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n")
	if want := "[chunked] body=hello world trailer=1 err=<nil>"; resp.StatusCode != 200 || body != want {
		t.Fatalf("the endpoint saw %q (%d), want %q", body, resp.StatusCode, want)
	}
}

// The tunnel passes a half-close on: the app's end of stream reaches the
// endpoint, which can still answer on its side.
func TestTunnelPassesHalfClose(t *testing.T) {
	ep := tunnelEndpoint(t, func(c net.Conn, br *bufio.Reader, _ string) {
		io.WriteString(c, switched)
		got, _ := io.ReadAll(br)
		fmt.Fprintf(c, "bye after %q", got)
	})
	route := &Route{Name: "r", Backends: []Backend{{Cluster: tunnelCluster(ep), Weight: 1}}}
	a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{}}))
	if resp, _ := a.roundTrip(t, upgradeGET); resp.StatusCode != 101 {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	io.WriteString(a, "ping")
	if err := a.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(a.br)
	if err != nil || string(rest) != `bye after "ping"` {
		t.Fatalf("after the app's half-close: %q %v, want the endpoint's answer, then the end", rest, err)
	}
}

// Bytes the app sends right behind its upgrade request, before the 101,
// reach the endpoint, ahead of the tunnel's.
func TestUpgradePipelinedBytes(t *testing.T) {
	ep := tunnelEndpoint(t, func(c net.Conn, br *bufio.Reader, _ string) {
		io.WriteString(c, switched)
		buf := make([]byte, 64)
		for {
			n, err := br.Read(buf)
			c.Write([]byte(strings.ToUpper(string(buf[:n]))))
			if err != nil {
				return
			}
		}
	})
	route := &Route{Name: "r", Backends: []Backend{{Cluster: tunnelCluster(ep), Weight: 1}}}
	a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{}}))
	if resp, _ := a.roundTrip(t, upgradeGET+"early,"); resp.StatusCode != 101 {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	io.WriteString(a, "late")
	got := make([]byte, len("EARLY,LATE"))
	if _, err := io.ReadFull(a.br, got); err != nil || string(got) != "EARLY,LATE" {
		t.Fatalf("through the tunnel: %q %v, want EARLY,LATE", got, err)
	}
}

// A protocol whose server speaks first after the 101, on a tunnel
// connection where even an empty write waits for the peer to read (a
// net.Pipe): the endpoint's first bytes reach the app, so the sidecar
// writes nothing to the endpoint that the app did not send.
func TestTunnelServerSpeaksFirst(t *testing.T) {
	c := tunnelCluster(testAddrs(1)...)
	c.DialTunnel = func(context.Context, string) (net.Conn, error) {
		near, far := net.Pipe()
		go func() {
			defer far.Close()
			br := bufio.NewReader(far)
			if _, err := readHead(br, maxResponseHead); err != nil {
				return
			}
			io.WriteString(far, switched)
			io.WriteString(far, "hello from the server")
			io.Copy(io.Discard, br)
		}()
		return near, nil
	}
	route := &Route{Name: "r", Backends: []Backend{{Cluster: c, Weight: 1}}}
	a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{}}))
	if resp, _ := a.roundTrip(t, upgradeGET); resp.StatusCode != 101 {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	got := make([]byte, len("hello from the server"))
	if _, err := io.ReadFull(a.br, got); err != nil || string(got) != "hello from the server" {
		t.Fatalf("the server's first bytes: %q %v", got, err)
	}
}
