package audit

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// The app in a pod holds its pod's SVID (the Workload API serves it), not
// the pod's projected token (mounted into weft-proxy only): what it can
// try on the audit stream. Real gRPC over mTLS on loopback.

func wantStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("%s: got %v %q, want %v with %q", what, st.Code(), st.Message(), code, msg)
	}
}

func (h *harness) stored(t *testing.T) []string {
	t.Helper()
	got, err := h.store.Query(Query{})
	if err != nil {
		t.Fatal(err)
	}
	return ids(got)
}

// waitStored polls until the store holds n events (the server commits a
// message asynchronously to the client's Send).
func (h *harness) waitStored(t *testing.T, n int) {
	t.Helper()
	wefttest.Eventually(t, fmt.Sprintf("%d stored events", n), func() bool { return len(h.stored(t)) == n })
}

// TestAuditAppWithOnlyTheSVIDIsRefused: the app's credential (its pod's
// SVID, alone or with a token the API server does not accept) writes no
// event as its pod; the sidecar's (SVID and the pod's token) does.
func TestAuditAppWithOnlyTheSVIDIsRefused(t *testing.T) {
	h := newHarness(t)
	t0 := h.clk.Now()
	err := h.sendAs(t, shopApp, peerOpts{}, message("web-1.shop", shopEvent(t0, "app-1")))
	wantStatus(t, "SVID alone", err, codes.Unauthenticated, `audit: the access-log stream needs the pod's ServiceAccount token (audience weft-ca)`)
	err = h.sendAs(t, shopApp, peerOpts{token: "made-up"}, message("web-1.shop", shopEvent(t0, "app-2")))
	wantStatus(t, "forged token", err, codes.Unauthenticated, "invalid bearer token")
	if got := h.stored(t); len(got) != 0 {
		t.Fatalf("the app's events were stored: %v", got)
	}
	if err := h.send(t, shopApp, message("web-1.shop", shopEvent(t0, "sidecar-1"))); err != nil {
		t.Fatalf("the sidecar: %v", err)
	}
	if got := h.stored(t); len(got) != 1 || got[0] != "sidecar-1" {
		t.Fatalf("stored %v, want the sidecar's event", got)
	}
}

// TestAuditSiblingCannotWriteAsAnotherPod: a pod of the same
// ServiceAccount, with its own SVID and token, cannot write events as its
// sibling.
func TestAuditSiblingCannotWriteAsAnotherPod(t *testing.T) {
	h := newHarness(t)
	t0 := h.clk.Now()
	sibling := wefttest.Certificate(t, h.ca.ca, shopApp) // web-2's own SVID
	err := h.sendAs(t, shopApp, peerOpts{token: "token-web-2.shop", cert: &sibling}, message("web-1.shop", shopEvent(t0, "forged-1")))
	wantStatus(t, "sibling", err, codes.PermissionDenied, `audit: node "web-1.shop" refused: the stream's token is pod shop/web-2's`)
	if got := h.stored(t); len(got) != 0 {
		t.Fatalf("events stored as web-1 by web-2: %v", got)
	}
	own := shopEvent(t0, "own-1")
	own.Pod = "web-2"
	if err := h.sendAs(t, shopApp, peerOpts{token: "token-web-2.shop", cert: &sibling}, message("web-2.shop", own)); err != nil {
		t.Fatalf("its own node: %v", err)
	}
}

// TestAuditStreamFromAnotherIPIsRefused: the token and SVID carried off
// the pod do not work from another address; any of the pod's IPs does.
func TestAuditStreamFromAnotherIPIsRefused(t *testing.T) {
	h := newHarness(t)
	t0 := h.clk.Now()
	tok := h.pods.Add("shop", "web-3", shopApp, "fd00:10:244::9", "127.0.0.3")
	e := shopEvent(t0, "ip-1")
	e.Pod = "web-3"
	err := h.sendAs(t, shopApp, peerOpts{token: tok, from: "127.0.0.1"}, message("web-3.shop", e))
	wantStatus(t, "wrong IP", err, codes.PermissionDenied, "audit: the access-log stream comes from 127.0.0.1, which is not an IP of pod shop/web-3 [fd00:10:244::9 127.0.0.3]")
	if got := h.stored(t); len(got) != 0 {
		t.Fatalf("stored %v from the wrong address", got)
	}
	if err := h.sendAs(t, shopApp, peerOpts{token: tok, from: "127.0.0.3"}, message("web-3.shop", e)); err != nil {
		t.Fatalf("from the pod's IP: %v", err)
	}
}

// TestAuditStreamClosedWhenPodGoes: an open stream ends once the registry
// no longer knows its pod, or knows a new pod of the same name; nothing
// sent after is stored.
func TestAuditStreamClosedWhenPodGoes(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		gone      func(h *harness)
	}{
		{"deleted", "audit: stream of node web-1.shop closed: pod shop/web-1 was deleted", func(h *harness) { h.pods.Remove("shop", "web-1") }},
		{"replaced", "audit: stream of node web-1.shop closed: pod shop/web-1 was replaced", func(h *harness) { h.pods.Replace("shop", "web-1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			t0 := h.clk.Now()
			st, err := h.open(t, shopApp, peerOpts{token: "token-web-1.shop"})
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(message("web-1.shop", shopEvent(t0, "before"))); err != nil {
				t.Fatal(err)
			}
			h.waitStored(t, 1)
			h.auth.Recheck(t.Context()) // nothing changed: the stream stays
			if err := st.Send(message("", shopEvent(t0, "still"))); err != nil {
				t.Fatal(err)
			}
			h.waitStored(t, 2)

			tc.gone(h)
			h.auth.Recheck(t.Context())
			_ = st.Send(message("", shopEvent(t0, "after"))) // io.EOF once the server ended it
			_, err = st.CloseAndRecv()
			wantStatus(t, "stream", err, codes.PermissionDenied, tc.msg)
			if got := h.stored(t); strings.Contains(strings.Join(got, ","), "after") {
				t.Fatalf("stored %v: an event sent after the pod went", got)
			}
		})
	}
}

// TestAuditStreamClosedWhenSVIDExpires: an open stream ends when its
// client certificate does, on the control plane's clock.
func TestAuditStreamClosedWhenSVIDExpires(t *testing.T) {
	h := newHarness(t)
	t0 := h.clk.Now()
	svid := wefttest.SVID(t, h.ca.ca, shopApp, time.Hour)
	cert := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	st, err := h.open(t, shopApp, peerOpts{token: "token-web-1.shop", cert: &cert})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(message("web-1.shop", shopEvent(t0, "before"))); err != nil {
		t.Fatal(err)
	}
	h.waitStored(t, 1)
	notAfter := svid.Certificates[0].NotAfter
	h.clk.SetTime(notAfter.Add(-time.Second))
	if err := st.Send(message("", shopEvent(t0, "just-before"))); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	h.waitStored(t, 2)
	h.clk.SetTime(notAfter.Add(time.Second))
	wefttest.Eventually(t, "the grant to end with its certificate", func() bool { return h.auth.Len() == 0 })
	_ = st.Send(message("", shopEvent(t0, "after")))
	_, err = st.CloseAndRecv()
	wantStatus(t, "stream", err, codes.Unauthenticated,
		"audit: stream of node web-1.shop closed: its client certificate expired at "+notAfter.UTC().Format(time.RFC3339))
	if got := h.stored(t); strings.Contains(strings.Join(got, ","), "after") {
		t.Fatalf("stored %v: an event sent after the certificate expired", got)
	}
}
