package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/net/http2/hpack"
)

// Attacks by a hostile app on the HTTP egress chain that the sidecar holds
// today (regression tests): no request for evil.example.com reaches the
// upstream under Enforce.

// TestAttackChunkedDesyncNetHTTPServer: the malformed chunked bodies that
// reach reqServer (attack_chunked_test.go) do not reach a real
// net/http.Server: it closes the connection on a corrupt chunked body
// rather than read on.
func TestAttackChunkedDesyncNetHTTPServer(t *testing.T) {
	t.Parallel()
	size := strconv.FormatInt(int64(len(evilReq)), 16)
	rest := evilReq + "\r\n0\r\n\r\n"
	for _, tc := range []struct{ name, body string }{
		{"chunk-size line ending in bare LF", size + "\n" + rest},
		{"chunk-size line ending in CR CR LF", size + "\r\r\n" + rest},
		{"white space before a chunk extension", size + " ;x\r\n" + rest},
		{"chunk size of 17 hex digits", strings.Repeat("0", 17-len(size)) + size + "\r\n" + rest},
		{"trailer section with a line that is not a field", "0\r\nX\r\n" + evilReq},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs := startHostServer(t, nil)
			pd, _ := reqPod(t, "Enforce", false, hs.asReq())
			raw := "POST / HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n" + tc.body
			statuses, bodies := sendRaw(t, pd, hs.addr(), raw, 500*time.Millisecond)
			if settle(500*time.Millisecond, func() bool { return sawHost(hs.requests(), "evil.example.com") }) {
				t.Fatalf("the server served %q (app got %v %q)", hs.requests(), statuses, bodies)
			}
		})
	}
}

// TestAttackHTTP10TransferEncoding: net/http ignores Transfer-Encoding on
// an HTTP/1.0 request (golang.org/issue/12785) and reads it as bodiless,
// while the sidecar forwards a chunked body. The server then reads the
// chunk-size line as a request line; one that the sidecar accepts as a
// chunk size (hex digits, white space, ';') cannot be a valid request
// line, so the server refuses and closes. Held, though the framing is
// read differently.
func TestAttackHTTP10TransferEncoding(t *testing.T) {
	size := strconv.FormatInt(int64(len(evilReq)), 16)
	raw := "POST / HTTP/1.0\r\nHost: api.example.com\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" +
		size + "\r\n" + evilReq + "\r\n0\r\n\r\n"
	t.Run("reqServer", func(t *testing.T) {
		srv := startReqServer(t)
		pd, _ := reqPod(t, "Enforce", false, srv)
		statuses, _ := sendRaw(t, pd, srv.app.addr(), raw, 500*time.Millisecond)
		if sawHost(srv.requests(), "evil.example.com") {
			t.Fatalf("the server saw %q (app got %v)", srv.requests(), statuses)
		}
	})
	t.Run("net/http.Server", func(t *testing.T) {
		hs := startHostServer(t, nil)
		pd, _ := reqPod(t, "Enforce", false, hs.asReq())
		statuses, _ := sendRaw(t, pd, hs.addr(), raw, 500*time.Millisecond)
		if sawHost(hs.requests(), "evil.example.com") {
			t.Fatalf("the server served %q (app got %v)", hs.requests(), statuses)
		}
	})
}

