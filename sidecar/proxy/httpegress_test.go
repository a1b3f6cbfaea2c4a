package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/dnsproxy"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// The app is the attacker: an EgressPolicy allows api.example.com and
// docs.example.com over plain HTTP and denies evil.example.com, and the app
// asks for the denied host on a connection an allowed request opened
// (keep-alive, pipelined, CONNECT), or hides a request in a body.

const reqPolicy = "shop/egress"

// reqServer is a keep-alive HTTP/1.1 server on loopback that answers each
// request "ok <host> <body>", tunnels CONNECT (200, then echo) and accepts
// an Upgrade (101, then echo); it records what it was asked.
type reqServer struct {
	app  *app
	mu   sync.Mutex
	seen []string // "<method> <host> <body>"
}

func startReqServer(t testing.TB) *reqServer {
	t.Helper()
	s := &reqServer{}
	s.app = startApp(t, func(c *net.TCPConn, a *app) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(req.Body)
			s.mu.Lock()
			s.seen = append(s.seen, req.Method+" "+req.Host+" "+string(body))
			s.mu.Unlock()
			a.received.Add(1)
			switch {
			case req.Method == http.MethodConnect:
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				io.Copy(c, br)
				return
			case req.Header.Get("Upgrade") != "":
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				io.Copy(c, br)
				return
			}
			msg := "ok " + req.Host + " " + string(body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
		}
	})
	return s
}

func (s *reqServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// withoutNameDeny removes reqPod's virtual host that denies
// evil.example.com, so that no rule by name denies anything at its port.
func withoutNameDeny(pd *pod) {
	cfg := pd.cfg.Load()
	for _, rc := range cfg.Routes {
		rc.VirtualHosts = slices.DeleteFunc(rc.VirtualHosts, func(vh *model.VirtualHost) bool { return vh.Name == "evil.example.com" })
	}
	pd.cfg.Store(cfg)
}

// reqPod is a pod whose outbound listener has an HTTP chain on the
// server's port: api.example.com and docs.example.com allowed (rules 1 and
// 2), evil.example.com denied (rule 0), anything else left to ALLOW_ANY.
// The names resolve to the server's address for this pod, docs.example.com
// to another. nameRule adds a TLS Deny rule by name on every port (so a
// connection without a name there is name_unknown).
func reqPod(t testing.TB, mode string, nameRule bool, srv *reqServer, mods ...func(*Config)) (*pod, chan audit.Event) {
	t.Helper()
	clk := testutil.FakeClock(t)
	resolves := map[string]string{"api.example.com": "127.0.0.1", "docs.example.com": "127.0.0.2", "evil.example.com": "127.0.0.1"}
	names := dnsproxy.NewNames(dnsproxy.Config{Clock: clk, Lookup: func(_ context.Context, name string) ([]netip.Addr, error) {
		if a, ok := resolves[name]; ok {
			return []netip.Addr{netip.MustParseAddr(a)}, nil
		}
		return nil, errors.New("no such host")
	}})
	events := make(chan audit.Event, 64)
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("shop", "frontend"), func(c *Config) {
		c.Names = names
		c.Audit = func(e audit.Event) { events <- e }
		for _, m := range mods {
			m(c)
		}
	})
	meta := func(rule, decision string) *model.EgressMeta {
		return &model.EgressMeta{Policy: reqPolicy, Rule: rule, Decision: decision, Mode: mode}
	}
	evil := &model.VirtualHost{Name: "evil.example.com", Domains: []string{"evil.example.com"}, Egress: meta("0", "deny"),
		Deny: &model.DirectResponse{Status: 403, Body: "weft: egress to evil.example.com denied by " + reqPolicy + " rule 0\n"}}
	evilTLS := &model.FilterChain{Name: "egress|*|tls|deny|" + reqPolicy + "#0", Match: model.ChainMatch{TransportProtocol: "tls", ServerNames: []string{"evil.example.com"}},
		Target: model.Target{Cluster: "BlackHoleCluster"}, AccessLog: true, Egress: meta("0", "deny")}
	if mode == "Audit" {
		evil = &model.VirtualHost{Name: "evil.example.com", Domains: []string{"evil.example.com"}, Egress: meta("0", "audit"), Cluster: "PassthroughCluster"}
		evilTLS.Target, evilTLS.Egress = model.Target{Cluster: "PassthroughCluster"}, meta("0", "audit")
	}
	outbound := &model.EgressMeta{Decision: "allow", Outbound: "ALLOW_ANY"}
	rc := "egress|" + strconv.Itoa(int(srv.app.port()))
	chains := []*model.FilterChain{{Name: rc + "|http",
		Match:  model.ChainMatch{DestPort: srv.app.port(), TransportProtocol: "raw_buffer", AppProtocols: []string{"http/1.0", "http/1.1", "h2c"}},
		Target: model.Target{RouteConfig: rc, StripAnyHostPort: true}, AccessLog: true, Egress: outbound}}
	if nameRule {
		chains = append(chains, evilTLS)
	}
	pd.cfg.Store(&model.Config{
		Outbound: &model.Listener{Name: model.OutboundListener, UseOriginalDst: true, InspectTLS: true, InspectHTTP: true, Chains: chains,
			Default: &model.FilterChain{Name: "egress|default", Target: model.Target{Cluster: "PassthroughCluster"}, AccessLog: true, Egress: outbound}},
		Clusters: map[string]*model.Cluster{
			"PassthroughCluster": {Name: "PassthroughCluster", Kind: model.KindOriginalDst, ConnectTimeout: time.Second},
			"BlackHoleCluster":   {Name: "BlackHoleCluster", Kind: model.KindBlackhole},
		},
		Routes: map[string]*model.RouteConfig{rc: {Name: rc, VirtualHosts: []*model.VirtualHost{
			{Name: "api.example.com", Domains: []string{"api.example.com"}, Egress: meta("1", "allow"), Cluster: "PassthroughCluster"},
			{Name: "docs.example.com", Domains: []string{"docs.example.com"}, Egress: meta("2", "allow"), Cluster: "PassthroughCluster"},
			evil,
			{Name: "*", Domains: []string{"*"}, Egress: outbound, Cluster: "PassthroughCluster"},
		}}},
	})
	return pd, events
}

