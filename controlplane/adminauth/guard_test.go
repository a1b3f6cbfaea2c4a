package adminauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/internal/testutil"
)

const ns = "weft-system"

// world is a fake API server that knows these tokens and grants, and a
// guarded server in front of a handler that says "secret".
type world struct {
	kube  *fake.Clientset
	clk   *clocktesting.FakeClock
	srv   *httptest.Server
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

func newWorld(t *testing.T, tlsOn bool) *world {
	t.Helper()
	kube := testutil.FakeKube(map[string]testutil.Token{
		"reader-token":   {User: "alice", Groups: []string{"system:authenticated"}, Audiences: []string{testutil.APIServerAudience}},
		"nobody-token":   {User: "system:serviceaccount:shop:default", Groups: []string{"system:serviceaccounts", "system:authenticated"}, Audiences: []string{testutil.APIServerAudience}},
		"debugger-token": {User: "bob", Groups: []string{"oncall", "system:authenticated"}, Audiences: []string{testutil.APIServerAudience}},
		"weft-ca-token":  {User: "alice", Audiences: []string{"weft-ca"}, Pod: "p", UID: "u"},
		"expired-token":  {User: "alice", Audiences: []string{testutil.APIServerAudience}, Expired: true},
		"sar-down-token": {User: testutil.SARErrorUser, Audiences: []string{testutil.APIServerAudience}},
	})
	testutil.FakeRBAC(kube,
		testutil.Grant{Subject: "alice", Verb: "get", Group: Group, Resource: ResourceAuditEvents, Namespace: ns},
		testutil.Grant{Subject: "group:oncall", Verb: "get", Group: Group, Resource: ResourceDebug, Namespace: ns},
		testutil.Grant{Subject: "carol", Verb: "get", Group: Group, Resource: ResourceAuditEvents},
		// The right resource in another namespace grants nothing here.
		testutil.Grant{Subject: "system:serviceaccount:shop:default", Verb: "get", Group: Group, Resource: ResourceAuditEvents, Namespace: "shop"},
	)
	clk := testutil.FakeClock(t)
	g, err := New(Config{Client: kube, Namespace: ns, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	secret := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "secret") })
	mux := http.NewServeMux()
	mux.Handle("/audit/", g.Protect(ResourceAuditEvents, secret))
	mux.Handle("/debug/", g.Protect(ResourceDebug, secret))
	w := &world{kube: kube, clk: clk}
	w.ca, w.caKey = testutil.ClientCA(t, clk.Now())
	if !tlsOn {
		w.srv = httptest.NewServer(mux)
	} else {
		w.srv = httptest.NewUnstartedServer(mux)
		pool := x509.NewCertPool()
		pool.AddCert(w.ca)
		w.srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool, Time: clk.Now}
		w.srv.StartTLS()
	}
	t.Cleanup(w.srv.Close)
	return w
}

