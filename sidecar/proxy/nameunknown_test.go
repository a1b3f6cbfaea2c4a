package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// The app is the attacker: an EgressPolicy (shop/deny-evil) denies
// evil.example.com by SNI on every port and by Host on the HTTP server's
// port, under ALLOW_ANY, and allows allowed.example.com / api.example.com.
// The app tries to reach evil.example.com with bytes that servers accept
// but that an older sniffer did not read, or with no name at all.

const denyEvil = "shop/deny-evil"

// unknownSniffTimeout is the pods' wait for a first byte.
const unknownSniffTimeout = 300 * time.Millisecond

// unknownEnv is pod A with that policy in one mode, two "external"
// servers on loopback (echo; HTTP, which skips leading empty lines as RFC
// 9112 lets servers do), and the pod's audit events.
type unknownEnv struct {
	pod      *pod
	echo     *app
	web      *app
	events   chan audit.Event
	mode     string
	registry bool
}

func newUnknownEnv(t *testing.T, mode string, registryOnly bool, handshakeTimeout time.Duration) *unknownEnv {
	t.Helper()
	env := &unknownEnv{events: make(chan audit.Event, 16), mode: mode, registry: registryOnly}
	env.echo = startApp(t, nil)
	env.web = startApp(t, func(c *net.TCPConn, a *app) {
		br := bufio.NewReader(c)
		for {
			b, err := br.Peek(1)
			if err != nil {
				return
			}
			if b[0] != '\r' && b[0] != '\n' {
				break
			}
			br.Discard(1)
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		a.received.Add(1)
		body := "ok " + req.Host
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
	})
	env.pod = startPod(t, testutil.NewCA(t, td, nil), workloadID("shop", "frontend"), func(c *Config) {
		c.Audit = func(e audit.Event) { env.events <- e }
		// Long enough that a loaded machine does not make a client that
		// writes at once look silent (or a 1ms pause look like a stop).
		c.SniffTimeout = unknownSniffTimeout
		if handshakeTimeout > 0 {
			c.HandshakeTimeout = handshakeTimeout
		}
	})
	env.pod.cfg.Store(env.config())
	return env
}

// config is the outbound listener as the translator writes it for the
// policy (sidecar/xds README, "Match semantics").
func (env *unknownEnv) config() *model.Config {
	meta := func(rule, decision string) *model.EgressMeta {
		return &model.EgressMeta{Policy: denyEvil, Rule: rule, Decision: decision, Mode: env.mode}
	}
	deny, denyTarget := meta("0", "deny"), model.Target{Cluster: "BlackHoleCluster"}
	evilVH := &model.VirtualHost{Name: "evil.example.com", Domains: []string{"evil.example.com"}, Egress: deny,
		Deny: &model.DirectResponse{Status: 403, Body: "weft: egress to evil.example.com denied by " + denyEvil + " rule 0\n"}}
	if env.mode == "Audit" {
		deny, denyTarget = meta("0", "audit"), model.Target{Cluster: "PassthroughCluster"}
		evilVH = &model.VirtualHost{Name: "evil.example.com", Domains: []string{"evil.example.com"}, Egress: deny, Cluster: "PassthroughCluster"}
	}
	outbound := &model.EgressMeta{Decision: "allow", Outbound: "ALLOW_ANY"}
	def := model.Target{Cluster: "PassthroughCluster"}
	catchAll := &model.VirtualHost{Name: "*", Domains: []string{"*"}, Egress: outbound, Cluster: "PassthroughCluster"}
	if env.registry {
		outbound, def = &model.EgressMeta{Decision: "deny", Outbound: "REGISTRY_ONLY"}, model.Target{Cluster: "BlackHoleCluster"}
		catchAll = &model.VirtualHost{Name: "*", Domains: []string{"*"}, Egress: outbound,
			Deny: &model.DirectResponse{Status: 403, Body: "weft: egress to this host denied by outbound policy REGISTRY_ONLY\n"}}
	}
	rc := "egress|" + strconv.Itoa(int(env.web.port()))
	return &model.Config{
		Outbound: &model.Listener{Name: model.OutboundListener, UseOriginalDst: true, InspectTLS: true, InspectHTTP: true,
			Chains: []*model.FilterChain{
				{Name: "egress|*|tls|allow|" + denyEvil + "#1", Match: model.ChainMatch{TransportProtocol: "tls", ServerNames: []string{"allowed.example.com"}},
					Target: model.Target{Cluster: "PassthroughCluster"}, AccessLog: true, Egress: meta("1", "allow")},
				{Name: "egress|*|tls|" + deny.Decision + "|" + denyEvil + "#0", Match: model.ChainMatch{TransportProtocol: "tls", ServerNames: []string{"evil.example.com"}},
					Target: denyTarget, AccessLog: true, Egress: deny},
				{Name: rc + "|http", Match: model.ChainMatch{DestPort: env.web.port(), TransportProtocol: "raw_buffer", AppProtocols: []string{"http/1.0", "http/1.1", "h2c"}},
					Target: model.Target{RouteConfig: rc, StripAnyHostPort: true}, AccessLog: true, Egress: outbound},
			},
			Default: &model.FilterChain{Name: "egress|default", Target: def, AccessLog: true, Egress: outbound},
		},
		Clusters: map[string]*model.Cluster{
			"PassthroughCluster": {Name: "PassthroughCluster", Kind: model.KindOriginalDst, ConnectTimeout: time.Second},
			"BlackHoleCluster":   {Name: "BlackHoleCluster", Kind: model.KindBlackhole},
		},
		Routes: map[string]*model.RouteConfig{rc: {Name: rc, VirtualHosts: []*model.VirtualHost{
			{Name: "api.example.com", Domains: []string{"api.example.com"}, Egress: meta("1", "allow"), Cluster: "PassthroughCluster"},
			evilVH, catchAll,
		}}},
	}
}

// hostile is one way to send a connection's first bytes.
type hostile struct {
	name   string
	web    bool          // to the HTTP server (else the echo server)
	wait   time.Duration // before the first byte
	chunks [][]byte      // written one by one,
	gap    time.Duration // this long apart
	// unknown: the name cannot be learned, and the name_unknown reason
	// contains this; "" when the sniffer reads the name (evil.example.com).
	unknown string
	// handshakeTimeout: the pod's (the sniff deadline); 0 keeps 5s.
	handshakeTimeout time.Duration
}

// send plays h to env's server and returns what came back.
func (h hostile) send(t *testing.T, env *unknownEnv) (sent, got []byte) {
	t.Helper()
	dst := env.echo.addr()
	if h.web {
		dst = env.web.addr()
	}
	c := env.pod.dialOutbound(dst)
	// The hostile timing is what the case tests: the sniffer must learn the
	// name, or say why not, however the bytes are spread out.
	time.Sleep(h.wait)
	for i, ch := range h.chunks {
		if i > 0 {
			time.Sleep(h.gap)
		}
		_, _ = c.Write(ch) // the proxy may have closed already
		sent = append(sent, ch...)
	}
	if !h.web {
		_ = c.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ = io.ReadAll(c)
	c.Close()
	return sent, got
}

func bytewise(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

func hostileCases(t *testing.T) []hostile {
	evil := smallHello(t, "evil.example.com")
	get := func(s string) [][]byte { return [][]byte{[]byte(s)} }
	return []hostile{
		{name: "HTTP Host, plain", web: true, chunks: get("GET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n")},
		{name: "HTTP leading CRLF", web: true, chunks: get("\r\nGET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n")},
		{name: "HTTP lowercase method", web: true, chunks: get("get / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n")},
		{name: "HTTP 10 KiB request line", web: true,
			chunks: get("GET /" + strings.Repeat("a", 10<<10) + " HTTP/1.1\r\nHost: evil.example.com\r\n\r\n")},
		{name: "HTTP absolute-form", web: true, chunks: get("GET http://evil.example.com/ HTTP/1.1\r\n\r\n")},
		{name: "HTTP/1.0", web: true, chunks: get("GET / HTTP/1.0\r\nHost: evil.example.com\r\n\r\n")},
		{name: "HTTP where only a TLS rule names hosts", chunks: get("GET / HTTP/1.1\r\nHost: allowed.example.com\r\n\r\n"),
			unknown: "HTTP request on a chain that does not route by Host"},
		{name: "bytes neither TLS nor HTTP, on the HTTP port", web: true, chunks: get("\x00\x01evil.example.com\n"),
			unknown: "neither a TLS ClientHello nor an HTTP request"},
		{name: "ClientHello, one record", chunks: [][]byte{evil}},
		{name: "ClientHello in 1-byte segments, 2ms apart", chunks: bytewise(evil), gap: 2 * time.Millisecond},
		{name: "ClientHello in two records", chunks: [][]byte{splitRecords(evil, 60)}},
		{name: "ClientHello in two records, two segments", chunks: [][]byte{splitRecords(evil, 60)[:65], splitRecords(evil, 60)[65:]},
			gap: 20 * time.Millisecond},
		{name: "ClientHello stalled past the sniff deadline", chunks: [][]byte{evil[:40], evil[40:]}, gap: 1200 * time.Millisecond,
			handshakeTimeout: 500 * time.Millisecond, unknown: "ClientHello incomplete after 40 bytes (then stalled past the sniff deadline)"},
		{name: "ClientHello without SNI", chunks: [][]byte{smallHello(t, "")}, unknown: "ClientHello without server_name"},
		{name: "ClientHello with ECH", chunks: [][]byte{withExtension(t, smallHello(t, "public.example.net"), extECH, echOuter())},
			unknown: `ClientHello with encrypted_client_hello (outer server_name "public.example.net")`},
		{name: "ClientHello with ECH, outer name allowed", chunks: [][]byte{withExtension(t, smallHello(t, "allowed.example.com"), extECH, echOuter())},
			unknown: "encrypted_client_hello"},
		{name: "ClientHello naming two hosts", chunks: [][]byte{withExtension(t, smallHello(t, ""), extServerName, sniExt("allowed.example.com", "evil.example.com"))},
			unknown: "2 host names in server_name"},
		{name: "unparseable bytes", chunks: get("\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"), unknown: "not a ClientHello: handshake type 2"},
		{name: "nothing sent first", wait: 2 * unknownSniffTimeout, chunks: get("late bytes"), unknown: "nothing sent within 300ms"},
	}
}

// TestHostileNamesEnforce: under Enforce every variant is refused before a
// byte leaves the pod, counted and audited: by the Deny rule where the
// sniffer reads evil.example.com, as name_unknown (with its reason) where
// no name can be read.
func TestHostileNamesEnforce(t *testing.T) {
	t.Parallel()
	for _, h := range hostileCases(t) {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			env := newUnknownEnv(t, "Enforce", false, h.handshakeTimeout)
			_, got := h.send(t, env)
			e := nextEvent(t, env.events)
			if e.Decision != "deny" || e.Policy != denyEvil || e.Rule != "0" {
				t.Fatalf("audit event %+v: want a deny by %s rule 0", e, denyEvil)
			}
			switch {
			case h.unknown != "":
				env.pod.waitCounter(1, "connection_failures", outbound, reasonNameUnknown)
				env.pod.waitCounter(1, "egress_name_unknown", unknownDenied)
				if !strings.HasPrefix(e.Reason, reasonNameUnknown+": ") || !strings.Contains(e.Reason, h.unknown) {
					t.Fatalf("audit reason %q: want name_unknown: ...%s...", e.Reason, h.unknown)
				}
				if len(got) != 0 {
					t.Fatalf("got %q back, want the connection closed", got)
				}
			case h.web:
				env.pod.waitCounter(1, "connection_failures", outbound, "http_denied")
				if !bytes.HasPrefix(got, []byte("HTTP/1.1 403 ")) || e.Host == "" || e.Reason != "" {
					t.Fatalf("got %q, event %+v: want a 403 and the Host audited", got, e)
				}
			default:
				env.pod.waitCounter(1, "connection_failures", outbound, "blackhole")
				if e.SNI != "evil.example.com" || e.Reason != "" || len(got) != 0 {
					t.Fatalf("got %q, event %+v: want the SNI audited and nothing back", got, e)
				}
			}
			if n := env.echo.accepted.Load() + env.web.accepted.Load(); n != 0 {
				t.Fatalf("the servers accepted %d connections", n)
			}
		})
	}
}

// TestHostileNamesAudit: under an Audit-mode policy the same connections
// are forwarded, unchanged, and flagged: decision audit, with the
// name_unknown reason where no name could be read.
func TestHostileNamesAudit(t *testing.T) {
	t.Parallel()
	for _, h := range hostileCases(t) {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			env := newUnknownEnv(t, "Audit", false, h.handshakeTimeout)
			sent, got := h.send(t, env)
			if h.web {
				waitAccepted(t, env.web, 1)
			} else if !bytes.Equal(got, sent) {
				t.Fatalf("echo: got %d bytes back, sent %d", len(got), len(sent))
			}
			e := nextEvent(t, env.events)
			if e.Decision != "audit" || e.Policy != denyEvil || e.Rule != "0" {
				t.Fatalf("audit event %+v: want audit by %s rule 0", e, denyEvil)
			}
			if h.unknown != "" {
				env.pod.waitCounter(1, "egress_name_unknown", unknownFlagged)
				if !strings.HasPrefix(e.Reason, reasonNameUnknown+": ") || !strings.Contains(e.Reason, h.unknown) {
					t.Fatalf("audit reason %q: want name_unknown: ...%s...", e.Reason, h.unknown)
				}
			} else if e.Reason != "" {
				t.Fatalf("audit reason %q for a connection whose name was read", e.Reason)
			}
			if got := env.pod.counter("connection_failures", outbound, reasonNameUnknown); got != 0 {
				t.Fatalf("name_unknown refusals: %v", got)
			}
		})
	}
}

