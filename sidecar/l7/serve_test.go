package l7

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// app starts a ConnServer for route behind a loopback listener, as the
// sidecar's outbound listener hands it the app's captured connections,
// and returns the address the app connects to.
func app(t *testing.T, route func(*http.Request) *Route) string {
	t.Helper()
	s := NewConnServer(&Handler{Route: route, Forwarder: &Forwarder{}}, ServerLimits{HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}, nil)
	t.Cleanup(func() { s.Close() })
	return serveOn(t, s)
}

// serveOn puts s behind a loopback listener and returns its address.
func serveOn(t *testing.T, s *ConnServer) string {
	t.Helper()
	return testutil.ServeTCP(t, func(c net.Conn) { s.ServeConn(c) }).String()
}

func static(r *Route) func(*http.Request) *Route { return func(*http.Request) *Route { return r } }

// readGRPC reads resp's body to its end and closes it (a failed read
// fails the test), and returns the body with the gRPC status: in the
// headers of a trailers-only response, else in the trailers that came
// after the body.
func readGRPC(t testing.TB, resp *http.Response) (body, grpcStatus string) {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	gs := resp.Header.Get("Grpc-Status")
	if gs == "" {
		gs = resp.Trailer.Get("Grpc-Status")
	}
	return string(b), gs
}

// oneConn is an HTTP client that keeps one connection: HTTP/1.1
// keep-alive, or h2c with prior knowledge.
func oneConn(t *testing.T, h2c bool) *http.Client {
	t.Helper()
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, ExpectContinueTimeout: 5 * time.Second,
		Protocols: cleartext(h2c)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// One client connection — HTTP/1.1 keep-alive or one HTTP/2 connection,
// as a gRPC channel keeps — reaches every endpoint: requests are
// balanced, not connections.
func TestOneAppConnectionReachesEveryEndpoint(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2c=%v", h2c), func(t *testing.T) {
			var eps []*endpoint
			for i := range 3 {
				eps = append(eps, newEndpoint(t, ok(fmt.Sprint("ep", i))))
			}
			addr := app(t, static(&Route{Name: "r", Backends: []Backend{{Cluster: blind(cluster(t, "c", eps)), Weight: 1}}}))
			client := oneConn(t, h2c)
			conns := map[string]bool{}
			for range 300 {
				req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
				req = req.WithContext(withConnTrace(req.Context(), conns))
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
			if len(conns) != 1 {
				t.Fatalf("the client used %d connections, want 1", len(conns))
			}
			for i, e := range eps {
				if h := e.hits.Load(); h < 80 {
					t.Errorf("endpoint %d served %d of 300 requests over one client connection", i, h)
				}
			}
		})
	}
}

