package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// The edges of the HTTP egress relay that the mutation run (issue #24)
// found unpinned: bodies that arrive in several reads, lines and heads of
// exactly their bound, a CRLF before a half-close, interim responses, no
// write timeout. The app drives the sidecar as a hostile one would; each
// test checks what reaches the upstream or what the app gets.

// wireServer is an upstream that records every byte it receives. With
// parse, it also serves the requests as reqServer does ("ok <host>"),
// recording "<method> <host> <body>"; without, it only reads.
type wireServer struct {
	*app
	got   testutil.SyncBuffer
	ended chan struct{} // closed when a connection's reading side has ended
	once  sync.Once
	mu    sync.Mutex
	seen  []string
}

func startWireServer(t testing.TB, parse bool) *wireServer {
	t.Helper()
	s := &wireServer{ended: make(chan struct{})}
	s.app = startApp(t, func(c *net.TCPConn, a *app) {
		defer s.once.Do(func() { close(s.ended) })
		r := io.TeeReader(c, &s.got)
		if !parse {
			_, _ = io.Copy(io.Discard, r)
			return
		}
		br := bufio.NewReader(r)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.seen = append(s.seen, req.Method+" "+req.Host+" "+string(body))
			s.mu.Unlock()
			msg := "ok " + req.Host
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
		}
	})
	return s
}

func (s *wireServer) asReq() *reqServer { return &reqServer{app: s.app} }

func (s *wireServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// waitGot waits until the upstream has received exactly want.
func (s *wireServer) waitGot(t *testing.T, want string) {
	t.Helper()
	if !settle(testutil.EventuallyTimeout, func() bool { return s.got.String() == want }) {
		t.Fatalf("the upstream received %s, want %s", clip(s.got.String()), clip(want))
	}
}

// waitCut waits until the sidecar has ended the upstream connection and
// checks that the upstream received exactly want.
func (s *wireServer) waitCut(t *testing.T, want string) {
	t.Helper()
	select {
	case <-s.ended:
	case <-time.After(testutil.EventuallyTimeout):
		t.Fatalf("the sidecar did not end the connection; the upstream received %s", clip(s.got.String()))
	}
	if got := s.got.String(); got != want {
		t.Fatalf("the upstream received %s, want %s", clip(got), clip(want))
	}
}

func clip(s string) string {
	if len(s) > 200 {
		return fmt.Sprintf("%q... (%d bytes)", s[:200], len(s))
	}
	return fmt.Sprintf("%q", s)
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

// readStatuses reads responses until the connection ends.
func readStatuses(t *testing.T, c net.Conn) (statuses []int, bodies []string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testutil.EventuallyTimeout))
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return statuses, bodies
		}
		b, _ := io.ReadAll(resp.Body)
		statuses, bodies = append(statuses, resp.StatusCode), append(bodies, string(b))
	}
}

