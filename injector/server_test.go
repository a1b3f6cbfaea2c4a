package injector

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/weftmesh/weft/internal/testutil"
)

const serverName = "weft-injector.weft-system.svc"

// testCA signs serving certificates with chosen serial numbers.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1000), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{{Scheme: "spiffe", Host: "cluster.local"}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf is an X509-SVID for the injector with its Service's DNS name.
func (ca *testCA) leaf(t *testing.T, serial int64) *x509svid.SVID {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-injector")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{id.URL()}, DNSNames: []string{serverName}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// swappableSVIDs is an x509svid.Source whose SVID a test replaces, as a
// renewal would.
type swappableSVIDs struct{ cur atomic.Pointer[x509svid.SVID] }

func (s *swappableSVIDs) GetX509SVID() (*x509svid.SVID, error) { return s.cur.Load(), nil }

// source is a swappableSVIDs holding ca's leaf with serial.
func (ca *testCA) source(t *testing.T, serial int64) *swappableSVIDs {
	s := &swappableSVIDs{}
	s.cur.Store(ca.leaf(t, serial))
	return s
}

// startServer runs Serve until the test ends and returns its address.
func startServer(t *testing.T, certs CertificateSource, obs Observer) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- Serve(ctx, ServerConfig{Addr: "127.0.0.1:0", Injector: newInjector(t, true), Certificates: certs, Observer: obs,
			Ready: func(a net.Addr) { addrc <- a.String() }})
	}()
	addr := awaitReady(t, addrc, errc)
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve returned %v", err)
		}
	})
	return addr
}

// awaitReady is the address a server started in the background reports
// through its Ready callback (addrc); it fails t if the server returns
// first (errc) or does not report within 10 s.
func awaitReady(t *testing.T, addrc <-chan string, errc <-chan error) string {
	t.Helper()
	select {
	case a := <-addrc:
		return a
	case err := <-errc:
		t.Fatalf("returned before serving: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Ready was never called")
	}
	return ""
}

func client(ca *testCA) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: serverName}}}
}

type recordingObserver struct{ got chan Outcome }

func (r recordingObserver) Observe(o Outcome) { r.got <- o }

func TestServeInject(t *testing.T) {
	ca := newTestCA(t)
	src := ca.source(t, 1)
	obs := recordingObserver{make(chan Outcome, 10)}
	addr := startServer(t, SVIDCertificates(src), obs)
	c := client(ca)

	resp, err := c.Post("https://"+addr+"/inject", "application/json; charset=utf-8",
		bytes.NewReader(reviewBody(t, loadPod(t, "plain"), "demo")))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, decode %v", resp.StatusCode, err)
	}
	if r := review.Response; r == nil || !r.Allowed || len(r.Patch) == 0 || r.UID != "0d9c7e1a-5b8f-4f62-8f0e-1a2b3c4d5e6f" {
		t.Fatalf("response %+v", review.Response)
	}
	if o := <-obs.got; o.Action != Injected {
		t.Errorf("observed %+v", o)
	}

	for _, tc := range []struct {
		name, method, path, ctype string
		body                      []byte
		status                    int
	}{
		{"healthz", "GET", "/healthz", "", nil, 200},
		{"get inject", "GET", "/inject", "", nil, 405},
		{"text body", "POST", "/inject", "text/plain", []byte("{}"), 415},
		{"too large", "POST", "/inject", "application/json", bytes.Repeat([]byte(" "), MaxBodyBytes+1), 413},
		{"malformed", "POST", "/inject", "application/json", []byte("{"), 200},
		{"unknown path", "GET", "/other", "", nil, 404},
	} {
		req, _ := http.NewRequest(tc.method, "https://"+addr+tc.path, bytes.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, b := testutil.Do(t, c, req)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, resp.StatusCode, tc.status, b)
		}
		if tc.name == "malformed" && !strings.Contains(string(b), `"allowed":false`) {
			t.Errorf("malformed: %s", b)
		}
	}
}

// A renewed certificate is served to the next connection, no restart.
func TestServeRenewedCertificate(t *testing.T) {
	ca := newTestCA(t)
	src := ca.source(t, 1)
	addr := startServer(t, SVIDCertificates(src), nil)
	serial := func() int64 {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: serverName})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	src.cur.Store(ca.leaf(t, 2))
	if s := serial(); s != 2 {
		t.Fatalf("after renewal serial %d, want 2", s)
	}
}

func TestServeRefusesOldTLS(t *testing.T) {
	ca := newTestCA(t)
	src := ca.source(t, 1)
	addr := startServer(t, SVIDCertificates(src), nil)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: serverName, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
}

func TestSVIDCertificatesWithoutSVID(t *testing.T) {
	_, err := SVIDCertificates(&swappableSVIDs{}).GetCertificate(&tls.ClientHelloInfo{})
	if err == nil || !strings.HasPrefix(err.Error(), "injector: serving certificate: ") {
		t.Errorf("err = %v", err)
	}
}

func TestServeConfigRequired(t *testing.T) {
	err := Serve(context.Background(), ServerConfig{})
	if err == nil || !strings.HasPrefix(err.Error(), "injector: ServerConfig.Injector and ServerConfig.Certificates are required") {
		t.Errorf("err = %v", err)
	}
}