func get(host string) string { return "GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n" }

// exchange writes each of reqs to one connection (all at once when
// pipelined, else each after the response to the one before) and returns
// the responses read and whether the proxy closed the connection.
func exchange(t *testing.T, pd *pod, dst netip.AddrPort, pipelined bool, reqs ...string) (resps []*http.Response, bodies []string, closed bool) {
	t.Helper()
	c := pd.dialOutbound(dst)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if pipelined {
		if _, err := io.WriteString(c, strings.Join(reqs, "")); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range reqs {
		if !pipelined {
			if _, err := io.WriteString(c, r); err != nil {
				return resps, bodies, true
			}
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return resps, bodies, true
		}
		b, _ := io.ReadAll(resp.Body)
		resps, bodies = append(resps, resp), append(bodies, string(b))
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := br.ReadByte()
	var ne net.Error
	return resps, bodies, !(errors.As(err, &ne) && ne.Timeout())
}

func statuses(resps []*http.Response) []int {
	var out []int
	for _, r := range resps {
		out = append(out, r.StatusCode)
	}
	return out
}

// events reads n audit events.
func takeEvents(t *testing.T, events chan audit.Event, n int) []audit.Event {
	t.Helper()
	var out []audit.Event
	for range n {
		out = append(out, nextEvent(t, events))
	}
	select {
	case e := <-events:
		t.Fatalf("an audit event more than the %d expected: %+v", n, e)
	case <-time.After(50 * time.Millisecond):
	}
	return out
}

func describe(es []audit.Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Host+" "+e.Decision+" "+e.Rule)
	}
	return out
}