// TestHTTPEgressBodyAcrossReads: a request body that reaches the sidecar
// in several reads after its head (the server has the head before the
// app sends more), followed by a request for a denied host in the same
// write as the body's end. The server must get the body whole, as one
// request, and never the denied one; the app gets 200, then 403.
func TestHTTPEgressBodyAcrossReads(t *testing.T) {
	t.Parallel()
	t.Run("content-length", func(t *testing.T) {
		t.Parallel()
		srv := startWireServer(t, true)
		pd, events := reqPod(t, "Enforce", false, srv.asReq())
		c := pd.dialOutbound(srv.addr())
		head := "POST / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 300\r\n\r\n"
		p1, p2, p3 := strings.Repeat("a", 100), strings.Repeat("b", 100), strings.Repeat("c", 100)
		// What the sidecar read with the head goes with it; the rest is
		// copied as it comes, in two reads.
		write(t, c, head+p1)
		srv.waitGot(t, head+p1)
		write(t, c, p2)
		srv.waitGot(t, head+p1+p2)
		write(t, c, p3+evilReq)
		statuses, bodies := readStatuses(t, c)
		if !slices.Equal(statuses, []int{200, 403}) {
			t.Errorf("the app got %v %q, want [200 403]", statuses, bodies)
		}
		if seen := srv.requests(); !slices.Equal(seen, []string{"POST api.example.com " + p1 + p2 + p3}) {
			t.Fatalf("the server served %q, want the POST with its 300 bytes of body alone", seen)
		}
		es := takeEvents(t, events, 2)
		if es[0].BytesSent != int64(len(head)+300) || es[1].Decision != "deny" {
			t.Fatalf("audit: %+v", es)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		t.Parallel()
		srv := startWireServer(t, true)
		pd, _ := reqPod(t, "Enforce", false, srv.asReq())
		c := pd.dialOutbound(srv.addr())
		head := "POST / HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
		// Sizes with the digits at the ends of each hex class ('0', '9',
		// 'a', 'f', 'A', 'F'), one of 16 digits (the most a size may have).
		s1 := "000000000000000a\r\n0123456789"
		s2 := "\r\n" // the CRLF after a chunk's data, alone in its read
		s3 := "f\r\nabcdefghijklmno\r\nF\r\nABCDEFGHIJKLMNO\r\n9\r\n987654321\r\nA\r\nABCDEFGHIJ\r\n0\r\n\r\n"
		write(t, c, head+s1)
		srv.waitGot(t, head+s1)
		write(t, c, s2)
		srv.waitGot(t, head+s1+s2)
		write(t, c, s3+evilReq)
		statuses, bodies := readStatuses(t, c)
		if !slices.Equal(statuses, []int{200, 403}) {
			t.Errorf("the app got %v %q, want [200 403]", statuses, bodies)
		}
		if seen := srv.requests(); !slices.Equal(seen, []string{"POST api.example.com 0123456789abcdefghijklmnoABCDEFGHIJKLMNO987654321ABCDEFGHIJ"}) {
			t.Fatalf("the server served %q, want the POST with its chunked body alone", seen)
		}
	})
}

// TestHTTPEgressChunkedBounds: a chunked body's lines at their bounds.
// What is within a bound reaches the upstream as it is; what is past it
// (or can never end a line) ends the connection at once, with nothing of
// the body forwarded.
func TestHTTPEgressChunkedBounds(t *testing.T) {
	t.Parallel()
	head := "POST / HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
	trailer := "X-A: " + strings.Repeat("t", maxChunkLine-1-len("X-A: \r\n")) + "\r\n" // maxChunkLine-1 bytes
	for _, tc := range []struct {
		name string
		body string
	}{
		{"a chunk-size line of exactly maxChunkLine bytes", "5;" + strings.Repeat("x", maxChunkLine-4) + "\r\nhello\r\n0\r\n\r\n"},
		{"the largest chunk size", "4000000000000000\r\nabc"},
		{"trailers of exactly maxTrailers bytes", "0\r\n" + trailer + trailer + "\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.name == "trailers of exactly maxTrailers bytes" && len(trailer)*2+2 != maxTrailers {
				t.Fatalf("trailers of %d bytes", len(trailer)*2+2)
			}
			srv := startWireServer(t, false)
			pd, _ := reqPod(t, "Enforce", false, srv.asReq())
			c := pd.dialOutbound(srv.addr())
			write(t, c, head+tc.body)
			srv.waitGot(t, head+tc.body)
		})
	}
	over := "5;" + strings.Repeat("x", maxChunkLine-3) + "\r\n" // maxChunkLine+1 bytes
	for _, tc := range []struct {
		name        string
		first, rest string
	}{
		// The line's LF is in the buffer with it: refused by its length.
		{"a chunk-size line of maxChunkLine+1 bytes", over[:100], over[100:] + "hello\r\n0\r\n\r\n"},
		// maxChunkLine bytes and no LF: no line can end there.
		{"maxChunkLine bytes without a line end", "", strings.Repeat("1", maxChunkLine)},
		{"a body that starts with a bare LF", "", "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := startWireServer(t, false)
			pd, _ := reqPod(t, "Enforce", false, srv.asReq())
			c := pd.dialOutbound(srv.addr())
			write(t, c, head+tc.first)
			srv.waitGot(t, head)
			write(t, c, tc.rest)
			// The app keeps its connection open: the sidecar must not wait
			// for more.
			srv.waitCut(t, head)
		})
	}
}

// TestHTTPEgressTrailingCRLFThenHalfClose: a CRLF after the last request,
// then the app's half-close, is a clean end (RFC 9112 section 2.2 lets a
// server ignore empty lines before a request line): the sidecar passes the
// half-close on and the response still reaches the app. The server here
// answers only once its reading side ends.
func TestHTTPEgressTrailingCRLFThenHalfClose(t *testing.T) {
	t.Parallel()
	a := startApp(t, func(c *net.TCPConn, a *app) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, br)
		_, _ = io.WriteString(c, okResponse)
	})
	pd, _ := reqPod(t, "Enforce", false, &reqServer{app: a})
	c := pd.dialOutbound(a.addr())
	write(t, c, get("api.example.com")+"\r\n")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	statuses, bodies := readStatuses(t, c)
	if !slices.Equal(statuses, []int{200}) || bodies[0] != "ok" {
		t.Fatalf("the app got %v %q, want the server's 200", statuses, bodies)
	}
}

