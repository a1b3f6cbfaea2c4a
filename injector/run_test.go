package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8sversion "k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/identity"
)

// The injector serves the SVID that sidecar/identity obtained from the
// certificate service, with its intermediate, and a client holding only
// weft's roots (the webhook's caBundle) verifies it.
func TestServesSVIDFromCertificateService(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-injector")
	_, client, _ := testutil.StartCertService(t, ca, map[string]spiffeid.ID{"tok": id})
	tokenPath := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenPath, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svids, err := identity.New(identity.Config{Client: client, TokenPath: tokenPath})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	defer func() { cancel(); <-done; <-done }()
	go func() { _ = svids.Run(ctx); done <- struct{}{} }()
	select {
	case <-svids.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("no SVID")
	}

	inj, err := New(Config{SidecarImage: "weft/weft-sidecar:test"})
	if err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		_ = Serve(ctx, ServerConfig{Addr: "127.0.0.1:0", Injector: inj, Certificates: SVIDCertificates(svids),
			Ready: func(a net.Addr) { addrc <- a.String() }})
		done <- struct{}{}
	}()

	caBundle, err := rootsPEM(svids, td)
	if err != nil {
		t.Fatal(err)
	}
	if got := servedID(t, <-addrc, caBundle); got != id.String() {
		t.Errorf("served %s, want %s", got, id)
	}
}

// servedID is the SPIFFE ID of the certificate served at addr, which a
// client holding only caBundle (the webhook's) verifies, or fails t.
func servedID(t *testing.T, addr string, caBundle []byte) string {
	t.Helper()
	roots := bundlePool(t, caBundle)
	conn, err := tls.Dial("tcp", addr, verifyWithoutName(roots))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].URIs[0].String()
}

// bundlePool holds the certificates of caBundle (PEM), or fails t.
func bundlePool(t *testing.T, caBundle []byte) *x509.CertPool {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		t.Fatal("caBundle holds no certificate")
	}
	return roots
}

// verifyWithoutName is a client configuration that accepts a server whose
// chain verifies to roots, whatever its name (the test SVIDs carry no DNS
// SAN).
func verifyWithoutName(roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // verified below without a host name
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		},
	}
}

// admitOver posts an admission review to the webhook Run serves at addr,
// verifying its certificate against caBundle as servedID does.
func admitOver(t *testing.T, addr string, caBundle []byte, body []byte) *admissionv1.AdmissionReview {
	t.Helper()
	roots := bundlePool(t, caBundle)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: verifyWithoutName(roots)}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("https://"+addr+"/inject", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST /inject: %v", err)
	}
	defer resp.Body.Close()
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /inject: %s, %v", resp.Status, err)
	}
	return &review
}

// fakeIdentity holds one SVID from the start.
type fakeIdentity struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
	ready  chan struct{}
	ran    chan struct{} // closed when Run returns
}

func (f *fakeIdentity) GetX509SVID() (*x509svid.SVID, error) { return f.svid, nil }
func (f *fakeIdentity) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return f.bundle, nil
}
func (f *fakeIdentity) Ready() <-chan struct{}               { return f.ready }
func (f *fakeIdentity) Subscribe() (<-chan struct{}, func()) { return make(chan struct{}), func() {} }
func (f *fakeIdentity) Run(ctx context.Context) error {
	defer close(f.ran)
	close(f.ready)
	<-ctx.Done()
	return nil
}

// TestRun: Run follows the MeshConfig (its informer syncs), serves the
// webhook with the identity's SVID, keeps the webhook's caBundle equal to
// the identity's roots, and on cancel returns nil with its identity
// stopped.
func TestRun(t *testing.T) {
	for _, tc := range []struct {
		flag   string // -native-sidecar
		native bool
	}{{"true", true}, {"auto", true}, {"false", false}} {
		t.Run("native-sidecar="+tc.flag, func(t *testing.T) {
			td := spiffeid.RequireTrustDomainFromString("cluster.local")
			ca := testutil.NewCA(t, td, nil)
			id := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-injector")
			ident := &fakeIdentity{svid: testutil.SVID(t, ca, id, 0), bundle: ca.Bundle(), ready: make(chan struct{}), ran: make(chan struct{})}
			kube := fake.NewClientset(webhookConfig(nil))
			// Native sidecars are GA from Kubernetes 1.29 (-native-sidecar=auto).
			kube.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &k8sversion.Info{GitVersion: "v1.33.0", Major: "1", Minor: "33"}
			weft := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
				map[schema.GroupVersionResource]string{v1alpha1.MeshConfigResource: "MeshConfigList"})
			ctx, cancel := context.WithCancel(context.Background())
			addrc := make(chan string, 1)
			errc := make(chan error, 1)
			var logs testutil.SyncBuffer
			go func() {
				errc <- Run(ctx, RunConfig{Kube: kube, Weft: weft, Identity: ident, NativeSidecar: tc.flag, Addr: "127.0.0.1:0", Logger: debugLogger(&logs),
					Ready: func(a net.Addr) { addrc <- a.String() }})
			}()
			addr := awaitReady(t, addrc, errc)
			want, err := rootsPEM(ident, td)
			if err != nil || len(want) == 0 {
				t.Fatalf("roots: %q, %v", want, err)
			}
			testutil.Eventually(t, "the webhook's caBundle is the identity's roots", func() bool {
				got, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfiguration, metav1.GetOptions{})
				return err == nil && string(got.Webhooks[0].ClientConfig.CABundle) == string(want)
			})
			if got := servedID(t, addr, want); got != id.String() {
				t.Errorf("served %s, want %s", got, id)
			}
			// The operator is told which identity the webhook serves.
			if l := `msg="serving certificate obtained" spiffe_id=` + id.String(); !strings.Contains(logs.String(), l) {
				t.Errorf("no log %q in:\n%s", l, logs.String())
			}
			// The webhook it serves admits as its flags say: weft-proxy a
			// native sidecar (an init container restarted Always) or not.
			pod := loadPod(t, "plain")
			review := admitOver(t, addr, want, reviewBody(t, pod, "demo"))
			if review.Response == nil || !review.Response.Allowed {
				t.Fatalf("the served webhook refused the plain pod: %+v", review.Response)
			}
			got, _ := applyPatch(t, pod, review.Response)
			inits, apps := containerNames(got.Spec.InitContainers), containerNames(got.Spec.Containers)
			if native := slices.Contains(inits, ProxyName); native != tc.native || native == slices.Contains(apps, ProxyName) {
				t.Fatalf("init containers %v, containers %v: want weft-proxy native %v", inits, apps, tc.native)
			}
			if tc.native {
				if rp := got.Spec.InitContainers[slices.Index(inits, ProxyName)].RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
					t.Errorf("native weft-proxy restartPolicy = %v, want Always", rp)
				}
			}
			var inj Injection
			if err := json.Unmarshal([]byte(got.Annotations[AnnotationInjected]), &inj); err != nil || inj.Native != tc.native {
				t.Errorf("annotation %s = %q (%v), want native %v", AnnotationInjected, got.Annotations[AnnotationInjected], err, tc.native)
			}
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
			select {
			case <-ident.ran:
			default:
				t.Error("Run returned with its identity still running")
			}
		})
	}
}

func TestRunRequires(t *testing.T) {
	err := Run(context.Background(), RunConfig{})
	if err == nil || err.Error() != "injector: RunConfig.Kube, RunConfig.Weft and RunConfig.Identity are required" {
		t.Errorf("Run(RunConfig{}) = %v", err)
	}
}
