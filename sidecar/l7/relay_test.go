package l7

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// relayCase is one exchange: the raw request an app sends, and the
// response the endpoint gives (script).
type relayCase struct {
	name   string
	req    string
	script func(trace *httptrace.ClientTrace, r *http.Request) (*http.Response, error)
}

// sentRequest is what the endpoint got.
type sentRequest struct {
	Method, URL, Host string
	Header, Trailer   http.Header
	ContentLength     int64
	Close             bool
	Body              string
}

// trailerBody is a response body that fills its response's trailers
// when it reaches its end, as net/http's transports do.
type trailerBody struct {
	io.Reader
	res  *http.Response
	tr   http.Header
	fail error // returned instead of EOF, when set
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF {
		if b.fail != nil {
			return n, b.fail
		}
		for k, vv := range b.tr {
			b.res.Trailer[k] = vv
		}
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }

// lateInterim calls late before its first Read.
type lateInterim struct {
	io.Reader
	late func()
	once sync.Once
}

func (b *lateInterim) Read(p []byte) (int, error) {
	b.once.Do(b.late)
	return b.Reader.Read(p)
}

func (b *lateInterim) Close() error { return nil }

func scripted(status int, h http.Header, body string) func(*httptrace.ClientTrace, *http.Request) (*http.Response, error) {
	return func(_ *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: status, Header: h.Clone(), ContentLength: int64(len(body)),
			Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
	}
}

func relayCases() []relayCase {
	get := "GET /p HTTP/1.1\r\nHost: svc.demo\r\nUser-Agent: app/1\r\nConnection: close\r\n\r\n"
	return []relayCase{
		{name: "hop-by-hop fields both ways", req: "GET /a/b?x=1 HTTP/1.1\r\nHost: svc.demo\r\nUser-Agent: app/1\r\n" +
			"Connection: close, X-Hop, X-Forwarded-For\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n" +
			"Proxy-Authorization: Basic eA==\r\nTe: trailers, deflate\r\nTrailer: X-T\r\nUpgrade: h2c\r\n" +
			"Forwarded: for=198.18.0.9\r\nX-Forwarded-For: 198.18.0.8\r\nX-Forwarded-Proto: https\r\nX-Keep: yes\r\n\r\n",
			script: scripted(200, http.Header{"Connection": {"X-Resp-Hop"}, "X-Resp-Hop": {"1"}, "Keep-Alive": {"x"},
				"Proxy-Authenticate": {"Basic"}, "Content-Type": {"text/plain"}, "X-Resp": {"a", "b"}}, "hello")},
		{name: "no user agent, no te", req: "GET /p HTTP/1.1\r\nHost: svc.demo\r\nConnection: close\r\n\r\n",
			script: scripted(200, http.Header{"Content-Type": {"text/plain"}}, "x")},
		{name: "te without trailers", req: "GET /p HTTP/1.1\r\nHost: svc.demo\r\nTe: gzip\r\nConnection: close\r\n\r\n",
			script: scripted(204, http.Header{}, "")},
		{name: "query re-encoded", req: "GET /q?b=2;c=3&a=1 HTTP/1.1\r\nHost: svc.demo\r\nConnection: close\r\n\r\n",
			script: scripted(200, http.Header{"Content-Type": {"text/plain"}}, "q")},
		{name: "query bad escape", req: "GET /q?a=%zz&b=%4 HTTP/1.1\r\nHost: svc.demo\r\nConnection: close\r\n\r\n",
			script: scripted(200, http.Header{"Content-Type": {"text/plain"}}, "q")},
		{name: "query ending in a cut escape", req: "GET /q?b=2&a=%4 HTTP/1.1\r\nHost: svc.demo\r\nConnection: close\r\n\r\n",
			script: scripted(200, http.Header{"Content-Type": {"text/plain"}}, "q")},
		{name: "query kept", req: "GET /q?a=%20b&c=d+e HTTP/1.1\r\nHost: svc.demo\r\nConnection: close\r\n\r\n",
			script: scripted(200, http.Header{"Content-Type": {"text/plain"}}, "q")},
		// Escapes of each first and last hex digit, lower and upper case,
		// its keys out of order: encoded again, it would read otherwise.
		{name: "query of every edge hex digit kept", req: "GET /q?z=%09%90%af%fa%AF%FA&a=1 HTTP/1.1\r\nHost: svc.demo\r\nConnection: close\r\n\r\n",
			script: scripted(200, http.Header{"Content-Type": {"text/plain"}}, "q")},
		{name: "post with length", req: "POST /p HTTP/1.1\r\nHost: svc.demo\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
			script: scripted(201, http.Header{"Content-Type": {"text/plain"}, "Content-Length": {"2"}}, "ok")},
		{name: "chunked post with trailers", req: "POST /p HTTP/1.1\r\nHost: svc.demo\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nConnection: close\r\n\r\n" +
			"5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n",
			script: scripted(200, http.Header{"Content-Type": {"text/plain"}}, "ok")},
		{name: "http/1.0 upgrade asked", req: "GET /ws HTTP/1.0\r\nHost: svc.demo\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
			script: scripted(200, http.Header{"Content-Type": {"text/plain"}}, "no")},
		{name: "http/1.0 upgrade to a protocol with a space and a tilde", req: "GET /ws HTTP/1.0\r\nHost: svc.demo\r\nConnection: upgrade\r\nUpgrade: my proto~1\r\n\r\n",
			script: scripted(200, http.Header{"Content-Type": {"text/plain"}}, "no")},
		{name: "http/1.0 upgrade to a non-printable protocol", req: "GET /ws HTTP/1.0\r\nHost: svc.demo\r\nConnection: upgrade\r\nUpgrade: w\xe9bsocket\r\n\r\n",
			script: scripted(200, http.Header{}, "never")},
		{name: "streamed response", req: get, script: func(_ *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}}, ContentLength: -1,
				Body: io.NopCloser(io.MultiReader(strings.NewReader("part one,"), strings.NewReader(strings.Repeat("z", 40<<10)))), Request: r}, nil
		}},
		{name: "server-sent events with a length", req: get, script: scripted(200, http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}, "data: 1\n\n")},
		{name: "server-sent events, any case", req: get, script: scripted(200, http.Header{"Content-Type": {"Text/Event-STREAM"}}, "data: 2\n\n")},
		{name: "not server-sent events", req: get, script: scripted(200, http.Header{"Content-Type": {"text/event-streams"}}, "data: 3\n\n")},
		{name: "announced and unannounced trailers", req: get, script: func(_ *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			res := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/grpc"}}, ContentLength: -1,
				Trailer: http.Header{"Grpc-Status": nil}, Request: r}
			res.Body = &trailerBody{Reader: strings.NewReader("msg"), res: res, tr: http.Header{"Grpc-Status": {"0"}, "Grpc-Message": {"fine"}}}
			return res, nil
		}},
		{name: "announced trailers only", req: get, script: func(_ *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			res := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}}, ContentLength: 3,
				Trailer: http.Header{"X-Digest": nil}, Request: r}
			res.Body = &trailerBody{Reader: strings.NewReader("abc"), res: res, tr: http.Header{"X-Digest": {"d1"}}}
			return res, nil
		}},
		{name: "interim responses", req: get, script: func(tr *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			if err := tr.Got1xxResponse(103, textproto.MIMEHeader{"Link": {"</s.css>; rel=preload"}}); err != nil {
				return nil, err
			}
			if err := tr.Got1xxResponse(102, textproto.MIMEHeader{}); err != nil {
				return nil, err
			}
			return scripted(200, http.Header{"Content-Type": {"text/plain"}}, "final")(tr, r)
		}},
		{name: "interim 103, then a 100 unasked", req: get, script: func(tr *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			tr.Got1xxResponse(103, textproto.MIMEHeader{"Link": {"</s.css>; rel=preload"}})
			tr.Got1xxResponse(100, textproto.MIMEHeader{})
			return scripted(200, http.Header{"Content-Type": {"text/plain"}}, "final")(tr, r)
		}},
		{name: "a 100 unasked, then interim 103", req: get, script: func(tr *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			tr.Got1xxResponse(100, textproto.MIMEHeader{})
			tr.Got1xxResponse(103, textproto.MIMEHeader{"Link": {"</s.css>; rel=preload"}})
			return scripted(200, http.Header{"Content-Type": {"text/plain"}}, "final")(tr, r)
		}},
		{name: "interim response after the final one", req: get, script: func(tr *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			// A try that ended late: its interim response must not reach
			// the app once the final response is being copied.
			body := &lateInterim{Reader: strings.NewReader("final"), late: func() { tr.Got1xxResponse(103, textproto.MIMEHeader{"Link": {"</late>"}}) }}
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}}, ContentLength: 5, Body: body, Request: r}, nil
		}},
		{name: "head", req: "HEAD /p HTTP/1.1\r\nHost: svc.demo\r\nConnection: close\r\n\r\n", script: func(_ *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}, "Content-Length": {"1234"}}, ContentLength: 1234,
				Body: http.NoBody, Request: r}, nil
		}},
		{name: "not modified", req: get, script: scripted(304, http.Header{"Etag": {`"v1"`}}, "")},
		{name: "the highest status", req: get, script: scripted(999, http.Header{"Content-Type": {"text/plain"}}, "odd")},
		{name: "no content type, sniffed", req: get, script: scripted(200, http.Header{}, "<html><body>x</body></html>")},
		{name: "content type without values, sniffed", req: get, script: scripted(200, http.Header{"Content-Type": nil, "X-Empty": {}}, "<html><body>y</body></html>")},
		{name: "transport failure", req: get, script: func(*httptrace.ClientTrace, *http.Request) (*http.Response, error) {
			return nil, errors.New("dial refused")
		}},
		{name: "body fails midway", req: get, script: func(_ *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			res := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}}, ContentLength: -1, Request: r}
			res.Body = &trailerBody{Reader: strings.NewReader(strings.Repeat("y", 5000)), res: res, fail: errors.New("stream reset")}
			return res, nil
		}},
	}
}

