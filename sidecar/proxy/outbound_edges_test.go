package proxy

import (
	"bufio"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Edges of the outbound path's egress name binding (outbound.go): which
// allowed connections are bound to the name they send, and what the
// refusal of one that is not says.

// TestAllowedByAddressIsNotBoundToTheName: a rule that allows a
// destination by address (a chain on its port and prefix, no
// server_names) decides without a name, so the SNI the app sends is not
// held to resolve to that address: the connection is forwarded, and no
// binding is counted either way.
func TestAllowedByAddressIsNotBoundToTheName(t *testing.T) {
	a, ext, _, _ := namePod(t, "Enforce", map[string]string{"allowed.example.com": "127.0.0.2"}, false)
	cfg := *a.cfg.Load()
	out := *cfg.Outbound
	byAddr := &model.FilterChain{Name: "egress-by-address",
		Match:  model.ChainMatch{DestPort: ext.port(), Prefixes: []netip.Prefix{netip.PrefixFrom(ext.addr().Addr(), 32)}},
		Target: model.Target{Cluster: "PassthroughCluster"},
		Egress: &model.EgressMeta{Policy: "shop/egress", Rule: "1", Decision: "allow", Mode: "Enforce"}}
	out.Chains = append(slices.Clone(out.Chains), byAddr)
	cfg.Outbound = &out
	a.cfg.Store(&cfg)
	helloTo(a, ext.addr(), "allowed.example.com")
	waitAccepted(t, ext, 1)
	for _, result := range []string{bindMismatchDenied, bindMismatchFlagged} {
		if got := a.counter("egress_name_bindings", result); got != 0 {
			t.Errorf("egress_name_bindings{%s} = %v, want 0", result, got)
		}
	}
}

// TestUnresolvableAllowedNameIsRefusedWithTheLookupError: an allowed SNI
// that does not resolve at all is refused under Enforce, and the audit
// event's reason says why it was not bound: the lookup's error, not an
// empty list of addresses.
func TestUnresolvableAllowedNameIsRefusedWithTheLookupError(t *testing.T) {
	a, ext, _, events := namePod(t, "Enforce", map[string]string{}, false)
	expectClosed(t, helloTo(a, ext.addr(), "allowed.example.com"))
	a.waitCounter(1, "egress_name_bindings", bindMismatchDenied)
	e := nextEvent(t, events)
	const want = "name_mismatch: allowed.example.com does not resolve to 127.0.0.1 for this pod ("
	if e.Decision != "deny" || !strings.HasPrefix(e.Reason, want) || !strings.Contains(e.Reason, "no such host") || strings.Contains(e.Reason, "resolves to [") {
		t.Fatalf("audit event %+v: want a deny whose reason gives the lookup's error", e)
	}
	if n := ext.accepted.Load(); n != 0 {
		t.Fatalf("the destination accepted %d connections", n)
	}
}

// TestAuditModeFlagsAHostMismatch: under an Audit-mode rule an allowed
// HTTP Host sent to an address it does not resolve to is forwarded, and
// its audit event says "audit" (the mode of the virtual host's rule, not
// of the chain's catch-all), with the reason.
func TestAuditModeFlagsAHostMismatch(t *testing.T) {
	a, ext, _, events := namePod(t, "Audit", map[string]string{"api.example.com": "127.0.0.2"}, true)
	c := a.dialOutbound(ext.addr())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("flagged request: %v %v, want the destination's 200", resp, err)
	}
	c.Close()
	a.waitCounter(1, "egress_name_bindings", bindMismatchFlagged)
	if e := nextEvent(t, events); e.Decision != "audit" || e.Host != "api.example.com" || !strings.HasPrefix(e.Reason, "name_mismatch: api.example.com does not resolve to 127.0.0.1") {
		t.Fatalf("audit event %+v: want decision audit with the name_mismatch reason", e)
	}
}

// TestEgressEventsNameTheProtocol: an egress connection's audit event
// says what the sidecar read it as: a TLS ClientHello (decided by SNI),
// an HTTP request (decided by Host, which the event carries), or bytes
// that are neither (decided by address).
func TestEgressEventsNameTheProtocol(t *testing.T) {
	t.Run("tls", func(t *testing.T) {
		a, ext, _, events := namePod(t, "Enforce", map[string]string{"allowed.example.com": "127.0.0.1"}, false)
		c := helloTo(a, ext.addr(), "allowed.example.com")
		waitAccepted(t, ext, 1)
		c.Close()
		if e := nextEvent(t, events); e.Protocol != audit.ProtocolTLS || e.SNI != "allowed.example.com" || e.Host != "" || e.Decision != "allow" {
			t.Fatalf("audit event %+v: want an allowed TLS connection", e)
		}
	})
	t.Run("http", func(t *testing.T) {
		a, ext, _, events := namePod(t, "Enforce", map[string]string{"api.example.com": "127.0.0.1"}, true)
		c := a.dialOutbound(ext.addr())
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("request: %v %v, want the destination's 200", resp, err)
		}
		c.Close()
		if e := nextEvent(t, events); e.Protocol != audit.ProtocolHTTP || e.Host != "api.example.com" || e.Decision != "allow" {
			t.Fatalf("audit event %+v: want an allowed HTTP request", e)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		a, ext, _, events := namePod(t, "Enforce", nil, false)
		cfg := *a.cfg.Load()
		out := *cfg.Outbound
		out.Chains = append(slices.Clone(out.Chains), &model.FilterChain{Name: "egress-by-address",
			Match:  model.ChainMatch{DestPort: ext.port(), Prefixes: []netip.Prefix{netip.PrefixFrom(ext.addr().Addr(), 32)}},
			Target: model.Target{Cluster: "PassthroughCluster"},
			Egress: &model.EgressMeta{Policy: "shop/egress", Rule: "1", Decision: "allow", Mode: "Enforce"}})
		cfg.Outbound = &out
		a.cfg.Store(&cfg)
		c := a.dialOutbound(ext.addr())
		io.WriteString(c, "\x00\x01 neither TLS nor HTTP\n")
		waitAccepted(t, ext, 1)
		c.Close()
		if e := nextEvent(t, events); e.Protocol != audit.ProtocolTCP || e.Host != "" || e.SNI != "" || e.Decision != "allow" {
			t.Fatalf("audit event %+v: want an allowed TCP connection", e)
		}
	})
}