// TestHTTPEgressHeadOfExactlyTheBound: a first request head that reaches
// maxRequestHead bytes without ending gets its 431 at once; the sidecar
// does not wait for more.
func TestHTTPEgressHeadOfExactlyTheBound(t *testing.T) {
	t.Parallel()
	srv := startReqServer(t)
	pd, _ := reqPod(t, "Enforce", false, srv)
	c := pd.dialOutbound(srv.app.addr())
	start := "GET / HTTP/1.1\r\nHost: api.example.com\r\nX-Pad: "
	write(t, c, start+strings.Repeat("p", maxRequestHead-len(start)))
	statuses, _ := readStatuses(t, c)
	if !slices.Equal(statuses, []int{http.StatusRequestHeaderFieldsTooLarge}) {
		t.Fatalf("the app got %v, want [431]", statuses)
	}
	if n := srv.app.accepted.Load(); n != 0 {
		t.Fatalf("the server accepted %d connections", n)
	}
}

// TestHTTPEgressInterimResponses: a 100 Continue before each response is
// part of it: both reach the app, the connection stays usable, and the
// audit record counts both.
func TestHTTPEgressInterimResponses(t *testing.T) {
	t.Parallel()
	const answer = "HTTP/1.1 100 Continue\r\n\r\n" + okResponse
	r := startHostRecorder(t, func(int) string { return answer })
	pd, events := reqPod(t, "Enforce", false, r.asReq())
	c := pd.dialOutbound(r.addr())
	_ = c.SetDeadline(time.Now().Add(testutil.EventuallyTimeout))
	br := bufio.NewReader(c)
	for i := range 2 {
		write(t, c, get("api.example.com"))
		var got []int
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d: after %v: %v", i, got, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			got = append(got, resp.StatusCode)
			if resp.StatusCode >= 200 {
				break
			}
		}
		if !slices.Equal(got, []int{100, 200}) {
			t.Fatalf("request %d: the app got %v, want [100 200]", i, got)
		}
	}
	c.Close()
	for _, e := range takeEvents(t, events, 2) {
		if e.BytesReceived != int64(len(answer)) {
			t.Fatalf("audit %+v: BytesReceived %d, want %d", e, e.BytesReceived, len(answer))
		}
	}
}

// TestHTTPEgressWithoutWriteTimeout: a negative WriteTimeout turns the
// write bound off (as on a pipe): requests are forwarded, not cut by a
// deadline already past.
func TestHTTPEgressWithoutWriteTimeout(t *testing.T) {
	t.Parallel()
	srv := startReqServer(t)
	pd, _ := reqPod(t, "Enforce", false, srv, func(c *Config) { c.WriteTimeout = -1 })
	resps, bodies, _ := exchange(t, pd, srv.app.addr(), false, get("api.example.com"), get("api.example.com"))
	if !slices.Equal(statuses(resps), []int{200, 200}) {
		t.Fatalf("the app got %v %q, want [200 200]", statuses(resps), bodies)
	}
}

// TestHTTPEgressConnectTunnelCarriesBytes: after a 200 to an allowed
// CONNECT the rest of the connection is the tunnel's: bytes that are no
// request at all reach the server and come back (reqServer echoes), both
// ways, and the CONNECT's record has them.
func TestHTTPEgressConnectTunnelCarriesBytes(t *testing.T) {
	t.Parallel()
	srv := startReqServer(t)
	pd, events := reqPod(t, "Enforce", false, srv)
	// Without the virtual host that denies evil.example.com no rule by
	// name denies anything at this port: the tunnel is allowed.
	withoutNameDeny(pd)
	c := pd.dialOutbound(srv.app.addr())
	_ = c.SetDeadline(time.Now().Add(testutil.EventuallyTimeout))
	br := bufio.NewReader(c)
	const connect = "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n"
	write(t, c, connect)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	const tunnelled = "\x16\x03\x01 not a request\n"
	write(t, c, tunnelled)
	back := make([]byte, len(tunnelled))
	if _, err := io.ReadFull(br, back); err != nil || string(back) != tunnelled {
		t.Fatalf("the tunnel echoed %q, %v", back, err)
	}
	_ = c.CloseWrite()
	_, _ = io.Copy(io.Discard, br)
	es := takeEvents(t, events, 1)
	if es[0].Decision != "allow" || es[0].BytesSent != int64(len(connect)+len(tunnelled)) {
		t.Fatalf("CONNECT audit %+v", es[0])
	}
}