// relayUnder serves c's exchange with handler h (made by mk from the
// endpoint's script and a recorder of what it got) in a real net/http
// server, and returns the raw response the app read and the request the
// endpoint got.
func relayUnder(t *testing.T, c relayCase, mk func(rt func(*http.Request) (*http.Response, error), fail func(http.ResponseWriter, *http.Request, error)) http.Handler) (string, *sentRequest, string) {
	t.Helper()
	var (
		mu     sync.Mutex
		sent   *sentRequest
		failed string
	)
	rt := func(r *http.Request) (*http.Response, error) {
		var body []byte
		if r.Body != nil {
			body, _ = io.ReadAll(r.Body)
		}
		mu.Lock()
		sent = &sentRequest{Method: r.Method, URL: r.URL.String(), Host: r.Host, Header: r.Header.Clone(), Trailer: r.Trailer.Clone(),
			ContentLength: r.ContentLength, Close: r.Close, Body: string(body)}
		mu.Unlock()
		return c.script(httptrace.ContextClientTrace(r.Context()), r)
	}
	fail := func(w http.ResponseWriter, r *http.Request, err error) {
		mu.Lock()
		failed = fmt.Sprintf("%s %s %v: %v", r.Method, r.URL, r.Header, err)
		mu.Unlock()
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "failed\n")
	}
	srv := httptest.NewUnstartedServer(mk(rt, fail))
	srv.Config.ErrorLog = nil
	srv.Config.SetKeepAlivesEnabled(true)
	srv.Start()
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, c.req); err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(bufio.NewReader(conn))
	mu.Lock()
	defer mu.Unlock()
	return string(raw), sent, failed
}

