package l7

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

var appConnSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
	"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
	"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
	"GET http://other/ HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: TE, Keep-Alive\r\nKeep-Alive: 1\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x01\x05\x00\x00\x00\x01garbage-hpack-block",
	"\r\n\r\nGET / HTTP/1.0\r\n\r\n",
}

func fuzzHandler(t testing.TB, logs io.Writer) *Handler {
	ep := newEndpoint(t, ok("ep"))
	return &Handler{Route: static(&Route{Name: "r", Timeout: 5 * time.Second, Backends: []Backend{{Cluster: cluster(t, "c", []*endpoint{ep}), Weight: 1}}}),
		Forwarder: &Forwarder{}, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
}

// FuzzHandler sends every request that net/http's parser makes of
// arbitrary bytes through the client side's handler to a real endpoint:
// the handler never panics (nothing recovers it here) and answers each
// request with a status the sidecar can stand behind.
func FuzzHandler(f *testing.F) {
	for _, s := range appConnSeeds {
		f.Add([]byte(s))
	}
	h := fuzzHandler(f, io.Discard)
	f.Fuzz(func(t *testing.T, in []byte) {
		eachRequest(t, in, h, func(rec *httptest.ResponseRecorder) http.ResponseWriter { return finalRecorder{rec} },
			func(rec *httptest.ResponseRecorder) {
				if c := rec.Code; c != 200 && (c < 400 || c > 599) {
					t.Fatalf("status %d for %q", c, in)
				}
			})
	})
}

// eachRequest serves each of the first few requests (pipelined) that
// net/http's parser makes of in with h, under a deadline of 10 s, writing
// to a recorder (through writer, when not nil), and hands the recorder to
// check. A panic other than http.ErrAbortHandler (a handler's way to
// abort a response) fails t.
func eachRequest(t *testing.T, in []byte, h http.Handler, writer func(*httptest.ResponseRecorder) http.ResponseWriter, check func(*httptest.ResponseRecorder)) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(in))
	for range 4 {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rec := httptest.NewRecorder()
		var w http.ResponseWriter = rec
		if writer != nil {
			w = writer(rec)
		}
		func() {
			defer func() {
				if p := recover(); p != nil && p != http.ErrAbortHandler {
					t.Fatalf("panic for %q: %v", in, p)
				}
			}()
			h.ServeHTTP(w, req.WithContext(ctx))
		}()
		cancel()
		check(rec)
	}
}

// finalRecorder records the final status: 1xx responses (100-continue
// forwarded from the endpoint) are informational.
type finalRecorder struct{ *httptest.ResponseRecorder }

func (r finalRecorder) WriteHeader(code int) {
	if code >= 200 {
		r.ResponseRecorder.WriteHeader(code)
	}
}

// The same shapes over a real connection: the server answers or closes
// within its timeouts, logs no panic, and serves the next connection.
func TestAppConnectionEdges(t *testing.T) {
	var logs testutil.SyncBuffer
	s := NewConnServer(fuzzHandler(t, &logs), ServerLimits{HeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, MaxHeaderBytes: 16 << 10},
		slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { s.Close() })
	addr := serveOn(t, s)
	exchange := func(in string) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, in)
		out, err := io.ReadAll(c) // until the server's idle or header timeout closes it
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("for %q: %v", in, err)
		}
		return string(out)
	}
	for _, in := range appConnSeeds {
		exchange(in)
		if strings.Contains(logs.String(), "panic") {
			t.Fatalf("a panic in the request path for %q:\n%s", in, logs.String())
		}
		if out := exchange("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200 OK") {
			t.Fatalf("after %q the server answered %q", in, out)
		}
	}
}