// TestAttackFramingVariants: Content-Length and Transfer-Encoding spellings
// that servers have read differently; a request for evil.example.com
// rides in each body. Either the sidecar refuses the request or the
// server reads the body as the sidecar did.
func TestAttackFramingVariants(t *testing.T) {
	t.Parallel()
	n := strconv.Itoa(len(evilReq))
	size := strconv.FormatInt(int64(len(evilReq)), 16)
	chunked := size + "\r\n" + evilReq + "\r\n0\r\n\r\n"
	cases := []struct{ name, head, body string }{
		{"Content-Length with +", "Content-Length: +" + n, evilReq},
		{"Content-Length with leading zeros", "Content-Length: 000" + n, evilReq},
		{"Content-Length with spaces around", "Content-Length:   " + n + "  ", evilReq},
		{"Content-Length list", "Content-Length: " + n + ", " + n, evilReq},
		{"Content-Length 0x", "Content-Length: 0x" + size, evilReq},
		{"two equal Content-Lengths", "Content-Length: " + n + "\r\nContent-Length: " + n, evilReq},
		{"Content-Length 0 then a body", "Content-Length: 0", evilReq},
		{"Transfer-Encoding Chunked", "Transfer-Encoding: Chunked", chunked},
		{"Transfer-Encoding chunked with trailing space", "Transfer-Encoding: chunked ", chunked},
		{"Transfer-Encoding identity", "Transfer-Encoding: identity", evilReq},
		{"Transfer-Encoding chunked, chunked", "Transfer-Encoding: chunked, chunked", chunked},
		{"two Transfer-Encodings", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", chunked},
		{"Transfer-Encoding folded", "Transfer-Encoding:\r\n chunked", chunked},
		{"Transfer-Encoding folded with white space line", "Transfer-Encoding: chunked\r\n\t", chunked},
		{"Transfer-Encoding with a space before the colon", "Transfer-Encoding : chunked", chunked},
		{"Content-Length and lowercase transfer-encoding", "Content-Length: 3\r\ntransfer-encoding: chunked", chunked},
		{"chunk extension with quoted CRLF", "Transfer-Encoding: chunked", size + ";a=\"\r\n\"\r\n" + evilReq + "\r\n0\r\n\r\n"},
		{"chunk size with leading 0x", "Transfer-Encoding: chunked", "0x" + size + "\r\n" + evilReq + "\r\n0\r\n\r\n"},
		{"chunk size with leading space", "Transfer-Encoding: chunked", " " + size + "\r\n" + evilReq + "\r\n0\r\n\r\n"},
		{"negative chunk size", "Transfer-Encoding: chunked", "-" + size + "\r\n" + evilReq + "\r\n0\r\n\r\n"},
		{"GET with a body", "Content-Length: " + n, evilReq},
		{"Expect 100-continue", "Expect: 100-continue\r\nContent-Length: " + n, evilReq},
	}
	for _, tc := range cases {
		method := "POST"
		if strings.HasPrefix(tc.name, "GET") {
			method = "GET"
		}
		raw := method + " / HTTP/1.1\r\nHost: api.example.com\r\n" + tc.head + "\r\n\r\n" + tc.body
		for _, server := range []string{"reqServer", "net/http.Server"} {
			t.Run(tc.name+"/"+server, func(t *testing.T) {
				t.Parallel()
				var seen func() []string
				var pd *pod
				var statuses []int
				if server == "reqServer" {
					srv := startReqServer(t)
					pd, _ = reqPod(t, "Enforce", false, srv)
					seen = srv.requests
					statuses, _ = sendRaw(t, pd, srv.app.addr(), raw, 300*time.Millisecond)
				} else {
					hs := startHostServer(t, nil)
					pd, _ = reqPod(t, "Enforce", false, hs.asReq())
					seen = hs.requests
					statuses, _ = sendRaw(t, pd, hs.addr(), raw, 300*time.Millisecond)
				}
				if settle(150*time.Millisecond, func() bool { return sawHost(seen(), "evil.example.com") }) {
					t.Fatalf("the server read a request for evil.example.com: %q (app got %v)", seen(), statuses)
				}
				t.Logf("app got %v; server saw %q", statuses, seen())
			})
		}
	}
}

// TestAttackHostForms: Host spellings and request-target forms that name
// evil.example.com; every one is refused before it reaches the server.
func TestAttackHostForms(t *testing.T) {
	t.Parallel()
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: EVIL.EXAMPLE.COM\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.example.com.\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.example.com..\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.example.com:80\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.example.com.:8080\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.example.com:\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [evil.example.com]:80\r\n\r\n",
		"GET / HTTP/1.1\r\nHost:\tevil.example.com\t\r\n\r\n",
		"GET / HTTP/1.1\r\nhOsT: evil.example.com\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.example.com\n\n",
		"GET / HTTP/1.1\r\nHost: api.example.com\r\nHost: evil.example.com\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : api.example.com\r\nHost: evil.example.com\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: api.example.com\r\n evil.example.com\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: api.example.com evil.example.com\r\n\r\n",
		"GET / HTTP/1.1\r\nX: 1\r\nHost: evil.example.com\r\n\r\n",
		"GET http://evil.example.com/ HTTP/1.1\r\n\r\n",
		"GET http://evil.example.com/ HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
		"GET http://api.example.com@evil.example.com/ HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
		"GET http://api.example.com@evil.example.com/ HTTP/1.1\r\n\r\n",
		"GET http://evil%2Eexample.com/ HTTP/1.1\r\n\r\n",
		"GET http://evil%2Eexample.com/ HTTP/1.1\r\nHost: evil%2Eexample.com\r\n\r\n",
		"GET HTTP://EVIL.example.com:80/ HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
		"GET foo://evil.example.com/ HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
		"get / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: evil.example.com\r\n\r\n",
		"GET / HTTP/0.9\r\nHost: evil.example.com\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
	} {
		for _, later := range []bool{false, true} {
			t.Run(fmt.Sprintf("%q/later=%v", req, later), func(t *testing.T) {
				t.Parallel()
				srv, statuses := sendEnforced(t, req, later)
				if settle(100*time.Millisecond, func() bool { return sawHost(srv.requests(), "evil.example.com") }) {
					t.Fatalf("the server saw %q (app got %v)", srv.requests(), statuses)
				}
				if later && (len(statuses) == 0 || statuses[0] != 200) {
					t.Fatalf("statuses %v: the allowed request first", statuses)
				}
			})
		}
	}
}

