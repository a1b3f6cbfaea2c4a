package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/peer"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// podGetFails is a pod the fixture's API server fails to read.
const podGetFails = "flaky-1"

func newCSR(t testing.TB, uris ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tpl.URIs = append(tpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func withToken(tok string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
}

type fixture struct {
	svc   *Service
	ca    *certs.CA
	clock *clocktesting.FakeClock
	reg   *prometheus.Registry
	api   *fake.Clientset
}

// sign signs req presenting token; an error fails the test.
func (f fixture) sign(t *testing.T, token string, req *certificatev1.SignRequest) *certificatev1.SignResponse {
	t.Helper()
	resp, err := f.svc.Sign(withToken(token), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// reviews is how many TokenReviews the fake API server answered.
func (f fixture) reviews() int { return f.actions("create", "tokenreviews") }

// actions is how many requests of verb on resource the fake API server
// answered.
func (f fixture) actions(verb, resource string) int {
	n := 0
	for _, a := range f.api.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}

func newFixture(t *testing.T, mut func(*Config)) fixture {
	t.Helper()
	clk := testutil.FakeClock(t)
	ca := testutil.NewCA(t, td, clk)
	api := testutil.FakeKube(map[string]testutil.Token{
		"good":       {User: "system:serviceaccount:demo:app", Audiences: []string{Audience}, Pod: "app-1", UID: "u1"},
		"good2":      {User: "system:serviceaccount:demo:app", Audiences: []string{Audience}, Pod: "app-2", UID: "u2"},
		"other":      {User: "system:serviceaccount:demo:other", Audiences: []string{Audience}, Pod: "other-1", UID: "o1"},
		"expired":    {User: "system:serviceaccount:demo:app", Audiences: []string{Audience}, Pod: "app-1", UID: "u1", Expired: true},
		"foreignaud": {User: "system:serviceaccount:demo:app", Audiences: []string{"https://kubernetes.default.svc"}, Pod: "app-1", UID: "u1"},
		"deletedpod": {User: "system:serviceaccount:demo:app", Audiences: []string{Audience}, Pod: "gone", UID: "g1"},
		"reusedname": {User: "system:serviceaccount:demo:app", Audiences: []string{Audience}, Pod: "app-1", UID: "old-uid"},
		"wrongsa":    {User: "system:serviceaccount:demo:other", Audiences: []string{Audience}, Pod: "app-1", UID: "u1"},
		"unbound":    {User: "system:serviceaccount:demo:app", Audiences: []string{Audience}},
		"human":      {User: "alice", Audiences: []string{Audience}, Pod: "app-1", UID: "u1"},
		"injector":   {User: "system:serviceaccount:weft-system:weft-injector", Audiences: []string{Audience}, Pod: "inj-1", UID: "i1"},
		// legacy-1 names no service account, so it runs as "default".
		"legacy":       {User: "system:serviceaccount:demo:default", Audiences: []string{Audience}, Pod: "legacy-1", UID: "l1"},
		"defaultonapp": {User: "system:serviceaccount:demo:default", Audiences: []string{Audience}, Pod: "app-1", UID: "u1"},
		"apponlegacy":  {User: "system:serviceaccount:demo:app", Audiences: []string{Audience}, Pod: "legacy-1", UID: "l1"},
		"podgetfails":  {User: "system:serviceaccount:demo:app", Audiences: []string{Audience}, Pod: podGetFails, UID: "f1"},
	}, testutil.Pod("demo", "app-1", "u1", "app"), testutil.Pod("demo", "app-2", "u2", "app"), testutil.Pod("demo", "other-1", "o1", "other"),
		testutil.Pod("weft-system", "inj-1", "i1", "weft-injector"), testutil.Pod("demo", "legacy-1", "l1", ""))
	api.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.GetAction).GetName() == podGetFails {
			return true, nil, errors.New("etcdserver: request timed out")
		}
		return false, nil, nil
	})
	reg := prometheus.NewRegistry()
	injectorID := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-injector")
	cfg := Config{
		CA: ca, Authenticator: &TokenReviewer{Client: api}, Clock: clk, Registerer: reg,
		ServerNames: map[spiffeid.ID][]string{injectorID: {"weft-injector.weft-system.svc"}},
	}
	if mut != nil {
		mut(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{svc: svc, ca: ca, clock: clk, reg: reg, api: api}
}

func TestSignIssuesTheTokensIdentity(t *testing.T) {
	f := newFixture(t, nil)
	// The CSR asks for another identity; the SVID must carry the token's.
	csr := newCSR(t, "spiffe://cluster.local/ns/kube-system/sa/admin")
	resp := f.sign(t, "good", &certificatev1.SignRequest{Csr: csr})
	if want := "spiffe://cluster.local/ns/demo/sa/app"; resp.SpiffeId != want {
		t.Fatalf("spiffe_id = %q, want %q", resp.SpiffeId, want)
	}
	chain := parseChain(t, resp.CertChain)
	id, _, err := x509svid.Verify(chain, f.ca.Bundle(), x509svid.WithTime(f.clock.Now()))
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if id.String() != resp.SpiffeId {
		t.Fatalf("verified ID %s, response says %s", id, resp.SpiffeId)
	}
	if len(chain[0].URIs) != 1 || len(chain[0].DNSNames) != 0 {
		t.Fatalf("SVID SANs: URIs %v DNS %v; want exactly the one SPIFFE ID", chain[0].URIs, chain[0].DNSNames)
	}
	if len(resp.TrustBundle) != 1 {
		t.Fatalf("trust bundle has %d roots, want 1", len(resp.TrustBundle))
	}
	if got := promtest.ToFloat64(f.svc.issued); got != 1 {
		t.Fatalf("weft_ca_svids_issued_total = %v, want 1", got)
	}
}

func TestSignClampsTTL(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxTTL = time.Hour })
	resp := f.sign(t, "good", &certificatev1.SignRequest{Csr: newCSR(t), TtlSeconds: 48 * 3600})
	leaf := parseChain(t, resp.CertChain)[0]
	if life := leaf.NotAfter.Sub(f.clock.Now()); life > time.Hour {
		t.Fatalf("SVID lives %v past now, want at most the 1h maximum", life)
	}
}

// A pod whose spec names no service account runs as "default", so a token
// for default bound to it is that pod's own.
func TestSignPodWithoutServiceAccountIsDefault(t *testing.T) {
	f := newFixture(t, nil)
	resp := f.sign(t, "legacy", &certificatev1.SignRequest{Csr: newCSR(t)})
	if want := "spiffe://cluster.local/ns/demo/sa/default"; resp.SpiffeId != want {
		t.Fatalf("spiffe_id = %q, want %q", resp.SpiffeId, want)
	}
}

// The SVID lives as long as asked, up to MaxTTL (24h unless configured);
// asking for nothing gets MaxTTL.
func TestSignTTL(t *testing.T) {
	for _, tt := range []struct {
		maxTTL time.Duration
		ask    time.Duration
		want   time.Duration
	}{
		{0, 0, 24 * time.Hour},
		{0, time.Hour, time.Hour},
		{0, 24*time.Hour - time.Second, 24*time.Hour - time.Second},
		{0, 24 * time.Hour, 24 * time.Hour},
		{0, 24*time.Hour + time.Second, 24 * time.Hour},
		{2 * time.Hour, 0, 2 * time.Hour},
		{2 * time.Hour, time.Second, time.Second},
		{2 * time.Hour, 2 * time.Hour, 2 * time.Hour},
		{2 * time.Hour, 2*time.Hour + time.Second, 2 * time.Hour},
	} {
		t.Run(fmt.Sprintf("max %v ask %v", tt.maxTTL, tt.ask), func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.MaxTTL = tt.maxTTL })
			resp := f.sign(t, "good", &certificatev1.SignRequest{Csr: newCSR(t), TtlSeconds: int64(tt.ask / time.Second)})
			leaf := parseChain(t, resp.CertChain)[0]
			if life := leaf.NotAfter.Sub(f.clock.Now()); life != tt.want {
				t.Fatalf("SVID lives %v past now, want %v", life, tt.want)
			}
		})
	}
}

