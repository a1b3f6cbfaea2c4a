package l7

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/testutil"
)

// The relay's edges that its differential test (TestRelayAsReverseProxy)
// does not reach: what it does on purpose otherwise than ReverseProxy, its
// log, and answers that only HTTP/2 treats apart.

// An app's HTTP/1.1 request that expects 100-continue gets one 100
// Continue: the relay's, when the endpoint first reads the body. The
// endpoint's own 100 after it is not passed on a second time (an app may
// take a second for the final answer); its other interim responses are.
func TestRelayOneContinue(t *testing.T) {
	c := relayCase{req: "POST /p HTTP/1.1\r\nHost: svc.demo\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
		script: func(tr *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			// relayUnder has read the body: the app has its 100.
			tr.Got1xxResponse(100, textproto.MIMEHeader{})
			tr.Got1xxResponse(103, textproto.MIMEHeader{"Link": {"</a.css>; rel=preload"}})
			return scripted(200, http.Header{"Content-Type": {"text/plain"}}, "done")(tr, r)
		}}
	for _, traced := range []bool{true, false} {
		raw, sent, failed := relayUnder(t, c, relayTraced(traced))
		raw = dateLine.ReplaceAllString(raw, "")
		if want := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"; !strings.HasPrefix(raw, want) || !strings.HasSuffix(raw, "done") {
			t.Errorf("trace1xx=%v: the app read %q, want it to begin %q", traced, raw, want)
		}
		if sent == nil || sent.Body != "hello" || failed != "" {
			t.Errorf("trace1xx=%v: the endpoint got %+v (failure %q), want the body", traced, sent, failed)
		}
	}
}

// A response body that the endpoint cuts off midway is logged at debug,
// with its error, once; a body that ends, or that ends because the app
// went away (its request's context canceled), is not logged: neither is a
// failure of the path. The bytes before the cut reach the app either way.
func TestRelayLogsACutResponseBody(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  error // what the body returns after its bytes, nil: io.EOF
		log  string
	}{
		{"a body that ends", nil, ""},
		{"a body cut off", errors.New("stream reset"), `level=DEBUG msg="response body read failed" err="stream reset"`},
		{"the app gone", context.Canceled, ""},
	} {
		var logs bytes.Buffer
		p := &relay{rewrite: func(_, out *http.Request) { rewriteFor(out) }, trace1xx: true,
			roundTrip: func(out *http.Request, _ func(int, textproto.MIMEHeader) error) (*http.Response, error) {
				res := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}}, ContentLength: -1, Request: out}
				res.Body = &trailerBody{Reader: strings.NewReader(strings.Repeat("y", 5000)), res: res, fail: tc.end}
				return res, nil
			},
			fail: func(_ http.ResponseWriter, _ *http.Request, err error) { t.Errorf("%s: failed: %v", tc.name, err) },
			logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug,
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				}})),
		}
		w := httptest.NewRecorder()
		p.serve(w, httptest.NewRequest("GET", "http://svc.demo/p", nil))
		if got := strings.TrimSuffix(logs.String(), "\n"); got != tc.log {
			t.Errorf("%s: logged %q, want %q", tc.name, got, tc.log)
		}
		if w.Code != 200 || w.Body.Len() != 5000 {
			t.Errorf("%s: the app got %d and %d bytes, want 200 and 5000", tc.name, w.Code, w.Body.Len())
		}
	}
}

// An app's answers without a body — 204, 304, a HEAD's 200 — reach the
// client sidecar whole over HTTP/2. net/http's HTTP/2 server refuses any
// write to a 204 or 304, even of no bytes (ErrBodyNotAllowed), and the
// relay cuts a response whose write fails (the stream reset).
func TestRelayBodilessAnswersOverHTTP2(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	app := testutil.Listen(t)
	go func() {
		_ = http.Serve(app, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Etag", `"v1"`)
			switch r.URL.Path {
			case "/204":
				w.WriteHeader(http.StatusNoContent)
			case "/304":
				w.WriteHeader(http.StatusNotModified)
			default:
				w.Header().Set("Content-Length", "1234")
			}
		}))
	}()
	in := &Inbound{HTTP1: NewAppH1((&net.Dialer{}).DialContext)}
	addr := serveInbound(t, ca, in, netip.MustParseAddrPort(app.Addr().String()), false)
	route := &Route{Name: "r", Backends: []Backend{{Cluster: meshCluster(t, ca, &serverSidecar{addr: addr}), Weight: 1}}}
	for _, tc := range []struct {
		method, path string
		status       int
	}{{"GET", "/204", 204}, {"GET", "/304", 304}, {"HEAD", "/", 200}} {
		req, _ := http.NewRequest(tc.method, "http://server.demo:8080"+tc.path, nil)
		resp, err := (&Forwarder{}).Forward(route, req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Etag") != `"v1"` || len(b) != 0 || err != nil {
			t.Errorf("%s %s: %d, Etag %q, body %q (%v); want %d, the app's Etag, no body", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Etag"), b, err, tc.status)
		}
	}
}