// TestEveryRequestIsDecided: on one connection, a request for a denied
// host after an allowed one — sent after its response (keep-alive) or in
// the same write (pipelined) — gets the 403 after the allowed response, the
// connection closes, the server never sees it, and the audit trail has one
// record per request.
func TestEveryRequestIsDecided(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
			srv := startReqServer(t)
			pd, events := reqPod(t, "Enforce", false, srv)
			resps, bodies, closed := exchange(t, pd, srv.app.addr(), pipelined,
				get("api.example.com"), get("evil.example.com"), get("api.example.com"))
			if got := statuses(resps); !slices.Equal(got, []int{200, 403}) || !closed {
				t.Fatalf("statuses %v (closed %v), want [200 403] and the connection closed; bodies %q", got, closed, bodies)
			}
			if !strings.Contains(bodies[1], "denied by "+reqPolicy+" rule 0") {
				t.Fatalf("403 body %q", bodies[1])
			}
			if got := srv.requests(); !slices.Equal(got, []string{"GET api.example.com "}) {
				t.Fatalf("the server saw %q, want only the allowed request", got)
			}
			es := takeEvents(t, events, 2)
			if got := describe(es); !slices.Equal(got, []string{"api.example.com allow 1", "evil.example.com deny 0"}) {
				t.Fatalf("audit %q", got)
			}
			if es[0].BytesSent != int64(len(get("api.example.com"))) || es[0].BytesReceived == 0 {
				t.Fatalf("allowed request's bytes: sent %d received %d", es[0].BytesSent, es[0].BytesReceived)
			}
			pd.waitCounter(1, "egress_http_requests", "allow")
			pd.waitCounter(1, "egress_http_requests", "deny")
			pd.waitCounter(1, "connection_failures", outbound, reasonHTTPDenied)
		})
	}
}

// TestKeepAliveRequestsEachAudited: allowed requests with bodies
// (Content-Length and chunked) on one connection are all forwarded, each
// audited with its own bytes; a request hidden in a body is a body.
func TestKeepAliveRequestsEachAudited(t *testing.T) {
	srv := startReqServer(t)
	pd, events := reqPod(t, "Enforce", false, srv)
	hidden := get("evil.example.com")
	reqs := []string{
		"POST /a HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: " + strconv.Itoa(len(hidden)) + "\r\n\r\n" + hidden,
		"POST /b HTTP/1.1\r\nHost: other.org\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strconv.FormatInt(int64(len(hidden)), 16) + "\r\n" + hidden + "\r\n0\r\nX-Trailer: 1\r\n\r\n",
		get("api.example.com"),
	}
	resps, bodies, closed := exchange(t, pd, srv.app.addr(), true, reqs...)
	if got := statuses(resps); !slices.Equal(got, []int{200, 200, 200}) || closed {
		t.Fatalf("statuses %v closed %v bodies %q", got, closed, bodies)
	}
	want := []string{"POST api.example.com " + hidden, "POST other.org " + hidden, "GET api.example.com "}
	if got := srv.requests(); !slices.Equal(got, want) {
		t.Fatalf("the server saw %q, want %q", got, want)
	}
	es := takeEvents(t, events, 3)
	if got := describe(es); !slices.Equal(got, []string{"api.example.com allow 1", "other.org allow ", "api.example.com allow 1"}) {
		t.Fatalf("audit %q", got)
	}
	for i, e := range es {
		if e.BytesSent != int64(len(reqs[i])) {
			t.Errorf("request %d: audited %d bytes sent, it has %d", i, e.BytesSent, len(reqs[i]))
		}
		if e.BytesReceived <= int64(len(bodies[i])) || e.BytesReceived > int64(len(bodies[i]))+100 {
			t.Errorf("request %d: audited %d bytes received for a %d-byte body", i, e.BytesReceived, len(bodies[i]))
		}
	}
}

