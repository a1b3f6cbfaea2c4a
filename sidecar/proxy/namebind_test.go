package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/dnsproxy"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// The app is the attacker here: it is allowed allowed.example.com (TLS) and
// api.example.com (HTTP) by an EgressPolicy, and sends those names to an
// address they do not resolve to (the "external" server on 127.0.0.1,
// while the names resolve to 127.0.0.2 for this pod).

// namePod is egressPod with a name table whose own lookups answer from
// resolves, the rules' mode set to mode, audit events collected, and (http)
// the HTTP chain on the external server's port.
func namePod(t *testing.T, mode string, resolves map[string]string, onHTTPPort bool) (*pod, *app, *dnsproxy.Names, chan audit.Event) {
	t.Helper()
	clk := testutil.FakeClock(t)
	names := dnsproxy.NewNames(dnsproxy.Config{Clock: clk, Lookup: func(_ context.Context, name string) ([]netip.Addr, error) {
		if a, ok := resolves[name]; ok {
			return []netip.Addr{netip.MustParseAddr(a)}, nil
		}
		return nil, errors.New("no such host")
	}})
	events := make(chan audit.Event, 16)
	ca := testutil.NewCA(t, td, nil)
	ext := startApp(t, func(c *net.TCPConn, a *app) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		a.received.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		_ = req
	})
	a := startPod(t, ca, workloadID("shop", "frontend"), func(c *Config) {
		c.Names = names
		c.Audit = func(e audit.Event) { events <- e }
	})
	cfg := meshConfig(nil, nil, nil, true)
	meta := func() *model.EgressMeta {
		return &model.EgressMeta{Policy: "shop/egress", Rule: "0", Decision: "allow", Mode: mode}
	}
	for _, fc := range cfg.Outbound.Chains {
		switch fc.Name {
		case "egress-allowed":
			fc.Egress = meta()
		case "egress-http":
			if onHTTPPort { // on ext's port (Envoy's order: a chain for the port takes it whole)
				fc.Match.DestPort = ext.port()
			}
			fc.Egress = &model.EgressMeta{Decision: "deny", Outbound: "REGISTRY_ONLY"}
		}
	}
	rc := cfg.Routes["egress|8080"]
	rc.VirtualHosts[0].Egress = meta()
	cfg.Routes["egress|"+strconv.Itoa(int(ext.port()))] = rc
	a.cfg.Store(cfg)
	return a, ext, names, events
}

func helloTo(a *pod, dst netip.AddrPort, sni string) *net.TCPConn {
	c := a.dialOutbound(dst)
	go func() {
		tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		_ = tc.Handshake()
	}()
	return c
}

func nextEvent(t *testing.T, events chan audit.Event) audit.Event {
	t.Helper()
	return testutil.Receive(t, events, "an audit event")
}

func waitAccepted(t *testing.T, ext *app, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for ext.accepted.Load() != want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := ext.accepted.Load(); got != want {
		t.Fatalf("destination accepted %d connections, want %d", got, want)
	}
}

// TestAllowedSNIToAnotherAddressIsRefused: under Enforce an allowed SNI
// sent to an address the name does not resolve to never leaves the pod;
// the refusal is counted (name_mismatch, mismatch_denied) and audited as a
// deny with the reason.
func TestAllowedSNIToAnotherAddressIsRefused(t *testing.T) {
	a, ext, _, events := namePod(t, "Enforce", map[string]string{"allowed.example.com": "127.0.0.2"}, false)
	expectClosed(t, helloTo(a, ext.addr(), "allowed.example.com"))
	a.waitCounter(1, "connection_failures", outbound, reasonNameMismatch)
	a.waitCounter(1, "egress_name_bindings", bindMismatchDenied)
	e := nextEvent(t, events)
	if e.Decision != "deny" || e.SNI != "allowed.example.com" || e.Policy != "shop/egress" ||
		!strings.HasPrefix(e.Reason, "name_mismatch: allowed.example.com does not resolve to 127.0.0.1 for this pod (it resolves to [127.0.0.2])") {
		t.Fatalf("audit event %+v: want a deny with the name_mismatch reason", e)
	}
	if n := ext.accepted.Load(); n != 0 {
		t.Fatalf("the destination accepted %d connections", n)
	}
}

// TestAllowedSNIToItsAddressPasses: the same name sent to an address it
// resolved to (by the sidecar's lookup, then from the table the lookup
// filled, then from an answer the pod's DNS got) is forwarded.
func TestAllowedSNIToItsAddressPasses(t *testing.T) {
	a, ext, names, events := namePod(t, "Enforce", map[string]string{"allowed.example.com": "127.0.0.1"}, false)
	helloTo(a, ext.addr(), "allowed.example.com")
	waitAccepted(t, ext, 1)
	a.waitCounter(1, "egress_name_bindings", string(dnsproxy.SourceLookup))
	helloTo(a, ext.addr(), "allowed.example.com")
	waitAccepted(t, ext, 2)
	a.waitCounter(1, "egress_name_bindings", string(dnsproxy.SourceDNS))
	names.Record("other-allowed.example.com", netip.MustParseAddr("127.0.0.1"), time.Minute)
	if got := a.counter("egress_name_bindings", bindMismatchDenied); got != 0 {
		t.Fatalf("mismatch_denied = %v", got)
	}
	select {
	case e := <-events:
		if e.Reason != "" {
			t.Fatalf("a bound connection's event has a reason: %+v", e)
		}
	case <-time.After(50 * time.Millisecond): // events come when connections end
	}
}