// TestHTTPEgressFirstHeadCutShort: a first request head that the app
// half-closes before it ends is refused as a request that went wrong
// mid-head, and its audit record says so; only a connection that ends
// with nothing of a request (empty lines at most) ends cleanly.
func TestHTTPEgressFirstHeadCutShort(t *testing.T) {
	t.Parallel()
	srv := startReqServer(t)
	pd, events := reqPod(t, "Enforce", false, srv)
	c := pd.dialOutbound(srv.app.addr())
	write(t, c, "GET / HTTP/1.1\r\nHost: api.example.com\r\n")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if statuses, bodies := readStatuses(t, c); len(statuses) != 0 {
		t.Fatalf("the app got %v %q", statuses, bodies)
	}
	e := nextEvent(t, events)
	if e.Decision != "deny" || e.Reason != "bad_request: proxy: reading request head: EOF" {
		t.Fatalf("audit %+v, want a denial for a head cut short", e)
	}
	if n := srv.app.accepted.Load(); n != 0 {
		t.Fatalf("the server accepted %d connections", n)
	}
}

// TestHTTPEgressRequestsAreProgress: forwarding a request counts as
// progress against IdleTimeout, as a pipe's writes do: an app that keeps
// sending requests (here heads alone, no body) to a server that answers
// them only later is not idle, however long the server takes.
func TestHTTPEgressRequestsAreProgress(t *testing.T) {
	t.Parallel()
	const idle, gap, requests = time.Second, 150 * time.Millisecond, 12 // the requests span 1.8 IdleTimeouts
	a := startApp(t, func(c *net.TCPConn, a *app) {
		br := bufio.NewReader(c)
		for range requests {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
		}
		_, _ = io.WriteString(c, strings.Repeat(okResponse, requests))
		_, _ = io.Copy(io.Discard, br)
	})
	pd, _ := reqPod(t, "Enforce", false, &reqServer{app: a}, func(c *Config) { c.IdleTimeout = idle })
	c := pd.dialOutbound(a.addr())
	for i := range requests {
		if i > 0 {
			time.Sleep(gap) // the pace of the app's requests
		}
		write(t, c, get("api.example.com"))
	}
	_ = c.SetReadDeadline(time.Now().Add(testutil.EventuallyTimeout))
	br := bufio.NewReader(c)
	for i := range requests {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v (timeouts %v)", i, err, pd.counter("timeouts", outbound, timeoutIdle))
		}
		_, _ = io.Copy(io.Discard, resp.Body)
	}
}

// TestHTTPEgressConnectRefusedByServer: a CONNECT the server answers with
// a status outside 2xx (here 300) opens no tunnel: what the app sends next
// is a request again, decided on its own (an h2c upgrade: refused), and
// never reaches the server.
func TestHTTPEgressConnectRefusedByServer(t *testing.T) {
	t.Parallel()
	r := startHostRecorder(t, func(i int) string {
		if i == 0 {
			return "HTTP/1.1 300 Multiple Choices\r\nContent-Length: 0\r\n\r\n"
		}
		return okResponse
	})
	pd, _ := reqPod(t, "Enforce", false, r.asReq())
	withoutNameDeny(pd)
	c := pd.dialOutbound(r.addr())
	_ = c.SetDeadline(time.Now().Add(testutil.EventuallyTimeout))
	br := bufio.NewReader(c)
	write(t, c, "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 300 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	write(t, c, "GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("the h2c upgrade after the refused CONNECT: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, br)
	if seen := r.seen(); !slices.Equal(seen, []string{"CONNECT api.example.com:443"}) {
		t.Fatalf("the server was asked %q, want the CONNECT alone", seen)
	}
}

// TestHTTPEgressRequestWriteTimeout: the write of a request head is
// bounded by WriteTimeout like any other write, and a write that runs out
// of it is counted. A WriteTimeout of 1ns has passed before the write
// starts (the deadline is set from an earlier reading of the clock), so
// the head's write times out at once: the connection ends with nothing
// forwarded, and the timeout is counted.
func TestHTTPEgressRequestWriteTimeout(t *testing.T) {
	t.Parallel()
	srv := startReqServer(t)
	pd, _ := reqPod(t, "Enforce", false, srv, func(c *Config) { c.WriteTimeout = time.Nanosecond })
	c := pd.dialOutbound(srv.app.addr())
	write(t, c, get("api.example.com"))
	if statuses, bodies := readStatuses(t, c); len(statuses) != 0 {
		t.Fatalf("the app got %v %q", statuses, bodies)
	}
	pd.waitCounter(1, "timeouts", outbound, timeoutWrite)
	if seen := srv.requests(); len(seen) != 0 {
		t.Fatalf("the server was asked %q", seen)
	}
}