// TestAmbiguousBodyFramingRefused: a request whose body another server
// could delimit differently (where the next request starts) is refused
// before a byte of it leaves.
func TestAmbiguousBodyFramingRefused(t *testing.T) {
	srv := startReqServer(t)
	pd, events := reqPod(t, "Enforce", false, srv)
	for i, r := range []string{
		"POST / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
		"POST / HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length : 5\r\n\r\nhello",
	} {
		// After an allowed request, so that it is a later request on the
		// connection, not the first.
		resps, _, closed := exchange(t, pd, srv.app.addr(), false, get("api.example.com"), r)
		if got := statuses(resps); !slices.Equal(got, []int{200, 400}) || !closed {
			t.Fatalf("%q: statuses %v closed %v", r, got, closed)
		}
		if n := len(srv.requests()); n != i+1 {
			t.Fatalf("%q: the server saw %d requests in all, want %d", r, n, i+1)
		}
		es := takeEvents(t, events, 2)
		if es[1].Decision != "deny" {
			t.Fatalf("%q: audit %+v", r, es[1])
		}
	}
}

// TestLaterRequestNameBound: a later request's Host is bound to the
// destination address as the first request's is.
func TestLaterRequestNameBound(t *testing.T) {
	srv := startReqServer(t)
	pd, events := reqPod(t, "Enforce", false, srv)
	resps, bodies, closed := exchange(t, pd, srv.app.addr(), false, get("api.example.com"), get("docs.example.com"))
	if got := statuses(resps); !slices.Equal(got, []int{200, 403}) || !closed || !strings.Contains(bodies[1], "does not resolve to 127.0.0.1") {
		t.Fatalf("statuses %v closed %v bodies %q", got, closed, bodies)
	}
	es := takeEvents(t, events, 2)
	if es[1].Decision != "deny" || es[1].Host != "docs.example.com" || !strings.HasPrefix(es[1].Reason, reasonNameMismatch+": ") {
		t.Fatalf("audit %+v", es[1])
	}
	pd.waitCounter(1, "egress_name_bindings", bindMismatchDenied)
}

// TestConnectDecidedAsTCP: a CONNECT is decided as opaque TCP to the
// connection's destination, never by its authority or by the request
// before it. Where a rule by name applies to the port, it has no name:
// denied (name_unknown), after an allowed GET or first. Where none does,
// the tunnel is allowed and its bytes belong to the CONNECT's record.
func TestConnectDecidedAsTCP(t *testing.T) {
	connect := "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n"
	t.Run("a rule by name applies: denied", func(t *testing.T) {
		srv := startReqServer(t)
		pd, events := reqPod(t, "Enforce", true, srv)
		for _, reqs := range [][]string{{get("api.example.com"), connect}, {connect}} {
			resps, bodies, closed := exchange(t, pd, srv.app.addr(), false, reqs...)
			want := append(slices.Repeat([]int{200}, len(reqs)-1), 403)
			if got := statuses(resps); !slices.Equal(got, want) || !closed || !strings.Contains(bodies[len(bodies)-1], "CONNECT api.example.com:443 denied") {
				t.Fatalf("%d requests: statuses %v closed %v bodies %q", len(reqs), got, closed, bodies)
			}
			es := takeEvents(t, events, len(reqs))
			last := es[len(es)-1]
			if last.Decision != "deny" || last.Policy != reqPolicy || last.Rule != "0" || !strings.HasPrefix(last.Reason, reasonNameUnknown+": CONNECT") {
				t.Fatalf("CONNECT audit %+v", last)
			}
		}
		if got := srv.requests(); slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "CONNECT") }) {
			t.Fatalf("the server saw %q", got)
		}
		pd.waitCounter(2, "egress_name_unknown", unknownDenied)
	})
	t.Run("no rule by name: a tunnel", func(t *testing.T) {
		srv := startReqServer(t)
		pd, events := reqPod(t, "Enforce", false, srv)
		// Without the Deny rule for evil.example.com no rule by name
		// denies anything at this port.
		withoutNameDeny(pd)
		c := pd.dialOutbound(srv.app.addr())
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		io.WriteString(c, get("api.example.com")+connect)
		for _, want := range []int{200, 200} {
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil || resp.StatusCode != want {
				t.Fatalf("response %v %v", resp, err)
			}
			if want == 200 && resp.ContentLength > 0 {
				io.CopyN(io.Discard, resp.Body, resp.ContentLength)
			}
		}
		// Bytes that look like a request for a denied host are tunnel
		// bytes now: echoed, not decided.
		tunnelled := get("evil.example.com")
		io.WriteString(c, tunnelled)
		back := make([]byte, len(tunnelled))
		if _, err := io.ReadFull(br, back); err != nil || string(back) != tunnelled {
			t.Fatalf("tunnel echoed %q, %v", back, err)
		}
		c.CloseWrite()
		io.Copy(io.Discard, br)
		es := takeEvents(t, events, 2)
		if es[1].Decision != "allow" || es[1].Host != "api.example.com:443" || es[1].Reason != "" ||
			es[1].BytesSent != int64(len(connect)+len(tunnelled)) {
			t.Fatalf("CONNECT audit %+v", es[1])
		}
	})
}

