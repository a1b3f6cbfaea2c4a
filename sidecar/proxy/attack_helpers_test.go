package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// Helpers of the attack_*_test.go files: the app is hostile and tries to
// get a request for evil.example.com (denied by reqPod's policy) to the
// upstream server, or to make the audit trail lie, or to wedge the
// sidecar. Two kinds of upstream: reqServer (httpegress_test.go: a loop of
// http.ReadRequest that carries on after a body error) and hostServer, a
// real net/http.Server that routes by Host.

const evilReq = "GET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n"

// hostServer is a net/http.Server on loopback that records the Host (and
// protocol) of every request its handler serves and answers "ok <host>".
type hostServer struct {
	l    net.Listener
	srv  *http.Server
	mu   sync.Mutex
	seen []string // "<method> <host> <proto>", as reqServer's "<method> <host> <body>"
}

// startHostServer serves handler-wrapping wrap(h) (nil: h as is).
func startHostServer(t testing.TB, wrap func(http.Handler) http.Handler) *hostServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &hostServer{l: l}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.seen = append(s.seen, r.Method+" "+r.Host+" "+r.Proto)
		s.mu.Unlock()
		_, _ = io.WriteString(w, "ok "+r.Host)
	})
	if wrap != nil {
		h = wrap(h)
	}
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(l) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

func (s *hostServer) addr() netip.AddrPort { return s.l.Addr().(*net.TCPAddr).AddrPort() }

// asReq lets reqPod configure its port.
func (s *hostServer) asReq() *reqServer { return &reqServer{app: &app{l: s.l}} }

func (s *hostServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// hostRecorder is a colluding upstream: it reads HTTP/1 requests one after
// another on each connection, records "<method> <host>" of each, and
// answers the i-th of the connection (from 0) with answer(i), raw.
type hostRecorder struct {
	*app
	mu    sync.Mutex
	hosts []string
}

func startHostRecorder(t testing.TB, answer func(i int) string) *hostRecorder {
	t.Helper()
	r := &hostRecorder{}
	r.app = startApp(t, func(c *net.TCPConn, a *app) {
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.hosts = append(r.hosts, req.Method+" "+req.Host)
			r.mu.Unlock()
			_, _ = io.WriteString(c, answer(i))
		}
	})
	return r
}

// asReq lets reqPod configure its port.
func (r *hostRecorder) asReq() *reqServer { return &reqServer{app: r.app} }

// seen is what the recorder was asked so far, as sawHost reads it.
func (r *hostRecorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.hosts)
}

// okResponse is a complete response, as a colluding upstream answers.
const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// appReader is the app's reading side of a connection through the
// sidecar: it reads everything the sidecar sends until the connection ends.
type appReader struct {
	got  testutil.SyncBuffer
	done chan struct{} // closed when the connection has ended (or its read deadline passed)
}

func readFromSidecar(c net.Conn) *appReader {
	r := &appReader{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_, _ = io.Copy(&r.got, c)
	}()
	return r
}

// waitFor waits until the app has read n bytes or its connection has
// ended. (The sidecar forwards the server's bytes as it reads them, just
// before its parser looks at them.)
func (r *appReader) waitFor(t testing.TB, n int) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("%d bytes at the app, or the end of its connection", n), func() bool {
		select {
		case <-r.done:
			return true
		default:
			return len(r.got.Bytes()) >= n
		}
	})
}

// sawHost reports whether a request the server served (seen, as
// reqServer and hostServer record them: "<method> <host> ...") had a Host
// whose name is host: compared as a virtual-hosting server that takes the
// name before the first colon would (nginx's ngx_http_validate_host), so
// "evil.example.com:80:80" counts as evil.example.com.
func sawHost(seen []string, host string) bool {
	return slices.ContainsFunc(seen, func(s string) bool {
		f := strings.Fields(s)
		return len(f) >= 2 && strings.EqualFold(serverName(f[1]), host)
	})
}

// serverName is the name a virtual-hosting server routes a Host by when it
// takes what comes before the first colon, less a trailing dot.
func serverName(h string) string {
	name, _, _ := strings.Cut(h, ":")
	return strings.TrimSuffix(name, ".")
}

// settle waits until f reports true or d passes (the server may still be
// reading what the sidecar forwarded).
func settle(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// sendRaw writes raw to a new outbound connection to dst and reads the
// responses until the connection ends or idle passes with nothing read.
func sendRaw(t *testing.T, pd *pod, dst netip.AddrPort, raw string, idle time.Duration) (statuses []int, bodies []string) {
	t.Helper()
	c := pd.dialOutbound(dst)
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if !errors.Is(err, io.EOF) && !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Logf("reading responses: %v", err)
			}
			return statuses, bodies
		}
		b, _ := io.ReadAll(resp.Body)
		statuses, bodies = append(statuses, resp.StatusCode), append(bodies, string(b))
	}
}

// sendEnforced sends req, after an allowed request when later, on a new
// connection through a reqPod under Enforce to a fresh reqServer, and
// returns the server and the statuses the app got.
func sendEnforced(t *testing.T, req string, later bool) (*reqServer, []int) {
	t.Helper()
	srv := startReqServer(t)
	pd, _ := reqPod(t, "Enforce", false, srv)
	if later {
		req = get("api.example.com") + req
	}
	statuses, _ := sendRaw(t, pd, srv.app.addr(), req, 300*time.Millisecond)
	return srv, statuses
}