// TestLegitimateEgressUnderNameRules: what a rule by name does not deny
// still goes through, unflagged: allowed and unnamed hosts by SNI and
// Host, a request that trickles in a byte at a time.
func TestLegitimateEgressUnderNameRules(t *testing.T) {
	env := newUnknownEnv(t, "Enforce", false, 0)
	for i, sni := range []string{"allowed.example.com", "other.org"} {
		hello := smallHello(t, sni)
		sent, got := hostile{chunks: [][]byte{hello}}.send(t, env)
		if !bytes.Equal(got, sent) {
			t.Fatalf("SNI %s: got %d bytes back, sent %d", sni, len(got), len(sent))
		}
		if e := nextEvent(t, env.events); e.Decision != "allow" || e.SNI != sni || e.Reason != "" {
			t.Fatalf("SNI %s: audit event %+v", sni, e)
		}
		waitAccepted(t, env.echo, int64(i+1))
	}
	for i, req := range []string{
		"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
		"\r\nget /x HTTP/1.1\r\nhost: API.Example.com.\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: other.org\r\n\r\n",
	} {
		_, got := hostile{web: true, chunks: bytewise([]byte(req)), gap: time.Millisecond}.send(t, env)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%q: %q %v", req, got, err)
		}
		if e := nextEvent(t, env.events); e.Decision != "allow" || e.Reason != "" {
			t.Fatalf("%q: audit event %+v", req, e)
		}
		waitAccepted(t, env.web, int64(i+1))
	}
	if n := env.pod.counter("connection_failures", outbound, reasonNameUnknown); n != 0 {
		t.Fatalf("name_unknown refusals: %v", n)
	}
	// Two Host headers (net/http refuses them), an absolute-form target
	// and a Host that differ, a Host folded over two lines: another server
	// could take another name from them; the proxy answers 400.
	for i, req := range []string{
		"GET / HTTP/1.1\r\nHost: api.example.com\r\nHost: evil.example.com\r\n\r\n",
		"GET http://evil.example.com/ HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil\r\n .example.com\r\n\r\n",
	} {
		_, got := hostile{web: true, chunks: [][]byte{[]byte(req)}}.send(t, env)
		if !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) {
			t.Fatalf("%q: %q", req, got)
		}
		env.pod.waitCounter(float64(i+1), "connection_failures", outbound, "bad_request")
		nextEvent(t, env.events)
	}
	if n := env.web.accepted.Load(); n != 3 {
		t.Fatalf("the server accepted %d connections, want 3", n)
	}
}

