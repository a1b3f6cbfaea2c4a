package injector

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weftmesh/weft/internal/testutil"
)

func debugLogger(buf *testutil.SyncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitLog waits for want in buf (testutil.Eventually).
func waitLog(t *testing.T, buf *testutil.SyncBuffer, want string) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("%q in the log", want), func() bool { return strings.Contains(buf.String(), want) })
}

// runEvents runs ev until the test ends.
func runEvents(t *testing.T, ev *KubeEvents) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ev.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestPortBounds: 65535 is the last port, in an annotation and in a probe
// (by number or through a named container port); 65536 is none.
func TestPortBounds(t *testing.T) {
	if got, err := parsePorts("1,65535"); err != nil || len(got) != 2 || got[1] != "65535" {
		t.Errorf("parsePorts(1,65535) = %v, %v", got, err)
	}
	if _, err := parsePorts("65536"); err == nil {
		t.Error("parsePorts(65536) accepted")
	}
	c := &corev1.Container{Name: "app", Ports: []corev1.ContainerPort{
		{Name: "last", ContainerPort: 65535}, {Name: "over", ContainerPort: 65536}, {Name: "zero", ContainerPort: 0}}}
	for _, tc := range []struct {
		port intstr.IntOrString
		want bool
	}{
		{intstr.FromInt32(65535), true},
		{intstr.FromInt32(65536), false},
		{intstr.FromInt32(0), false},
		{intstr.FromString("last"), true},
		{intstr.FromString("over"), false},
		{intstr.FromString("zero"), false},
	} {
		probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/h", Port: tc.port}}}
		got, ok := appProbe(c, probe)
		if ok != tc.want {
			t.Errorf("probe on port %s: rewritten %v, want %v", tc.port.String(), ok, tc.want)
		}
		if ok && got.HTTPGet.Port != intstr.FromInt32(65535) {
			t.Errorf("probe on port %s: recorded port %s, want 65535", tc.port.String(), got.HTTPGet.Port.String())
		}
		recorded := map[string]AppProbe{}
		c.LivenessProbe = probe
		if n := len(rewriteProbes(c, recorded)); n != map[bool]int{true: 1, false: 0}[tc.want] || len(recorded) != n {
			t.Errorf("probe on port %s: %d probes rewritten, %d recorded", tc.port.String(), n, len(recorded))
		}
	}
}

// TestNativeSidecarSupportedOddMinor: with an odd gitVersion, a minor of
// only "+" or nothing does not parse (an error, not a panic), and one
// without a trailing "+" is read whole.
func TestNativeSidecarSupportedOddMinor(t *testing.T) {
	for _, minor := range []string{"+", "++", ""} {
		d := &fakediscovery.FakeDiscovery{Fake: &k8stesting.Fake{}, FakedServerVersion: &version.Info{GitVersion: "weird", Major: "1", Minor: minor}}
		if ok, err := NativeSidecarSupported(d); ok || err == nil || !strings.Contains(err.Error(), "does not parse") {
			t.Errorf("minor %q: %v, %v; want a parse error", minor, ok, err)
		}
	}
	for _, minor := range []string{"29++", "29", "30"} { // only trailing pluses go
		d := &fakediscovery.FakeDiscovery{Fake: &k8stesting.Fake{}, FakedServerVersion: &version.Info{GitVersion: "weird", Major: "1", Minor: minor}}
		if ok, err := NativeSidecarSupported(d); !ok || err != nil {
			t.Errorf("minor %q: %v, %v; want true", minor, ok, err)
		}
	}
}

// TestKeepCABundleDefaultInterval: an Interval of 0 or less means a minute,
// it does not reach time.NewTicker (which panics on it).
func TestKeepCABundleDefaultInterval(t *testing.T) {
	for _, iv := range []time.Duration{0, -time.Second} {
		ctx, cancel := context.WithCancel(context.Background())
		called := make(chan struct{}, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			KeepCABundle(ctx, CABundleConfig{Client: fake.NewClientset(webhookConfig(nil)), Interval: iv, Bundle: func() ([]byte, error) {
				select {
				case called <- struct{}{}:
				default:
				}
				return nil, errors.New("no bundle yet")
			}})
		}()
		<-called
		cancel()
		<-done
	}
}

// TestKeepCABundleLogsFailures: a failed check is logged while the loop
// runs; one that fails because ctx ended is not.
func TestKeepCABundleLogsFailures(t *testing.T) {
	const warn = "cannot ensure the webhook caBundle; retrying"
	var buf testutil.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{})
	inSecond, release := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	n := 0 // Bundle runs on KeepCABundle's goroutine only
	go func() {
		defer close(done)
		KeepCABundle(ctx, CABundleConfig{Client: fake.NewClientset(webhookConfig(nil)), Interval: time.Hour, Changed: changed, Logger: debugLogger(&buf),
			Bundle: func() ([]byte, error) {
				n++
				switch n {
				case 2:
					close(inSecond)
					<-release
				case 3:
					cancel() // this check fails because weft stops
					return nil, context.Canceled
				}
				return nil, errors.New("bundle unreadable")
			}})
	}()
	changed <- struct{}{} // received once the first check has failed and logged
	<-inSecond
	if got := strings.Count(buf.String(), warn); got != 1 {
		t.Fatalf("%d warnings after one failed check, want 1:\n%s", got, buf.String())
	}
	close(release)
	changed <- struct{}{}
	<-done
	if got := strings.Count(buf.String(), warn); got != 2 || !strings.Contains(buf.String(), "bundle unreadable") {
		t.Fatalf("%d warnings after two failed checks and one at shutdown, want 2:\n%s", got, buf.String())
	}
}

