package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// plaintextToB connects to B's inbound listener without TLS, as a caller
// from outside the mesh would, and sends msg. It returns what came back
// before the connection ended (or went quiet for 5 s) and the read error.
func plaintextToB(t *testing.T, mp *meshPair, msg []byte) ([]byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", mp.b.inboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	got := make([]byte, len(msg))
	n, err := io.ReadFull(c, got)
	return got[:n], err
}

// permissivePair is a mesh pair whose server B takes both mTLS and
// plaintext on the app's port (PERMISSIVE), under rbac.
func permissivePair(t *testing.T, rbac []model.RBACFilter) *meshPair {
	t.Helper()
	mp := newMeshPair(t, nil, nil)
	mp.b.cfg.Store(meshConfig(nil, nil, inboundChains(mp.app.port(), true, rbac), false))
	return mp
}

// TestPermissiveAuthorizesPlaintext: PERMISSIVE accepts plaintext, but not
// around authorization. A plaintext caller has no principal: it matches
// only rules without from (Principal Any), so an ALLOW policy naming
// identities refuses it, and a DENY policy matching everyone refuses it
// (api/v1alpha1.AuthorizationPolicy). mTLS callers on the same port are
// decided by their SPIFFE ID, as under STRICT.
func TestPermissiveAuthorizesPlaintext(t *testing.T) {
	allowShop := []model.RBACFilter{{Action: model.RBACAllow, Policies: []model.RBACPolicy{
		{Name: "demo/allow-shop", Principals: []model.Principal{{Prefix: "spiffe://cluster.local/ns/shop/sa/"}}}}}}

	t.Run("plaintext refused by an ALLOW policy naming identities", func(t *testing.T) {
		mp := permissivePair(t, allowShop)
		got, err := plaintextToB(t, mp, []byte("plaintext from outside the mesh"))
		if err == nil || len(got) != 0 {
			t.Fatalf("plaintext caller not allowed by demo/allow-shop got %q back (err %v): authorization was skipped", got, err)
		}
		// Refused for authorization (no policy matched: policy label ""),
		// after the chain accepted plaintext, not for being plaintext.
		mp.b.waitCounter(1, "connection_failures", inbound, reasonAuthzDenied)
		mp.b.waitCounter(1, "authz_denials", inbound, "")
		if n := mp.b.counter("handshake_failures", inbound, reasonNotTLS); n != 0 {
			t.Fatalf("handshake_failures{not_tls} = %v: plaintext was refused as plaintext, not by the policy", n)
		}
		if n := mp.app.accepted.Load(); n != 0 {
			t.Fatalf("app accepted %d connections", n)
		}
	})

	t.Run("mTLS caller allowed by the policy", func(t *testing.T) {
		mp := permissivePair(t, allowShop)
		c := mp.dial() // A runs as shop/frontend
		roundTrip(t, c, []byte("mtls from shop"))
		conns := mp.b.connections()
		if len(conns) != 1 || !conns[0].MTLS || conns[0].PeerID != mp.a.id.String() {
			t.Fatalf("B's connections %+v, want one mTLS connection from %s", conns, mp.a.id)
		}
		if n := mp.b.counter("authz_denials", inbound, ""); n != 0 {
			t.Fatalf("authz_denials = %v", n)
		}
	})

	t.Run("mTLS caller not allowed by the policy", func(t *testing.T) {
		mp := permissivePair(t, allowShop)
		refusedByB(t, mp, testutil.SVID(t, mp.ca, workloadID("payments", "api"), time.Hour), 0)
		mp.b.waitCounter(1, "handshake_failures", inbound, reasonAuthzDenied)
		mp.b.waitCounter(1, "authz_denials", inbound, "")
	})

	t.Run("TLS without a client certificate", func(t *testing.T) {
		// PERMISSIVE's TLS chain still requires the SVID: plaintext is the
		// only way in without one, and it is authorized as such.
		mp := permissivePair(t, allowShop)
		refusedByB(t, mp, nil, 0)
		mp.b.waitCounter(1, "handshake_failures", inbound, reasonNoClientCert)
	})

	t.Run("plaintext allowed by a rule without from", func(t *testing.T) {
		mp := permissivePair(t, nil)
		port := mp.app.port()
		mp.b.cfg.Store(meshConfig(nil, nil, inboundChains(port, true, []model.RBACFilter{{Action: model.RBACAllow, Policies: []model.RBACPolicy{
			{Name: "demo/allow-shop", Principals: []model.Principal{{Prefix: "spiffe://cluster.local/ns/shop/sa/"}}},
			{Name: "demo/allow-port", Principals: []model.Principal{{Any: true}}, Ports: []uint16{port}},
		}}}), false))
		msg := []byte("plaintext to an open port")
		got, err := plaintextToB(t, mp, msg)
		if err != nil || string(got) != string(msg) {
			t.Fatalf("plaintext caller allowed by demo/allow-port: got %q, err %v", got, err)
		}
		if n := mp.b.counter("connection_failures", inbound, reasonAuthzDenied); n != 0 {
			t.Fatalf("connection_failures{authz_denied} = %v", n)
		}
	})

	t.Run("plaintext refused by a DENY policy matching everyone", func(t *testing.T) {
		mp := permissivePair(t, []model.RBACFilter{{Action: model.RBACDeny, Policies: []model.RBACPolicy{
			{Name: "demo/deny-all", Principals: []model.Principal{{Any: true}}}}}})
		got, err := plaintextToB(t, mp, []byte("plaintext"))
		if err == nil || len(got) != 0 {
			t.Fatalf("plaintext caller denied by demo/deny-all got %q back (err %v)", got, err)
		}
		mp.b.waitCounter(1, "connection_failures", inbound, reasonAuthzDenied)
		mp.b.waitCounter(1, "authz_denials", inbound, "demo/deny-all")
		if n := mp.app.accepted.Load(); n != 0 {
			t.Fatalf("app accepted %d connections", n)
		}
	})

	t.Run("shadow rule counts plaintext", func(t *testing.T) {
		mp := permissivePair(t, []model.RBACFilter{{Action: model.RBACAllow, Shadow: true, Policies: []model.RBACPolicy{
			{Name: "demo/audit-shop-only", Principals: []model.Principal{{Prefix: "spiffe://cluster.local/ns/shop/sa/"}}}}}})
		msg := []byte("plaintext under a shadow rule")
		got, err := plaintextToB(t, mp, msg)
		if err != nil || string(got) != string(msg) {
			t.Fatalf("shadow rules are not enforced: got %q, err %v", got, err)
		}
		mp.b.waitCounter(1, "shadow_denials", inbound, "")
	})
}