// TestAttackConnectVariants: CONNECT is decided as TCP to the destination
// (name_unknown here: a rule by name applies to the port); "connect" in
// lower case is not CONNECT to net/http either, and is routed by its Host.
func TestAttackConnectVariants(t *testing.T) {
	for _, req := range []string{
		"CONNECT evil.example.com:80 HTTP/1.1\r\nHost: evil.example.com:80\r\n\r\n" + evilReq,
		"CONNECT api.example.com:80 HTTP/1.1\r\nHost: api.example.com:80\r\n\r\n" + evilReq,
		"CONNECT / HTTP/1.1\r\nHost: api.example.com\r\n\r\n" + evilReq,
		"connect evil.example.com:80 HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
		"connect api.example.com:80 HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
		"CONNECT evil.example.com:80 HTTP/1.0\r\n\r\n" + evilReq,
	} {
		for _, later := range []bool{false, true} {
			t.Run(fmt.Sprintf("%q/later=%v", req, later), func(t *testing.T) {
				srv, statuses := sendEnforced(t, req, later)
				seen := srv.requests()
				if sawHost(seen, "evil.example.com") || slices.ContainsFunc(seen, func(s string) bool { return strings.HasPrefix(s, "CONNECT") }) {
					t.Fatalf("the server saw %q (app got %v)", seen, statuses)
				}
			})
		}
	}
}

// TestAttackUpgradeRefusedThenRequest: a server that does not switch
// protocols (net/http answers an Upgrade request like any other) leaves
// the connection HTTP; the request after it is decided.
func TestAttackUpgradeRefusedThenRequest(t *testing.T) {
	hs := startHostServer(t, nil)
	pd, events := reqPod(t, "Enforce", false, hs.asReq())
	upgrade := "GET /ws HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	statuses, _ := sendRaw(t, pd, hs.addr(), upgrade+evilReq, 500*time.Millisecond)
	if !slices.Equal(statuses, []int{200, 403}) || sawHost(hs.requests(), "evil.example.com") {
		t.Fatalf("statuses %v, server saw %q", statuses, hs.requests())
	}
	if got := describe(takeEvents(t, events, 2)); !slices.Equal(got, []string{"api.example.com allow 1", "evil.example.com deny 0"}) {
		t.Fatalf("audit %q", got)
	}
}