// TestKubeEventsQueueFull: Observe never blocks; past 256 queued Events it
// drops them and says so in the given logger (a nil one discards).
func TestKubeEventsQueueFull(t *testing.T) {
	inj := newInjector(t, true)
	_, skipped := inj.Review(reviewBody(t, loadPod(t, "optedout"), "demo"))
	var buf testutil.SyncBuffer
	ev := NewKubeEvents(fake.NewClientset(), "i", debugLogger(&buf))
	for range 256 {
		ev.Observe(skipped)
	}
	if strings.Contains(buf.String(), "event queue full") {
		t.Fatalf("dropped with room left:\n%s", buf.String())
	}
	ev.Observe(skipped)
	if !strings.Contains(buf.String(), "event queue full; dropping event") || !strings.Contains(buf.String(), "namespace=demo") {
		t.Fatalf("drop not logged:\n%s", buf.String())
	}
	quiet := NewKubeEvents(fake.NewClientset(), "i", nil)
	for range 257 {
		quiet.Observe(skipped)
	}
}

// TestKubeEventsCreateFailureLogged: an Event the API server refuses is
// logged (and the loop goes on).
func TestKubeEventsCreateFailureLogged(t *testing.T) {
	inj := newInjector(t, true)
	_, skipped := inj.Review(reviewBody(t, loadPod(t, "optedout"), "demo"))
	cs := fake.NewClientset()
	cs.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("etcd is sad")
	})
	var buf testutil.SyncBuffer
	ev := NewKubeEvents(cs, "i", debugLogger(&buf))
	runEvents(t, ev)
	ev.Observe(skipped)
	waitLog(t, &buf, "cannot record event")
	if s := buf.String(); !strings.Contains(s, "etcd is sad") || !strings.Contains(s, "object=legacy") {
		t.Errorf("warning lacks the error or the object:\n%s", s)
	}
}

// TestKubeEventsOverHTTP: Run sends the Event to a real API endpoint (over
// HTTP on loopback, client-go honouring the request's context): each
// request gets time to complete.
func TestKubeEventsOverHTTP(t *testing.T) {
	got := make(chan corev1.Event, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/namespaces/demo/events" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var e corev1.Event
		if err := json.Unmarshal(body, &e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write(body)
		got <- e
	}))
	defer srv.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	inj := newInjector(t, true)
	_, skipped := inj.Review(reviewBody(t, loadPod(t, "optedout"), "demo"))
	var buf testutil.SyncBuffer
	ev := NewKubeEvents(cs, "i", debugLogger(&buf))
	runEvents(t, ev)
	ev.Observe(skipped)
	select {
	case e := <-got:
		if e.Reason != EventReason || e.InvolvedObject.Name != "legacy" {
			t.Errorf("event %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no Event reached the API server; log:\n%s", buf.String())
	}
}

// TestServeListensOnAddr: Serve listens where ServerConfig.Addr says, not
// on DefaultAddr.
func TestServeListensOnAddr(t *testing.T) {
	ca := newTestCA(t)
	src := ca.source(t, 1)
	addr := startServer(t, SVIDCertificates(src), nil)
	host, port, err := net.SplitHostPort(addr)
	_, defPort, _ := net.SplitHostPort(DefaultAddr)
	if err != nil || host != "127.0.0.1" || port == defPort || port == "0" {
		t.Fatalf("listening on %s, want 127.0.0.1 and a free port", addr)
	}
}

// TestServerBoundsSlowClients: the webhook's server cuts off a client that
// stalls: its headers (and TLS handshake, net/http's bound being the
// smallest of the three) within 5s, a request within 10s, a response
// within 10s; a connection idles 90s at most. Without ReadHeaderTimeout
// net/http would wait ReadTimeout for headers; without the others, forever.
func TestServerBoundsSlowClients(t *testing.T) {
	var buf testutil.SyncBuffer
	srv := newHTTPServer(http.NotFoundHandler(), SVIDCertificates(&swappableSVIDs{}), debugLogger(&buf))
	if srv.ReadHeaderTimeout != 5*time.Second || srv.ReadTimeout != 10*time.Second || srv.WriteTimeout != 10*time.Second || srv.IdleTimeout != 90*time.Second {
		t.Errorf("timeouts: header %v, read %v, write %v, idle %v; want 5s, 10s, 10s, 90s",
			srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
	}
	if srv.TLSConfig == nil || srv.TLSConfig.MinVersion != tls.VersionTLS12 || srv.TLSConfig.GetCertificate == nil {
		t.Errorf("TLS config %+v", srv.TLSConfig)
	}
	srv.ErrorLog.Print("http: TLS handshake error from 127.0.0.1:1: EOF")
	if s := buf.String(); !strings.Contains(s, "level=DEBUG") || !strings.Contains(s, "TLS handshake error") {
		t.Errorf("server errors not logged at debug: %q", s)
	}
}

// TestProxyTimeoutBounds: 100ms and 168h are the ends of an accepted proxy
// timeout, both in.
func TestProxyTimeoutBounds(t *testing.T) {
	for in, want := range map[string]string{"100ms": "100ms", "168h": "168h0m0s", " 10s ": "10s"} {
		if got, err := parseTimeout(in); err != nil || got != want {
			t.Errorf("parseTimeout(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"99ms", "168h0m1s", "-1s", "10"} {
		if got, err := parseTimeout(in); err == nil {
			t.Errorf("parseTimeout(%q) = %q, want a refusal", in, got)
		}
	}
}