func TestMetricsRegistered(t *testing.T) {
	f := newFixture(t, nil)
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, mf := range families {
		got[mf.GetName()] = len(mf.GetMetric())
	}
	// The refusal counter has every reason from the start, at 0.
	want := map[string]int{"weft_ca_svids_issued_total": 1, "weft_ca_sign_refusals_total": 8, "weft_ca_sign_duration_seconds": 1}
	if len(got) != len(want) {
		t.Fatalf("registered %v, want %v", got, want)
	}
	for name, n := range want {
		if got[name] != n {
			t.Fatalf("registered %v, want %v", got, want)
		}
	}
}

func TestMetricsOptional(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Registerer = nil })
	f.sign(t, "good", &certificatev1.SignRequest{Csr: newCSR(t)})
	if got := promtest.ToFloat64(f.svc.issued); got != 1 {
		t.Fatalf("weft_ca_svids_issued_total = %v, want 1", got)
	}
}

func TestServerNamesOnlyForWeftServers(t *testing.T) {
	f := newFixture(t, nil)
	resp := f.sign(t, "injector", &certificatev1.SignRequest{Csr: newCSR(t)})
	leaf := parseChain(t, resp.CertChain)[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "weft-injector.weft-system.svc" {
		t.Fatalf("injector certificate DNS names = %v", leaf.DNSNames)
	}
}

func TestSignRefusals(t *testing.T) {
	tests := []struct {
		name    string
		ctx     context.Context
		csr     []byte
		ttl     int64
		code    codes.Code
		reason  string
		message string
	}{
		{"no metadata", context.Background(), nil, 0, codes.Unauthenticated, reasonNoToken, `no "authorization: Bearer <token>" metadata`},
		{"not bearer", metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Basic abc")), nil, 0, codes.Unauthenticated, reasonNoToken, "no \"authorization"},
		{"unknown token", withToken("forged"), nil, 0, codes.Unauthenticated, reasonBadToken, "identity: token refused: invalid bearer token"},
		{"expired token", withToken("expired"), nil, 0, codes.Unauthenticated, reasonBadToken, "identity: token refused: token has expired"},
		{"foreign audience", withToken("foreignaud"), nil, 0, codes.Unauthenticated, reasonBadToken, "is invalid for the target audiences"},
		{"deleted pod", withToken("deletedpod"), nil, 0, codes.Unauthenticated, reasonBadToken, "identity: token refused: pod demo/gone no longer exists"},
		{"pod name reused", withToken("reusedname"), nil, 0, codes.Unauthenticated, reasonBadToken, "identity: token refused: pod demo/app-1 has UID u1, token is bound to old-uid"},
		{"pod runs as another SA", withToken("wrongsa"), nil, 0, codes.Unauthenticated, reasonBadToken, `identity: token refused: pod demo/app-1 runs as "app", token is for "other"`},
		{"token not bound to a pod", withToken("unbound"), nil, 0, codes.Unauthenticated, reasonBadToken, "identity: token refused: token of demo/app is not bound to a pod"},
		{"token for default on a pod of another SA", withToken("defaultonapp"), nil, 0, codes.Unauthenticated, reasonBadToken, `identity: token refused: pod demo/app-1 runs as "app", token is for "default"`},
		{"token for an SA on a pod running as default", withToken("apponlegacy"), nil, 0, codes.Unauthenticated, reasonBadToken, `identity: token refused: pod demo/legacy-1 runs as "", token is for "app"`},
		{"pod unreadable", withToken("podgetfails"), nil, 0, codes.Unavailable, reasonReviewError, "identity: get pod demo/flaky-1: etcdserver: request timed out"},
		{"not a service account", withToken("human"), nil, 0, codes.Unauthenticated, reasonBadToken, `identity: token refused: user "alice" is not a service account`},
		{"API server down", withToken(testutil.TokenReviewErrorToken), nil, 0, codes.Unavailable, reasonReviewError, "identity: TokenReview: connection refused"},
		{"garbage CSR", withToken("good"), []byte("not a csr"), 0, codes.InvalidArgument, reasonBadCSR, "certs: "},
		{"negative ttl", withToken("good"), nil, -5, codes.InvalidArgument, reasonBadTTL, "identity: negative ttl_seconds -5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			csr := tt.csr
			if csr == nil {
				csr = newCSR(t)
			}
			_, err := f.svc.Sign(tt.ctx, &certificatev1.SignRequest{Csr: csr, TtlSeconds: tt.ttl})
			st, _ := status.FromError(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.message) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.message)
			}
			if got := promtest.ToFloat64(f.svc.refusals.WithLabelValues(tt.reason)); got != 1 {
				t.Fatalf("weft_ca_sign_refusals_total{reason=%q} = %v, want 1", tt.reason, got)
			}
			if got := promtest.ToFloat64(f.svc.issued); got != 0 {
				t.Fatalf("issued %v SVIDs on a refused request", got)
			}
		})
	}
}