// TestAttackPipelineDeep: more pipelined requests than the sidecar queues
// (16), the denied one far down the pipeline, written at once; the app
// reads nothing until it has written everything.
func TestAttackPipelineDeep(t *testing.T) {
	srv := startReqServer(t)
	pd, events := reqPod(t, "Enforce", false, srv)
	var reqs []string
	for range 40 {
		reqs = append(reqs, get("api.example.com"))
	}
	reqs[30] = evilReq
	resps, _, closed := exchange(t, pd, srv.app.addr(), true, reqs...)
	want := append(slices.Repeat([]int{200}, 30), 403)
	if got := statuses(resps); !slices.Equal(got, want) || !closed {
		t.Fatalf("statuses %v closed %v", got, closed)
	}
	if n := len(srv.requests()); n != 30 || sawHost(srv.requests(), "evil.example.com") {
		t.Fatalf("the server saw %d requests: %q", n, srv.requests())
	}
	if es := takeEvents(t, events, 31); es[30].Host != "evil.example.com" || es[30].Decision != "deny" {
		t.Fatalf("audit of the denied request %+v", es[30])
	}
}

// TestAttackClientNeverReads: an app that pipelines requests for large
// responses and never reads, then goes away, does not leave the sidecar's
// connection behind.
func TestAttackClientNeverReads(t *testing.T) {
	big := strings.Repeat("x", 256<<10)
	srv := startApp(t, func(c *net.TCPConn, a *app) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(big))+"\r\n\r\n"+big); err != nil {
				return
			}
		}
	})
	pd, _ := reqPod(t, "Enforce", false, &reqServer{app: srv})
	c := pd.dialOutbound(srv.addr())
	if _, err := io.WriteString(c, strings.Repeat(get("api.example.com"), 100)); err != nil {
		t.Fatal(err)
	}
	if !settle(5*time.Second, func() bool { return pd.counter("connections", outbound) == 1 }) {
		t.Fatal("the connection was not established")
	}
	waitWaitingIn(t, 1, "writeBounded", "the sidecar stuck writing to the app")
	_ = c.Close() // unread bytes: the app's kernel resets the connection
	if !settle(5*time.Second, func() bool { return pd.counter("connections", outbound) == 0 }) {
		t.Fatalf("the sidecar still holds %v outbound connections after the app went away", pd.counter("connections", outbound))
	}
}

// TestAttackHalfClose: an app that pipelines and half-closes gets every
// response, then the end; a denied request in the pipeline still ends it.
func TestAttackHalfClose(t *testing.T) {
	srv := startReqServer(t)
	pd, _ := reqPod(t, "Enforce", false, srv)
	for _, tc := range []struct {
		reqs []string
		want []int
	}{
		{[]string{get("api.example.com"), get("api.example.com")}, []int{200, 200}},
		{[]string{get("api.example.com"), evilReq, get("api.example.com")}, []int{200, 403}},
	} {
		c := pd.dialOutbound(srv.app.addr())
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, strings.Join(tc.reqs, ""))
		_ = c.CloseWrite()
		br := bufio.NewReader(c)
		var got []int
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				break
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			got = append(got, resp.StatusCode)
		}
		if _, err := br.ReadByte(); err != io.EOF || !slices.Equal(got, tc.want) {
			t.Fatalf("statuses %v (want %v), end %v", got, tc.want, err)
		}
		_ = c.Close()
	}
	if sawHost(srv.requests(), "evil.example.com") {
		t.Fatalf("the server saw %q", srv.requests())
	}
}