// TestNameUnknownUnderRegistryOnly: under REGISTRY_ONLY a connection
// without a name is refused by the default chain already (blackhole), as
// before; name_unknown is not needed.
func TestNameUnknownUnderRegistryOnly(t *testing.T) {
	env := newUnknownEnv(t, "Enforce", true, 0)
	_, got := hostile{chunks: [][]byte{smallHello(t, "")}}.send(t, env)
	if len(got) != 0 {
		t.Fatalf("got %q", got)
	}
	env.pod.waitCounter(1, "connection_failures", outbound, "blackhole")
	if e := nextEvent(t, env.events); e.Decision != "deny" || e.Outbound != "REGISTRY_ONLY" || e.Reason != "" {
		t.Fatalf("audit event %+v", e)
	}
	if n := env.pod.counter("egress_name_unknown", unknownDenied); n != 0 {
		t.Fatalf("name_unknown denials: %v", n)
	}
}

// TestNothingSniffedIsNameUnknown: a listener that inspects nothing (the
// sidecar's validator NACKs one with chains by name, but the proxy does not
// rely on it) learns no name; where a rule by name applies, the connection
// is refused as name_unknown, "nothing sniffed".
func TestNothingSniffedIsNameUnknown(t *testing.T) {
	env := newUnknownEnv(t, "Enforce", false, 0)
	cfg := env.config()
	cfg.Outbound.InspectTLS, cfg.Outbound.InspectHTTP = false, false
	env.pod.cfg.Store(cfg)
	c := env.pod.dialOutbound(env.echo.addr())
	_, _ = c.Write([]byte("hello"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, _ := io.ReadAll(c); len(got) != 0 {
		t.Fatalf("got %q back, want the connection closed", got)
	}
	e := nextEvent(t, env.events)
	if want := reasonNameUnknown + ": nothing sniffed"; !strings.HasPrefix(e.Reason, want) {
		t.Fatalf("audit reason %q, want %s (...)", e.Reason, want)
	}
	env.pod.waitCounter(1, "connection_failures", outbound, reasonNameUnknown)
}