// TestAuditModeFlagsTheMismatch: under an Audit-mode policy the mismatch is
// forwarded, counted as flagged and audited as "audit" with the reason.
func TestAuditModeFlagsTheMismatch(t *testing.T) {
	a, ext, _, events := namePod(t, "Audit", map[string]string{"allowed.example.com": "127.0.0.2"}, false)
	c := helloTo(a, ext.addr(), "allowed.example.com")
	waitAccepted(t, ext, 1)
	a.waitCounter(1, "egress_name_bindings", bindMismatchFlagged)
	c.Close()
	e := nextEvent(t, events)
	if e.Decision != "audit" || !strings.HasPrefix(e.Reason, "name_mismatch: allowed.example.com does not resolve to 127.0.0.1") {
		t.Fatalf("audit event %+v: want decision audit with the name_mismatch reason", e)
	}
}

// TestAllowedHostToAnotherAddressIsRefused: the same for an HTTP Host: a
// 403 that says why, nothing reaches the address.
func TestAllowedHostToAnotherAddressIsRefused(t *testing.T) {
	a, ext, _, events := namePod(t, "Enforce", map[string]string{"api.example.com": "127.0.0.2"}, true)
	get := func(host string) (int, string) {
		c := a.dialOutbound(ext.addr())
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("api.example.com")
	if code != 403 || !strings.Contains(body, "weft: egress to api.example.com denied: api.example.com does not resolve to 127.0.0.1 for this pod") {
		t.Fatalf("allowed Host to another address: %d %q", code, body)
	}
	a.waitCounter(1, "connection_failures", outbound, reasonNameMismatch)
	if e := nextEvent(t, events); e.Decision != "deny" || e.Host != "api.example.com" || !strings.HasPrefix(e.Reason, "name_mismatch: ") {
		t.Fatalf("audit event %+v", e)
	}
	if n := ext.received.Load(); n != 0 {
		t.Fatalf("the destination received %d requests", n)
	}
	// The address itself as Host (no name to bind) is the default verdict's
	// business (here REGISTRY_ONLY: 403), not a mismatch.
	code, _ = get("127.0.0.1")
	if code != 403 || a.counter("egress_name_bindings", bindMismatchDenied) != 1 {
		t.Fatalf("IP Host: %d, mismatch_denied %v", code, a.counter("egress_name_bindings", bindMismatchDenied))
	}
}

// TestExternalNameBindsToTheService: a chain of an ExternalName Service's
// names (metadata service dev/api, host api.partner.com) binds a
// connection to what the cluster DNS answers for the Service,
// api.dev.svc.cluster.local, never to what the name sent resolves to:
// "api.dev" is a public name whoever owns it answers, so an app sending it
// to an address of its choosing is refused even where that name resolves
// there, and let through where the Service resolves there. The audit
// record names the Service and its target.
func TestExternalNameBindsToTheService(t *testing.T) {
	for _, tc := range []struct {
		name     string
		resolves map[string]string
		refused  bool
	}{
		{"the name sent resolves there, the Service elsewhere", map[string]string{"allowed.example.com": "127.0.0.1", "api.dev.svc.cluster.local": "127.0.0.2"}, true},
		{"the Service resolves there", map[string]string{"allowed.example.com": "127.0.0.2", "api.dev.svc.cluster.local": "127.0.0.1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, ext, _, events := namePod(t, "Enforce", tc.resolves, false)
			cfg := a.cfg.Load()
			for _, fc := range cfg.Outbound.Chains {
				if fc.Name == "egress-allowed" {
					fc.Egress.Service, fc.Egress.Host = "dev/api", "api.partner.com"
				}
			}
			c := helloTo(a, ext.addr(), "allowed.example.com")
			if tc.refused {
				expectClosed(t, c)
				a.waitCounter(1, "egress_name_bindings", bindMismatchDenied)
			} else {
				waitAccepted(t, ext, 1)
				c.Close()
			}
			e := nextEvent(t, events)
			if e.Service != "dev/api" || e.DstHost != "api.partner.com" || e.SNI != "allowed.example.com" {
				t.Fatalf("audit event %+v: want service dev/api, dstHost api.partner.com", e)
			}
			wantReason := "name_mismatch: api.dev.svc.cluster.local does not resolve to 127.0.0.1 for this pod"
			if tc.refused != strings.HasPrefix(e.Reason, wantReason) || tc.refused != (e.Decision == "deny") {
				t.Fatalf("audit event %+v: refused %v, want reason %q", e, tc.refused, wantReason)
			}
		})
	}
}
