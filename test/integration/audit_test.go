package integration

// The whole egress audit delivery path: sidecar/audit's Recorder streaming
// to controlplane/audit's Service over mTLS, with the control plane stopped
// and started on the same bbolt file while events flow.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/credentials"

	apiaudit "github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/audit"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/controlplane/streamauth/streamauthtest"
	wefttest "github.com/weftmesh/weft/internal/testutil"
	sidecaraudit "github.com/weftmesh/weft/sidecar/audit"
	sidecaridentity "github.com/weftmesh/weft/sidecar/identity"
)

var (
	auditTD = spiffeid.RequireTrustDomainFromString("cluster.local")
	cpID    = spiffeid.RequireFromSegments(auditTD, "ns", "weft-system", "sa", "weft-controlplane")
	shopApp = spiffeid.RequireFromSegments(auditTD, "ns", "shop", "sa", "web")
)

// syncBuffer is the sidecar's stdout.
type syncBuffer struct{ wefttest.SyncBuffer }

func (s *syncBuffer) ids(t *testing.T) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(s.Bytes()))
	for sc.Scan() {
		var e apiaudit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e.ID)
	}
	return out
}

// controlPlane runs the audit service on addr over the bbolt file at path
// until stop.
type controlPlane struct {
	gs    *grpc.Server
	store *audit.Store
	reg   *prometheus.Registry
}