var dateLine = regexp.MustCompile(`(?m)^Date: [^\r]*\r\n`)

// rewriteFor is what both proxies do to the outgoing request after their
// own steps: the sidecars' URL and a route's header edits.
func rewriteFor(out *http.Request) {
	u := *out.URL
	u.Scheme, u.Host = "http", "198.18.0.7:8080"
	out.URL = &u
	out.Header.Set("X-Route", "r1")
	out.Header.Del("X-Keep-Not")
}

// reverseProxyFor makes, for relayUnder, the sidecars' former proxy:
// httputil.ReverseProxy in Rewrite mode, as both sidecars configured it
// (the app's forwarding fields kept, then rewriteFor; a route's response
// edit).
func reverseProxyFor(rt func(*http.Request) (*http.Response, error), fail func(http.ResponseWriter, *http.Request, error)) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			for _, k := range forwardingFields {
				if v, ok := pr.In.Header[k]; ok {
					pr.Out.Header[k] = v
				}
			}
			rewriteFor(pr.Out)
		},
		Transport: roundTripper(rt),
		ModifyResponse: func(res *http.Response) error {
			res.Header.Set("X-Route-Resp", "r1")
			return nil
		},
		ErrorHandler: fail,
		ErrorLog:     log.New(io.Discard, "", 0),
	}
}