func TestRateLimitPerPod(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = 0.5; c.RateBurst = 2 })
	sign := func(tok string) codes.Code {
		_, err := f.svc.Sign(withToken(tok), &certificatev1.SignRequest{Csr: newCSR(t)})
		return status.Code(err)
	}
	for i, want := range []codes.Code{codes.OK, codes.OK, codes.ResourceExhausted} {
		if c := sign("good"); c != want {
			t.Fatalf("pod app-1, request %d: %v, want %v", i+1, c, want)
		}
	}
	// A sibling pod of the same ServiceAccount has its own bucket: one
	// noisy pod does not starve the others.
	if c := sign("good2"); c != codes.OK {
		t.Fatalf("sibling pod: %v", c)
	}
	if c := sign("other"); c != codes.OK {
		t.Fatalf("other identity: %v", c)
	}
	// 0.5/s refills one token in 2s.
	f.clock.Step(2 * time.Second)
	if c := sign("good"); c != codes.OK {
		t.Fatalf("after refill: %v", c)
	}
	if c := sign("good"); c != codes.ResourceExhausted {
		t.Fatalf("after spending the refill: %v", c)
	}
	if got := promtest.ToFloat64(f.svc.refusals.WithLabelValues(reasonRateLimited)); got != 2 {
		t.Fatalf("rate_limited refusals = %v, want 2", got)
	}
}