func startControlPlane(t *testing.T, ca *certs.CA, path, addr string) *controlPlane {
	t.Helper()
	store, err := audit.OpenStore(audit.StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	// The registry and the API server know pod shop/web-1 at 127.0.0.1
	// and its token (auditToken's).
	pods := streamauthtest.New()
	pods.Add("shop", "web-1", shopApp)
	auth, err := streamauth.New(streamauth.Config{Authenticator: pods, Pods: pods, Bundle: ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := audit.NewService(audit.ServiceConfig{Store: store, Authorizer: auth, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// Shaped like the control plane's port: a client certificate is
	// requested, not required; the service checks it itself.
	cfg := tlsconfig.TLSServerConfig(wefttest.SVID(t, ca, cpID, 0))
	cfg.ClientAuth = tls.RequestClientCert
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	svc.Register(gs)
	var lis net.Listener
	for i := 0; ; i++ {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		if i == 50 {
			t.Fatalf("listen %s again: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	go func() { _ = gs.Serve(lis) }()
	return &controlPlane{gs: gs, store: store, reg: reg}
}

// duplicates is what the store skipped as already stored (resends).
func (cp *controlPlane) duplicates(t *testing.T) float64 {
	t.Helper()
	v, _ := wefttest.CounterValue(t, cp.reg, "weft_audit_events_total", "result", "duplicate")
	return v
}

// stop kills the server (streams cut mid-flight, as a crash or a rollout
// does), then closes the file.
func (cp *controlPlane) stop() {
	cp.gs.Stop()
	cp.store.Close()
}

// runRecorder runs a recorder of cfg, as web-1's sidecar (shop/app), until
// the test ends.
func runRecorder(t *testing.T, cfg sidecaraudit.Config) *sidecaraudit.Recorder {
	t.Helper()
	cfg.SourceID, cfg.Pod, cfg.Namespace = shopApp, "web-1", "shop"
	rec, err := sidecaraudit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = rec.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return rec
}

func TestExactlyOnceAcrossControlPlaneRestarts(t *testing.T) {
	ca, path, addr, cp, conn := auditSetup(t, grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond}, MinConnectTimeout: time.Second}))
	var out syncBuffer
	rec := runRecorder(t, sidecaraudit.Config{Out: &out, Conn: conn, BatchSize: 25, EntriesPerMessage: 5, FlushDelay: 2 * time.Millisecond,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, SendTimeout: 5 * time.Second})

	const n = 1500
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := range n {
			rec.Record(apiaudit.Event{DstHost: "api.example.com", DstIP: netip.MustParseAddr("93.184.216.34"), DstPort: 443,
				SNI: "api.example.com", Protocol: apiaudit.ProtocolTLS, Decision: "allow", BytesSent: int64(i), Duration: time.Millisecond})
			time.Sleep(time.Millisecond)
		}
	}()
	var duplicates float64
	// Two restarts while events flow: each after a fifth more of them was
	// delivered, and back only once events are waiting to be resent, so
	// that every restart is one in the middle of the stream however slow
	// the machine.
	for i := range 2 {
		wefttest.Eventually(t, "events delivered before the restart", func() bool { return rec.Stats().Delivered >= int64((i+1)*n/5) })
		cp.stop()
		duplicates += cp.duplicates(t)
		wefttest.Eventually(t, "events buffered while the control plane is away", func() bool { return rec.Stats().Buffered > 0 })
		cp = startControlPlane(t, ca, path, addr)
	}
	<-produced
	wefttest.Eventually(t, "every event delivered", func() bool { st := rec.Stats(); return st.Delivered >= n && st.Buffered == 0 })
	cp.stop()
	duplicates += cp.duplicates(t)

	st := rec.Stats()
	if st.DroppedFull != 0 || st.DroppedRejected != 0 || st.Recorded != n {
		t.Errorf("recorder stats %+v", st)
	}
	if st.SendFailures == 0 {
		t.Error("no delivery failed: the restarts did not interrupt the flow")
	}
	store, err := audit.OpenStore(audit.StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	stored, err := store.Query(audit.Query{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range stored {
		count[e.ID]++
		if e.SourceID != shopApp.String() || e.Pod != "web-1" || e.Namespace != "shop" {
			t.Fatalf("stored %+v", e)
		}
	}
	sent := out.ids(t)
	if len(sent) != n {
		t.Fatalf("%d JSON lines, want %d", len(sent), n)
	}
	for _, id := range sent {
		if count[id] != 1 {
			t.Errorf("event %s stored %d times", id, count[id])
		}
	}
	if len(stored) != n || store.Len() != n {
		t.Errorf("stored %d events (%d IDs), want %d", len(stored), store.Len(), n)
	}
	t.Logf("recorder %+v; duplicates the store skipped: %v", st, duplicates)
}

// TestAuditRecordRoundTrip: an event with every field set, recorded by the
// sidecar's recorder and sent over the access-log stream, is stored by the
// control plane with every field intact: the wire names are one contract
// (api/audit's Field constants), not two lists that can drift.
func TestAuditRecordRoundTrip(t *testing.T) {
	_, path, _, cp, conn := auditSetup(t)
	var out syncBuffer
	rec := runRecorder(t, sidecaraudit.Config{Out: &out, Conn: conn, FlushDelay: 2 * time.Millisecond, SendTimeout: 5 * time.Second})

	sent := apiaudit.Event{Time: time.Now().UTC().Truncate(time.Microsecond), DstHost: "api.example.com", Service: "shop/payments", DstIP: netip.MustParseAddr("198.18.100.11"), DstPort: 8443,
		SNI: "api.example.com", Host: "api.example.com:8443", Protocol: apiaudit.ProtocolTLS, Decision: "deny", Policy: "shop/egress", Rule: "2",
		Outbound: "ALLOW_ANY", Chain: "egress|8443|tls|0", Reason: "name_mismatch: api.example.com does not resolve to 198.18.100.11 for this pod",
		BytesSent: 17, BytesReceived: 4242, Duration: 1500 * time.Millisecond}
	rec.Record(sent)
	wefttest.Eventually(t, "the event delivered", func() bool { return rec.Stats().Delivered >= 1 })
	cp.stop()
	store, err := audit.OpenStore(audit.StoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	stored, err := store.Query(audit.Query{})
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored %v, %v; want one event", stored, err)
	}
	got := stored[0]
	want := sent
	want.ID, want.SourceID, want.Pod, want.Namespace = got.ID, shopApp.String(), "web-1", "shop"
	if got.ID == "" || !got.Time.Equal(want.Time) {
		t.Fatalf("stored ID %q time %v, want an ID and %v", got.ID, got.Time, want.Time)
	}
	// The control plane stamps its receive time (its clock: no earlier
	// than the sidecar's record of the connection here, on one machine).
	if got.Received.Before(got.Time) {
		t.Fatalf("received %v, before the event's time %v", got.Received, got.Time)
	}
	want.Received = got.Received
	got.Time = want.Time
	if got != want {
		t.Fatalf("stored\n%+v\nwant\n%+v", got, want)
	}
}

// auditSetup starts a control plane's audit service on a free loopback
// port with its store at path, and a gRPC connection to it as shopApp;
// the connection is closed at the end of the test.
func auditSetup(t *testing.T, opts ...grpc.DialOption) (ca *certs.CA, path, addr string, cp *controlPlane, conn *grpc.ClientConn) {
	t.Helper()
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: auditTD})
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "audit.db")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	cp = startControlPlane(t, ca, path, addr)
	// As the sidecar dials: its SVID, and its pod's token from the file
	// the kubelet projects.
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(streamauthtest.Token("shop", "web-1")), 0o600); err != nil {
		t.Fatal(err)
	}
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(wefttest.SVID(t, ca, shopApp, 0), ca.Bundle(), tlsconfig.AuthorizeID(cpID)))),
		grpc.WithPerRPCCredentials(sidecaridentity.TokenCredentials(token))}, opts...)
	conn, err = grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ca, path, addr, cp, conn
}