// relayTraced makes, for relayUnder, the relay configured alike. With
// traced, it puts the client trace for interim responses on the request
// (the server sidecar's way); without, roundTrip does, per try, as the
// forwarder does (the client sidecar's).
func relayTraced(traced bool) func(func(*http.Request) (*http.Response, error), func(http.ResponseWriter, *http.Request, error)) http.Handler {
	return func(rt func(*http.Request) (*http.Response, error), fail func(http.ResponseWriter, *http.Request, error)) http.Handler {
		p := &relay{
			rewrite:  func(_, out *http.Request) { rewriteFor(out) },
			trace1xx: traced,
			roundTrip: func(out *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
				if !traced {
					out = out.WithContext(httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{Got1xxResponse: got1xx}))
				}
				return rt(out)
			},
			modifyResponse: func(_ *http.Request, res *http.Response) { res.Header.Set("X-Route-Resp", "r1") },
			fail:           fail,
		}
		return http.HandlerFunc(p.serve)
	}
}

// relayFor is the server sidecar's relay, for relayUnder.
var relayFor = relayTraced(true)

// TestRelayAsReverseProxy: the relay sends and answers as
// httputil.ReverseProxy in Rewrite mode did (the sidecars' earlier
// proxy), for every case of relayCases: the request the endpoint gets
// (method, URL, Host, fields, trailers, length, body), the bytes the app
// reads (the Date field aside), and what fails, with which request. Both
// ways of telling it interim responses are run: a client trace it puts
// on the request (the server sidecar's) and the forwarder's own.
func TestRelayAsReverseProxy(t *testing.T) {
	for _, c := range relayCases() {
		t.Run(c.name, func(t *testing.T) {
			wantRaw, wantSent, wantFail := relayUnder(t, c, reverseProxyFor)
			for _, traced := range []bool{true, false} {
				raw, sent, failed := relayUnder(t, c, relayTraced(traced))
				if got, want := dateLine.ReplaceAllString(raw, ""), dateLine.ReplaceAllString(wantRaw, ""); got != want {
					t.Errorf("trace1xx=%v: the app read\n%q\nReverseProxy's app read\n%q", traced, got, want)
				}
				if c.name == "chunked post with trailers" && wantSent != nil && sent != nil {
					// The one difference in what is sent: ReverseProxy
					// cloned the request's trailers before the body had
					// filled them, so their values never went on; the
					// relay's do.
					if want := (http.Header{"X-Sum": {"5"}}); !reflect.DeepEqual(sent.Trailer, want) {
						t.Errorf("trace1xx=%v: request trailers %v, want %v", traced, sent.Trailer, want)
					}
					w := *wantSent
					w.Trailer = sent.Trailer
					wantSent = &w
				}
				if !reflect.DeepEqual(sent, wantSent) {
					t.Errorf("trace1xx=%v: the endpoint got\n%+v\nReverseProxy's got\n%+v", traced, sent, wantSent)
				}
				if failed != wantFail {
					t.Errorf("trace1xx=%v: failure %q, ReverseProxy's %q", traced, failed, wantFail)
				}
			}
		})
	}
}

