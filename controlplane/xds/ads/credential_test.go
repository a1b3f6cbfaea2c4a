package ads

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// The app in a pod holds its pod's SVID (the Workload API serves it), not
// the pod's projected token (mounted into weft-proxy only). These tests
// run the real server over mTLS on loopback.

// ended waits until the stream ends, whatever it received before, and
// returns its status.
func (c *adsClient[Req, Resp]) ended() error {
	c.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-c.resps:
			if !ok {
				return c.err
			}
		case <-deadline:
			c.t.Fatal("stream not ended")
			return nil
		}
	}
}

func wantStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("%s: got %v %q, want %v with %q", what, st.Code(), st.Message(), code, msg)
	}
}

// TestAppWithOnlyTheSVIDIsRefused: the app's credential (the SVID alone,
// or with a token the API server does not accept) opens no ADS stream; the
// sidecar's (SVID and the pod's token) does.
func TestAppWithOnlyTheSVIDIsRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	app := saID("demo", "app")
	for name, o := range map[string]peerOpts{"no token": {}, "a forged token": {token: "made-up"}} {
		t.Run(name, func(t *testing.T) {
			for flavour, err := range map[string]error{
				"sotw": func() error {
					c := openSotWAs(h, app, o)
					c.send(&discovery.DiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
					return c.refused()
				}(),
				"delta": func() error {
					c := openDeltaAs(h, app, o)
					c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
					return c.refused()
				}(),
			} {
				msg := `xds: ADS needs the pod's ServiceAccount token`
				if o.token != "" {
					msg = "invalid bearer token"
				}
				wantStatus(t, flavour, err, codes.Unauthenticated, msg)
			}
		})
	}
	if n := len(h.srv.Status()); n != 0 {
		t.Fatalf("%d nodes connected after the app's attempts", n)
	}
	// The sidecar: same certificate, plus the pod's token.
	c := openSotW(h, app)
	c.send(&discovery.DiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	if r := c.next(); len(r.GetResources()) == 0 {
		t.Fatal("the sidecar got an empty response")
	}
	d := openDelta(h, app)
	d.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	d.next()
}

// TestSiblingCannotClaimNodeID: a pod of the same ServiceAccount, with its
// own SVID and token, cannot open a stream as its sibling's node.
func TestSiblingCannotClaimNodeID(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	app := saID("demo", "app")
	sibling := h.pods.Add("demo", "app-2", app)
	s := openSotWAs(h, app, peerOpts{token: sibling})
	s.send(&discovery.DiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	wantStatus(t, "sotw", s.refused(), codes.PermissionDenied, `xds: node "app-1.demo" refused: the stream's token is pod demo/app-2's`)
	d := openDeltaAs(h, app, peerOpts{token: sibling})
	d.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	wantStatus(t, "delta", d.refused(), codes.PermissionDenied, `the stream's token is pod demo/app-2's`)
	if _, ok := h.status("app-1.demo"); ok {
		t.Fatal("app-1.demo connected through its sibling")
	}
	// Its own node ID it may hold.
	own := openSotWAs(h, app, peerOpts{token: sibling})
	own.send(&discovery.DiscoveryRequest{Node: node("app-2.demo"), TypeUrl: resource.ListenerType})
	own.next()
}

// TestStreamFromAnotherIPIsRefused: the token and the SVID carried off the
// pod do not work from another address; any of a dual-stack pod's IPs
// does.
func TestStreamFromAnotherIPIsRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	app := saID("demo", "app")
	tok := h.pods.Add("demo", "app-3", app, "fd00:10:244::7", "127.0.0.3")
	s := openSotWAs(h, app, peerOpts{token: tok, from: "127.0.0.1"})
	s.send(&discovery.DiscoveryRequest{Node: node("app-3.demo"), TypeUrl: resource.ListenerType})
	wantStatus(t, "sotw", s.refused(), codes.PermissionDenied, "xds: ADS comes from 127.0.0.1, which is not an IP of pod demo/app-3 [fd00:10:244::7 127.0.0.3]")
	d := openDeltaAs(h, app, peerOpts{token: tok, from: "127.0.0.4"})
	d.send(&discovery.DeltaDiscoveryRequest{Node: node("app-3.demo"), TypeUrl: resource.ListenerType})
	wantStatus(t, "delta", d.refused(), codes.PermissionDenied, "xds: ADS comes from 127.0.0.4")
	ok := openDeltaAs(h, app, peerOpts{token: tok, from: "127.0.0.3"})
	ok.send(&discovery.DeltaDiscoveryRequest{Node: node("app-3.demo"), TypeUrl: resource.ListenerType})
	ok.next()
}

// TestStreamClosedWhenPodGoes: a connected sidecar's stream ends once the
// registry no longer knows its pod, or knows a new pod of the same name.
func TestStreamClosedWhenPodGoes(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	app := saID("demo", "app")
	c, _ := connectSotW(h, app, "app-1.demo")
	replaced := h.pods.Add("demo", "app-2", app)
	d := openDeltaAs(h, app, peerOpts{token: replaced})
	d.send(&discovery.DeltaDiscoveryRequest{Node: node("app-2.demo"), TypeUrl: resource.ListenerType})
	d.next()

	h.auth.Recheck(context.Background()) // nothing changed: both stay
	if _, ok := h.status("app-1.demo"); !ok {
		t.Fatal("app-1.demo disconnected by a recheck that changed nothing")
	}

	h.pods.Remove("demo", "app-1")
	h.pods.Replace("demo", "app-2")
	h.auth.Recheck(context.Background())
	wantStatus(t, "deleted pod", c.ended(), codes.PermissionDenied, "xds: stream of node app-1.demo closed: pod demo/app-1 was deleted")
	wantStatus(t, "replaced pod", d.ended(), codes.PermissionDenied, "xds: stream of node app-2.demo closed: pod demo/app-2 was replaced")
	wefttest.Eventually(t, "both nodes disconnected", func() bool { return len(h.srv.Status()) == 0 })
	if n := h.auth.Len(); n != 0 {
		t.Fatalf("%d grants kept after their streams ended", n)
	}
}

// TestStreamClosedWhenSVIDExpires: a stream ends when its client
// certificate does, on the control plane's clock.
func TestStreamClosedWhenSVIDExpires(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	app := saID("demo", "app")
	svid := wefttest.SVID(t, h.ca, app, time.Hour)
	cert := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	o := peerOpts{token: h.pods.DefaultToken(app), cert: &cert}
	s := openSotWAs(h, app, o)
	s.send(&discovery.DiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	s.next()
	d := openDeltaAs(h, app, o)
	d.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	d.next()

	notAfter := svid.Certificates[0].NotAfter
	h.clock.SetTime(notAfter.Add(-time.Second))
	select {
	case _, ok := <-s.resps:
		if !ok {
			t.Fatalf("stream ended a second before its certificate expired: %v", s.err)
		}
	case <-time.After(50 * time.Millisecond):
	}
	h.clock.SetTime(notAfter.Add(time.Second))
	for flavour, err := range map[string]error{"sotw": s.ended(), "delta": d.ended()} {
		wantStatus(t, flavour, err, codes.Unauthenticated, "xds: stream of node app-1.demo closed: its client certificate expired at "+notAfter.UTC().Format(time.RFC3339))
	}
	wefttest.Eventually(t, "node disconnected", func() bool { return len(h.srv.Status()) == 0 })
}