// clientCert is a client certificate for user in groups signed by the
// world's client CA (or by another CA with foreign).
func (w *world) clientCert(t *testing.T, user string, groups []string, foreign bool) tls.Certificate {
	t.Helper()
	ca, caKey := w.ca, w.caKey
	if foreign {
		ca, caKey = testutil.ClientCA(t, w.clk.Now())
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: w.clk.Now().Add(-time.Minute), NotAfter: w.clk.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (w *world) get(t *testing.T, path, token string, cert *tls.Certificate) (int, string) {
	t.Helper()
	client := w.srv.Client()
	if cert != nil {
		tr := client.Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
		client = &http.Client{Transport: tr}
	}
	req, _ := http.NewRequest(http.MethodGet, w.srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, b := testutil.Do(t, client, req)
	return resp.StatusCode, strings.TrimSpace(b)
}

func (w *world) count(verb, resource string) int {
	n := 0
	for _, a := range w.kube.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}

func TestGuardAnswersByCredentialAndRBAC(t *testing.T) {
	w := newWorld(t, true)
	for _, tc := range []struct {
		name, path, token string
		want              int
		body              string
	}{
		{"no credentials", "/audit/events", "", http.StatusUnauthorized, "no credentials"},
		{"unknown token", "/audit/events", "made-up", http.StatusUnauthorized, "token refused"},
		{"expired token", "/audit/events", "expired-token", http.StatusUnauthorized, "token refused"},
		{"a pod's weft-ca token is not for the API server", "/audit/events", "weft-ca-token", http.StatusUnauthorized, "token refused"},
		{"authenticated, no RBAC", "/audit/events", "nobody-token", http.StatusForbidden, `user "system:serviceaccount:shop:default" cannot get auditevents.weft.dev in namespace weft-system`},
		{"no RBAC for /debug", "/debug/status", "nobody-token", http.StatusForbidden, "cannot get debug.weft.dev"},
		{"audit reader", "/audit/events", "reader-token", http.StatusOK, "secret"},
		{"audit reader is no debugger", "/debug/status", "reader-token", http.StatusForbidden, `user "alice" cannot get debug.weft.dev`},
		{"debugger by group", "/debug/status", "debugger-token", http.StatusOK, "secret"},
		{"debugger is no audit reader", "/audit/summary", "debugger-token", http.StatusForbidden, "cannot get auditevents.weft.dev"},
		{"SubjectAccessReview fails", "/audit/events", "sar-down-token", http.StatusServiceUnavailable, "cannot authorize now"},
		{"TokenReview fails", "/audit/events", testutil.TokenReviewErrorToken, http.StatusServiceUnavailable, "cannot authenticate now"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := w.get(t, tc.path, tc.token, nil)
			if code != tc.want || !strings.Contains(body, tc.body) {
				t.Fatalf("GET %s with %q: %d %q, want %d containing %q", tc.path, tc.token, code, body, tc.want, tc.body)
			}
		})
	}
}

func TestGuardAcceptsClientCertificatesOfTheClusterCA(t *testing.T) {
	w := newWorld(t, true)
	carol := w.clientCert(t, "carol", nil, false)
	if code, body := w.get(t, "/audit/events", "", &carol); code != http.StatusOK || body != "secret" {
		t.Fatalf("carol's certificate (ClusterRoleBinding): %d %q", code, body)
	}
	oncall := w.clientCert(t, "dave", []string{"oncall"}, false)
	if code, body := w.get(t, "/debug/status", "", &oncall); code != http.StatusOK {
		t.Fatalf("dave in group oncall: %d %q", code, body)
	}
	if code, body := w.get(t, "/audit/events", "", &oncall); code != http.StatusForbidden || !strings.Contains(body, `user "dave" cannot get auditevents`) {
		t.Fatalf("dave on /audit: %d %q", code, body)
	}
	// The certificate names the user; a token sent with it changes nothing.
	if code, _ := w.get(t, "/audit/events", "reader-token", &oncall); code != http.StatusForbidden {
		t.Fatalf("dave's certificate with alice's token: %d, want 403", code)
	}
	// Another CA's certificate does not even finish the handshake.
	forged := w.clientCert(t, "carol", nil, true)
	client := w.srv.Client()
	tr := client.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{forged}
	if resp, err := (&http.Client{Transport: tr}).Get(w.srv.URL + "/audit/events"); err == nil {
		resp.Body.Close()
		t.Fatalf("a certificate of another CA: %s, want a failed handshake", resp.Status)
	}
}

func TestGuardRefusesPlainHTTP(t *testing.T) {
	w := newWorld(t, false)
	for _, path := range []string{"/audit/events", "/debug/status"} {
		code, body := w.get(t, path, "reader-token", nil)
		if code != http.StatusForbidden || !strings.Contains(body, "served over TLS only") {
			t.Fatalf("plain GET %s: %d %q", path, code, body)
		}
	}
	// The token sent in the clear was not even reviewed.
	if n := w.count("create", "tokenreviews"); n != 0 {
		t.Fatalf("%d TokenReviews for plain-HTTP requests, want 0", n)
	}
}

func TestGuardCachesReviewsForTTL(t *testing.T) {
	w := newWorld(t, true)
	for range 3 {
		if code, _ := w.get(t, "/audit/events", "reader-token", nil); code != http.StatusOK {
			t.Fatalf("reader: %d", code)
		}
		if code, _ := w.get(t, "/debug/status", "reader-token", nil); code != http.StatusForbidden {
			t.Fatalf("reader on /debug: %d", code)
		}
	}
	if tr, sar := w.count("create", "tokenreviews"), w.count("create", "subjectaccessreviews"); tr != 1 || sar != 2 {
		t.Fatalf("%d TokenReviews and %d SubjectAccessReviews for 6 requests of one token on two resources, want 1 and 2", tr, sar)
	}
	w.clk.Step(11 * time.Second)
	if code, _ := w.get(t, "/audit/events", "reader-token", nil); code != http.StatusOK {
		t.Fatalf("reader: %d", code)
	}
	if tr, sar := w.count("create", "tokenreviews"), w.count("create", "subjectaccessreviews"); tr != 2 || sar != 3 {
		t.Fatalf("after the TTL: %d TokenReviews and %d SubjectAccessReviews, want 2 and 3", tr, sar)
	}
	// A refused token is never cached: each try is asked again.
	for range 2 {
		w.get(t, "/audit/events", "made-up", nil)
	}
	if tr := w.count("create", "tokenreviews"); tr != 4 {
		t.Fatalf("%d TokenReviews, want 4", tr)
	}
}

// TestGuardLimitsAPICallsPerSource: made-up tokens from one address cost
// at most the source's burst in TokenReviews; past it the answer is 429
// with Retry-After and no API call; the budget refills with time; a token
// already reviewed (served from the cache) is not limited.
func TestGuardLimitsAPICallsPerSource(t *testing.T) {
	w := newWorld(t, true)
	if code, _ := w.get(t, "/audit/events", "reader-token", nil); code != http.StatusOK {
		t.Fatalf("reader: %d", code)
	}
	base := w.count("create", "tokenreviews") + w.count("create", "subjectaccessreviews") // 2
	limited := 0
	for i := range 50 {
		code, _ := w.get(t, "/audit/events", fmt.Sprintf("made-up-%d", i), nil)
		switch code {
		case http.StatusUnauthorized:
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("made-up token %d: %d", i, code)
		}
	}
	calls := w.count("create", "tokenreviews") + w.count("create", "subjectaccessreviews") - base
	// The reader's two calls and the 48 made-up tokens share the burst of 20.
	if calls != 18 || limited != 32 {
		t.Fatalf("50 made-up tokens from one address: %d API calls and %d answered 429, want 18 and 32", calls, limited)
	}
	// The reviewed token still works from the cache, limit or not.
	if code, _ := w.get(t, "/audit/events", "reader-token", nil); code != http.StatusOK {
		t.Fatalf("reader after the flood: %d", code)
	}
	// A 429 says when to come back.
	req, _ := http.NewRequest(http.MethodGet, w.srv.URL+"/audit/events", nil)
	req.Header.Set("Authorization", "Bearer made-up-again")
	resp, err := w.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("limited request: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// One second later, five more API calls are allowed.
	w.clk.Step(time.Second)
	before := w.count("create", "tokenreviews")
	for i := range 10 {
		w.get(t, "/audit/events", fmt.Sprintf("later-%d", i), nil)
	}
	if n := w.count("create", "tokenreviews") - before; n != 5 {
		t.Fatalf("a second later: %d TokenReviews for 10 made-up tokens, want 5", n)
	}
}