// A gRPC-shaped exchange: HTTP/2 with prior knowledge from the app, the
// body streamed, trailers back.
func TestTrailersAndLargeBodies(t *testing.T) {
	ep := newEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		w.Header().Set("Trailer", "Grpc-Status, X-Body-Sum")
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		io.Copy(w, io.LimitReader(zeros{}, 1<<20))
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set("X-Body-Sum", fmt.Sprintf("%d:%x", n, h.Sum(nil)))
	})
	addr := app(t, static(&Route{Name: "r", Backends: []Backend{{Cluster: cluster(t, "c", []*endpoint{ep}), Weight: 1}}}))
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	sum := sha256.Sum256(body)
	req, _ := http.NewRequest("POST", "http://"+addr+"/pkg.Svc/Method", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := oneConn(t, true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != 1<<20 {
		t.Fatalf("response body: %d bytes, %v", n, err)
	}
	if got, want := resp.Trailer.Get("X-Body-Sum"), fmt.Sprintf("%d:%x", len(body), sum); got != want || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("trailers %v, want X-Body-Sum %s and Grpc-Status 0", resp.Trailer, want)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// What the sidecar answers itself: HTTP statuses, or gRPC statuses in a
// trailers-only response for gRPC requests.
func TestSidecarAnswers(t *testing.T) {
	dead := cluster(t, "dead", []*endpoint{newEndpoint(t, ok("x"))})
	dead.Balancer.Update(nil)
	slow := newEndpoint(t, hang(t))
	routes := map[string]*Route{
		"/none":    {Name: "none", Backends: []Backend{{Cluster: dead, Weight: 1}}},
		"/timeout": {Name: "timeout", Timeout: 100 * time.Millisecond, Backends: []Backend{{Cluster: cluster(t, "slow", []*endpoint{slow}), Weight: 1}}},
	}
	addr := app(t, func(r *http.Request) *Route { return routes[r.URL.Path] })
	for _, tc := range []struct {
		path       string
		grpc       bool
		status     int
		grpcStatus string
		body       string
	}{
		{"/missing", false, 404, "", "weft: route not found\n"},
		{"/missing", true, 200, "12", ""},
		{"/none", false, 503, "", "weft: no endpoint\n"},
		{"/none", true, 200, "14", ""},
		{"/timeout", false, 504, "", "weft: timeout\n"},
		{"/timeout", true, 200, "4", ""},
	} {
		req, _ := http.NewRequest("POST", "http://"+addr+tc.path, strings.NewReader("x"))
		if tc.grpc {
			req.Header.Set("Content-Type", "application/grpc")
		}
		resp, err := oneConn(t, tc.grpc).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, gs := readGRPC(t, resp)
		if resp.StatusCode != tc.status || gs != tc.grpcStatus || b != tc.body {
			t.Errorf("%s grpc=%v: %d grpc-status %q body %q, want %d %q %q", tc.path, tc.grpc, resp.StatusCode, gs, b, tc.status, tc.grpcStatus, tc.body)
		}
	}
}

// A malformed request gets a 4xx and the server goes on serving. (A head
// with both Transfer-Encoding: chunked and Content-Length is not among
// them: net/http frames it by the chunks and drops the length, as RFC 9112
// allows, and the request is framed anew toward the endpoint, so no
// second reading of it exists to smuggle a request through.)
func TestMalformedRequest(t *testing.T) {
	ep := newEndpoint(t, ok("ep"))
	addr := app(t, static(&Route{Name: "r", Backends: []Backend{{Cluster: cluster(t, "c", []*endpoint{ep}), Weight: 1}}}))
	for _, bad := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("y", 70<<10) + "\r\n\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, bad)
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 4") {
			t.Errorf("%.40q: %q %v, want a 4xx", bad, line, err)
		}
	}
	if ep.hits.Load() != 0 {
		t.Fatalf("a malformed request reached the endpoint")
	}
	resp, err := oneConn(t, false).Get("http://" + addr + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the malformed requests: %v %v", resp, err)
	}
	resp.Body.Close()
}

// The app's forwarding headers pass unchanged and none are added; an
// Expect: 100-continue body arrives.
func TestHeadersPassUnchanged(t *testing.T) {
	ep := newEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "xff=%q xfp=%q body=%d", r.Header.Values("X-Forwarded-For"), r.Header.Values("X-Forwarded-Proto"), len(b))
	})
	addr := app(t, static(&Route{Name: "r", Backends: []Backend{{Cluster: cluster(t, "c", []*endpoint{ep}), Weight: 1}}}))
	client := oneConn(t, false)
	for _, tc := range []struct {
		xff  []string
		want string
	}{
		{nil, `xff=[] xfp=[] body=5`},
		{[]string{"198.18.0.7"}, `xff=["198.18.0.7"] xfp=[] body=5`},
	} {
		req, _ := http.NewRequest("PUT", "http://"+addr+"/", strings.NewReader("hello"))
		req.Header.Set("Expect", "100-continue")
		if tc.xff != nil {
			req.Header["X-Forwarded-For"] = tc.xff
		}
		_, b := testutil.Do(t, client, req)
		if b != tc.want {
			t.Errorf("endpoint saw %s, want %s", b, tc.want)
		}
	}
}

// withConnTrace records the local address of every connection a client
// request gets.
func withConnTrace(ctx context.Context, conns map[string]bool) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conns[i.Conn.LocalAddr().String()] = true }})
}

// cleartext is the protocol of a connection without TLS: HTTP/2 with
// prior knowledge when h2c, else HTTP/1.1.
func cleartext(h2c bool) *http.Protocols {
	var p http.Protocols
	if h2c {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return &p
}