// The relay's two deliberate departures from ReverseProxy: an interim 101
// (which HTTP/2 forbids) is not passed on to the app, and a final 101 —
// never asked for on this path, upgrades have their own — is a failure
// with the outgoing request, its body closed.
func TestRelaySwitchingProtocolsUnasked(t *testing.T) {
	interim := relayCase{req: "GET /p HTTP/1.1\r\nHost: svc.demo\r\nConnection: close\r\n\r\n",
		script: func(tr *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			tr.Got1xxResponse(101, textproto.MIMEHeader{"Upgrade": {"websocket"}})
			return scripted(200, http.Header{"Content-Type": {"text/plain"}}, "fine")(tr, r)
		}}
	closed := false
	final := relayCase{req: interim.req, script: func(_ *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 101, Header: http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}},
			Body: closeFunc(func() { closed = true }), Request: r}, nil
	}}
	mk := func(rt func(*http.Request) (*http.Response, error), fail func(http.ResponseWriter, *http.Request, error)) http.Handler {
		p := &relay{rewrite: func(_, out *http.Request) { rewriteFor(out) }, trace1xx: true,
			roundTrip: func(out *http.Request, _ func(int, textproto.MIMEHeader) error) (*http.Response, error) {
				return rt(out)
			},
			fail: fail}
		return http.HandlerFunc(p.serve)
	}
	raw, _, failed := relayUnder(t, interim, mk)
	if !strings.HasPrefix(raw, "HTTP/1.1 200 OK\r\n") || strings.Contains(raw, "101") || !strings.HasSuffix(raw, "fine") || failed != "" {
		t.Errorf("an interim 101: the app read %q (failure %q); want the 200 alone", raw, failed)
	}
	raw, _, failed = relayUnder(t, final, mk)
	if !strings.HasPrefix(raw, "HTTP/1.1 502 ") || !strings.Contains(failed, "GET http://198.18.0.7:8080/p ") || !strings.Contains(failed, "switched protocols unasked") {
		t.Errorf("a final 101: the app read %q, failure %q; want 502 and a failure with the outgoing request", raw, failed)
	}
	if !closed {
		t.Error("a final 101's body was not closed")
	}
}

type closeFunc func()

func (f closeFunc) Read([]byte) (int, error) { return 0, io.EOF }
func (f closeFunc) Close() error             { f(); return nil }

// eventStream is mime.ParseMediaType's base type compared with
// text/event-stream, without parsing what cannot be one.
func TestEventStream(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/event-stream":                   true,
		"Text/Event-Stream":                   true,
		"text/event-stream; charset=utf-8":    true,
		"text/event-stream ;charset=utf-8":    true,
		" \ttext/event-stream":                true,
		"text/event-streams":                  false,
		"text/event-stream/x":                 false,
		"text/event":                          false,
		"text/plain":                          false,
		"":                                    false,
		"application/grpc; text/event-stream": false,
	} {
		if got := eventStream(ct); got != want {
			t.Errorf("eventStream(%q) = %v, want %v", ct, got, want)
		}
	}
}

// An interim response's hop-by-hop fields stay with the endpoint's
// connection, as a final response's do: the app gets the 103's Link and
// nothing its Connection names, nor Keep-Alive.
func TestRelayInterimHopFields(t *testing.T) {
	c := relayCase{req: "GET /p HTTP/1.1\r\nHost: svc.demo\r\nConnection: close\r\n\r\n",
		script: func(tr *httptrace.ClientTrace, r *http.Request) (*http.Response, error) {
			tr.Got1xxResponse(103, textproto.MIMEHeader{"Link": {"</s.css>; rel=preload"}, "Connection": {"X-A"}, "X-A": {"1"}, "Keep-Alive": {"5"}})
			return scripted(200, http.Header{"Content-Type": {"text/plain"}}, "ok")(tr, r)
		}}
	raw, _, _ := relayUnder(t, c, relayFor)
	if want := "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"; !strings.HasPrefix(raw, want) {
		t.Errorf("the app read %q, want it to begin %q", raw, want)
	}
}