// TestSourceLimitBeforeAPICalls: a source flooding the service with tokens
// (good or bad) is cut off before any TokenReview is made for it past its
// burst, from whichever port (a source is its IP); another source is not.
func TestSourceLimitBeforeAPICalls(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SourceRateLimit = 1; c.SourceBurst = 3 })
	port := 40000
	from := func(ip string) context.Context {
		port++ // a new connection each time
		return peer.NewContext(withToken("bogus"), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: port}})
	}
	for i := range 10 {
		_, err := f.svc.Sign(from("198.18.0.66"), &certificatev1.SignRequest{Csr: newCSR(t)})
		want := codes.Unauthenticated
		if i >= 3 {
			want = codes.ResourceExhausted
		}
		if status.Code(err) != want {
			t.Fatalf("request %d: %v, want %v", i+1, err, want)
		}
	}
	if n := f.reviews(); n != 3 {
		t.Fatalf("%d TokenReviews for 10 requests from one source, want 3 (the burst)", n)
	}
	if _, err := f.svc.Sign(from("198.18.0.67"), &certificatev1.SignRequest{Csr: newCSR(t)}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("another source: %v", err)
	}
	if got := promtest.ToFloat64(f.svc.refusals.WithLabelValues(reasonSourceLimit)); got != 7 {
		t.Fatalf("source_rate_limited = %v, want 7", got)
	}
}

func parseChain(t *testing.T, ders [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// TestRateLimitForgetsIdleBuckets: a pod's bucket unused for longer than
// ten minutes is forgotten (the limiter's memory stays bounded), so even
// under a limit slower than that the pod starts over with a full burst.
func TestRateLimitForgetsIdleBuckets(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = rate.Every(time.Hour); c.RateBurst = 1 })
	sign := func() codes.Code {
		_, err := f.svc.Sign(withToken("good"), &certificatev1.SignRequest{Csr: newCSR(t)})
		return status.Code(err)
	}
	if c := sign(); c != codes.OK {
		t.Fatalf("first request: %v", c)
	}
	if c := sign(); c != codes.ResourceExhausted {
		t.Fatalf("second request at once: %v, want ResourceExhausted", c)
	}
	f.clock.Step(10*time.Minute + time.Nanosecond)
	if c := sign(); c != codes.OK {
		t.Fatalf("after ten minutes idle: %v, want OK (bucket forgotten)", c)
	}
}
