package weftctl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/adminauth"
	"github.com/weftmesh/weft/internal/testutil"
)

// The TLS client of cpadmin.go against a control plane's admin port on
// loopback: the real guard (adminauth) in front, a fake API server behind
// it. TLS runs on the wall clock here, on both ends: client-go verifies
// with it.

type cpAdminWorld struct {
	srv      *httptest.Server
	requests atomic.Int32 // requests that reached the guard
	bundle   []byte       // weft's roots, as published in weft-trust-bundle
	clientCA *x509.Certificate
	caKey    *ecdsa.PrivateKey
}

func newCPAdminWorld(t *testing.T, serverCert func(ca *certs.CA) tls.Certificate) *cpAdminWorld {
	t.Helper()
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local")})
	if err != nil {
		t.Fatal(err)
	}
	w := &cpAdminWorld{bundle: ca.BundlePEM()}
	w.clientCA, w.caKey = testutil.ClientCA(t, time.Now())
	kube := testutil.FakeKube(map[string]testutil.Token{
		"reader-token":  {User: "alice", Audiences: []string{testutil.APIServerAudience}},
		"nobody-token":  {User: "mallory", Audiences: []string{testutil.APIServerAudience}},
		"weft-ca-token": {User: "system:serviceaccount:shop:web", Audiences: []string{"weft-ca"}, Pod: "web-1", UID: "u"},
	})
	testutil.FakeRBAC(kube,
		testutil.Grant{Subject: "alice", Verb: "get", Group: adminauth.Group, Resource: adminauth.ResourceAuditEvents, Namespace: "weft-system"},
		testutil.Grant{Subject: "group:auditors", Verb: "get", Group: adminauth.Group, Resource: adminauth.ResourceAuditEvents, Namespace: "weft-system"})
	guard, err := adminauth.New(adminauth.Config{Client: kube, Namespace: "weft-system"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/audit/", guard.Protect(adminauth.ResourceAuditEvents, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.WriteString(rw, `{"events":[],"query":"`+r.URL.RawQuery+`"}`)
	})))
	w.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.requests.Add(1)
		mux.ServeHTTP(rw, r)
	}))
	pool := x509.NewCertPool()
	pool.AddCert(w.clientCA)
	if serverCert == nil {
		serverCert = func(ca *certs.CA) tls.Certificate {
			id := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-controlplane")
			return testutil.Certificate(t, ca, id, "weft-controlplane.weft-system.svc")
		}
	}
	w.srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert(ca)}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	w.srv.StartTLS()
	t.Cleanup(w.srv.Close)
	return w
}

// clientCertPEM is a kubeconfig's client certificate and key for user in
// groups, from the cluster's client CA.
func (w *cpAdminWorld) clientCertPEM(t *testing.T, user string, groups ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, w.clientCA, key.Public(), w.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// admin is the cpAdmin weftctl builds for a kubeconfig rc, its
// port-forward replaced by the loopback server's address.
func (w *cpAdminWorld) admin(rc *rest.Config) *cpAdmin {
	kube := testutil.FakeKube(nil, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-trust-bundle"},
		Data: map[string]string{"bundle.pem": string(w.bundle)}})
	addr := w.srv.Listener.Addr().String()
	return &cpAdmin{kube: kube, rest: rc, weftNS: "weft-system", forward: func(_ context.Context, pod *corev1.Pod, port int) (string, func(), error) {
		if pod.Namespace != "weft-system" || port != controlPlanePort {
			return "", nil, io.ErrUnexpectedEOF
		}
		return addr, func() {}, nil
	}}
}

var cpPod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-controlplane-0"}}

// apiServer is a kubeconfig's cluster: its CA is not weft's, its address
// is never dialled here.
func apiServer() *rest.Config {
	return &rest.Config{Host: "https://apiserver.invalid:6443", UserAgent: "weftctl/test"}
}

func TestControlPlaneAdminSendsTheKubeconfigsCredentials(t *testing.T) {
	w := newCPAdminWorld(t, nil)
	query := url.Values{"namespace": {"shop"}}

	token := apiServer()
	token.BearerToken = "reader-token"
	b, err := w.admin(token).get(context.Background(), cpPod, "/audit/events", query)
	if err != nil || string(b) != `{"events":[],"query":"namespace=shop"}` {
		t.Fatalf("a reader's token: %q, %v", b, err)
	}

	cert := apiServer()
	cert.CertData, cert.KeyData = w.clientCertPEM(t, "bob", "auditors")
	if b, err := w.admin(cert).get(context.Background(), cpPod, "/audit/events", query); err != nil {
		t.Fatalf("a client certificate of group auditors: %q, %v", b, err)
	}

	for name, tc := range map[string]struct {
		mut  func(*rest.Config)
		want string
	}{
		"no credentials":           {func(*rest.Config) {}, "401 Unauthorized: the control plane did not accept the kubeconfig's credentials"},
		"a token it refuses":       {func(c *rest.Config) { c.BearerToken = "made-up" }, "401 Unauthorized"},
		"a pod's weft-ca token":    {func(c *rest.Config) { c.BearerToken = "weft-ca-token" }, "401 Unauthorized"},
		"a token without RBAC":     {func(c *rest.Config) { c.BearerToken = "nobody-token" }, `403 Forbidden: weft: forbidden: user "mallory" cannot get auditevents.weft.dev in namespace weft-system`},
		"a certificate w/o RBAC":   {func(c *rest.Config) { c.CertData, c.KeyData = w.clientCertPEM(t, "eve", "staff") }, `user "eve" cannot get auditevents.weft.dev`},
		"impersonation is refused": {func(c *rest.Config) { c.BearerToken = "reader-token"; c.Impersonate.UserName = "mallory" }, "does not honour impersonation"},
	} {
		rc := apiServer()
		tc.mut(rc)
		_, err := w.admin(rc).get(context.Background(), cpPod, "/audit/events", query)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, tc.want)
		}
	}
}

// A server whose certificate weft's bundle does not vouch for, or that is
// not the control plane's, never sees the token.
func TestControlPlaneAdminSendsNothingToAnImpostor(t *testing.T) {
	for name, cert := range map[string]func(*certs.CA) tls.Certificate{
		"another CA": func(*certs.CA) tls.Certificate {
			other, err := certs.NewCA(certs.CAConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local")})
			if err != nil {
				t.Fatal(err)
			}
			id := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-controlplane")
			return testutil.Certificate(t, other, id, "weft-controlplane.weft-system.svc")
		},
		"weft's CA, another name": func(ca *certs.CA) tls.Certificate {
			id := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-injector")
			return testutil.Certificate(t, ca, id, "weft-injector.weft-system.svc")
		},
	} {
		w := newCPAdminWorld(t, cert)
		rc := apiServer()
		rc.BearerToken = "reader-token"
		if _, err := w.admin(rc).get(context.Background(), cpPod, "/audit/events", nil); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: err = %v, want a certificate error", name, err)
		}
		if n := w.requests.Load(); n != 0 {
			t.Errorf("%s: %d requests reached the impostor", name, n)
		}
	}
}