// TestAttackH2CVariantsHeld: h2c tricks that do not get an HTTP/2 stream
// past the sidecar (the one that does is TestAttackH2CUpgradeSmuggling):
// an upgrade the server performs but the sidecar does not see as one
// ("Connection: HTTP2-Settings" without "upgrade": the sidecar keeps
// reading requests and refuses the client preface, which has no Host),
// and "PRI * HTTP/2.0" with a Host, which x/net's h2c handler takes as
// prior knowledge once net/http has removed the Host (it then needs
// "SM\r\n\r\n", which the sidecar refuses as a request head, or forwards
// only one line of as a chunk size before closing).
func TestAttackH2CVariantsHeld(t *testing.T) {
	t.Parallel()
	preface := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	for _, tc := range []struct{ name, raw string }{
		{"upgrade without Connection: upgrade", "GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n" + preface},
		{"PRI with a Host", "PRI * HTTP/2.0\r\nHost: api.example.com\r\n\r\nSM\r\n\r\n"},
		{"PRI with a Host, chunked", "PRI * HTTP/2.0\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\nSM\r\n\r\n"},
		{"PRI with a Host, later", get("api.example.com") + "PRI * HTTP/2.0\r\nHost: api.example.com\r\n\r\nSM\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs := startHostServer(t, func(h http.Handler) http.Handler { return h2c.NewHandler(h, &http2.Server{}) })
			pd, _ := reqPod(t, "Enforce", false, hs.asReq())
			c := pd.dialOutbound(hs.addr())
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatal(err)
			}
			// Whatever the state, an HTTP/2 SETTINGS frame and a stream
			// for evil.example.com follow.
			fr := http2.NewFramer(c, c)
			_ = fr.WriteSettings()
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "evil.example.com"}, {":path", "/"}} {
				_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = io.Copy(io.Discard, c)
			if sawHost(hs.requests(), "evil.example.com") {
				t.Fatalf("the server served %q", hs.requests())
			}
			t.Logf("server served %q", hs.requests())
		})
	}
}

// TestAttackCollidingResponses: a colluding upstream answers the first,
// allowed request in ways meant to desync the sidecar's response side (a
// 101 to a request that asked for no upgrade, a body after a HEAD
// response, a flood of 1xx, a response before any request, a 2xx to a
// lower-case "connect"); the request for evil.example.com that the app
// sends next must still be decided, and so never reach the server.
func TestAttackCollidingResponses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, first, answer string }{
		{"101 to a plain GET", get("api.example.com"), "HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"body after a HEAD response", "HEAD / HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{"1xx flood", get("api.example.com"), strings.Repeat("HTTP/1.1 102 Processing\r\n\r\n", 500) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"2xx to a lower-case connect", "connect api.example.com:80 HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "HTTP/1.1 200 Connection established\r\n\r\n"},
		{"unframed 200 (read to the end)", get("api.example.com"), "HTTP/1.1 200 OK\r\n\r\nstreaming"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := startHostRecorder(t, func(i int) string {
				if i == 0 {
					return tc.answer
				}
				return okResponse
			})
			pd, _ := reqPod(t, "Enforce", false, srv.asReq())
			c := pd.dialOutbound(srv.addr())
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			back := readFromSidecar(c)
			_, _ = io.WriteString(c, tc.first)
			back.waitFor(t, len(tc.answer)) // the answer has come through
			_, _ = io.WriteString(c, evilReq+get("api.example.com"))
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			<-back.done
			seen := srv.seen()
			if sawHost(seen, "evil.example.com") {
				t.Fatalf("the server saw %q", seen)
			}
			got := back.got.String()
			t.Logf("server saw %q; the app got %d bytes, a 403: %v", seen, len(got), strings.Contains(got, " 403 "))
		})
	}
}

// TestAttackResponseBeforeRequest: bytes a colluding server sends before
// it is asked anything are passed on, and the requests after them are
// still decided.
func TestAttackResponseBeforeRequest(t *testing.T) {
	t.Parallel()
	// Two responses for the first request: the second is unasked for.
	srv := startHostRecorder(t, func(i int) string {
		if i == 0 {
			return okResponse + okResponse
		}
		return okResponse
	})
	pd, events := reqPod(t, "Enforce", false, srv.asReq())
	c := pd.dialOutbound(srv.addr())
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	back := readFromSidecar(c)
	_, _ = io.WriteString(c, get("api.example.com"))
	back.waitFor(t, 2*len(okResponse)) // both responses have come through
	_, _ = io.WriteString(c, get("api.example.com")+evilReq)
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	<-back.done
	seen := srv.seen()
	if sawHost(seen, "evil.example.com") {
		t.Fatalf("the server saw %q", seen)
	}
	var trail []string
	for settle(time.Second, func() bool { return len(events) > 0 }) {
		e := <-events
		trail = append(trail, e.Host+" "+e.Decision)
	}
	t.Logf("server saw %q; audit %q", seen, trail)
}