// TestUpgradeTunnels: after a 101 to a websocket upgrade the bytes are
// the upgraded protocol's, not requests; an upgrade to anything else (h2c
// would carry requests for other hosts) is refused.
func TestUpgradeTunnels(t *testing.T) {
	srv := startReqServer(t)
	pd, events := reqPod(t, "Enforce", false, srv)
	c := pd.dialOutbound(srv.app.addr())
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	frame := get("evil.example.com")
	io.WriteString(c, frame)
	back := make([]byte, len(frame))
	if _, err := io.ReadFull(br, back); err != nil || string(back) != frame {
		t.Fatalf("echoed %q, %v", back, err)
	}
	c.CloseWrite()
	io.Copy(io.Discard, br)
	if es := takeEvents(t, events, 1); es[0].Decision != "allow" || es[0].Host != "api.example.com" {
		t.Fatalf("audit %+v", es[0])
	}
	for _, head := range []string{
		"GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: api.example.com\r\nHTTP2-Settings: AAMAAABk\r\n\r\n",
	} {
		resps, _, closed := exchange(t, pd, srv.app.addr(), false, head)
		if got := statuses(resps); !slices.Equal(got, []int{400}) || !closed {
			t.Fatalf("%q: statuses %v closed %v", head, got, closed)
		}
		if e := takeEvents(t, events, 1)[0]; e.Decision != "deny" || e.Policy != "" || e.Rule != "" || !strings.HasPrefix(e.Reason, "bad_request: ") {
			t.Fatalf("%q: audit %+v (a refusal no rule made names no rule)", head, e)
		}
	}
	if n := len(srv.requests()); n != 1 {
		t.Fatalf("the server saw %d requests, want the websocket one", n)
	}
}

// TestEveryRequestFlaggedUnderAudit: under an Audit-mode policy the
// denied host's request is forwarded and flagged, the connection stays.
func TestEveryRequestFlaggedUnderAudit(t *testing.T) {
	srv := startReqServer(t)
	pd, events := reqPod(t, "Audit", false, srv)
	resps, _, closed := exchange(t, pd, srv.app.addr(), true, get("api.example.com"), get("evil.example.com"), get("api.example.com"))
	if got := statuses(resps); !slices.Equal(got, []int{200, 200, 200}) || closed {
		t.Fatalf("statuses %v closed %v", got, closed)
	}
	if got := describe(takeEvents(t, events, 3)); !slices.Equal(got, []string{"api.example.com allow 1", "evil.example.com audit 0", "api.example.com allow 1"}) {
		t.Fatalf("audit %q", got)
	}
	pd.waitCounter(1, "egress_http_requests", "audit")
}

// TestServerCloseEndsConnection: a server that closes after a response
// (Connection: close) closes the app's connection too, at once.
func TestServerCloseEndsConnection(t *testing.T) {
	srv := startApp(t, func(c *net.TCPConn, a *app) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		}
	})
	pd, _ := reqPod(t, "Enforce", false, &reqServer{app: srv})
	c := pd.dialOutbound(srv.addr())
	defer c.Close()
	io.WriteString(c, get("api.example.com"))
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.HasSuffix(got, []byte("\r\n\r\nok")) {
		t.Fatalf("got %q, %v (want the response, then the end)", got, err)
	}
}
