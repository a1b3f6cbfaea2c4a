package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
)

// With jitter 0.5 a 24 h SVID (backdated one minute) is renewed at half
// of 24h1m, counted from start-1m.
const halfLife = 11*time.Hour + 59*time.Minute + 30*time.Second

func TestNewRejectsBadConfig(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no client", Config{TokenPath: "/t"}, "identity: Config.Client is required"},
		{"no token path", Config{Client: e.client}, "identity: Config.TokenPath is required"},
		{"negative TTL", Config{Client: e.client, TokenPath: "/t", TTL: -time.Second}, "identity: Config.TTL -1s is negative"},
		{"max below initial", Config{Client: e.client, TokenPath: "/t", Backoff: Backoff{Initial: 2 * time.Minute}},
			"identity: Config.Backoff: want 0 < Initial <= Max, got Initial 2m0s, Max 1m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("New: got error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestFirstFetch(t *testing.T) {
	for _, tc := range []struct {
		name         string
		ttl          time.Duration
		wantLifetime time.Duration
	}{
		{"server default", 0, certs.DefaultWorkloadTTL},
		{"one hour", time.Hour, time.Hour},
		{"rounded up to seconds", 90*time.Minute + time.Nanosecond, 90*time.Minute + time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			m, _ := e.manager(t, "tok-a", Config{TTL: tc.ttl})
			if _, err := m.GetX509SVID(); err == nil || err.Error() != "identity: no X509-SVID yet" {
				t.Fatalf("GetX509SVID before Run: got %v", err)
			}
			if !m.NotAfter().IsZero() {
				t.Fatalf("NotAfter before Run: got %s, want zero", m.NotAfter())
			}
			e.run(t, m)

			svid, err := m.GetX509SVID()
			if err != nil {
				t.Fatal(err)
			}
			leaf := svid.Certificates[0]
			if svid.ID != idA {
				t.Errorf("ID: got %s, want %s", svid.ID, idA)
			}
			key, ok := svid.PrivateKey.(*ecdsa.PrivateKey)
			if !ok || key.Curve != elliptic.P256() {
				t.Fatalf("key: got %T, want an ECDSA P-256 key", svid.PrivateKey)
			}
			if !key.PublicKey.Equal(leaf.PublicKey) {
				t.Error("the leaf does not certify the private key")
			}
			if want := e.start.Add(tc.wantLifetime); !leaf.NotAfter.Equal(want) || !m.NotAfter().Equal(want) {
				t.Errorf("NotAfter: leaf %s, NotAfter() %s, want %s", leaf.NotAfter, m.NotAfter(), want)
			}
			if _, _, err := x509svid.Verify(svid.Certificates, e.ca.Bundle(), x509svid.WithTime(e.start)); err != nil {
				t.Errorf("SVID does not verify against the CA: %v", err)
			}
			bundle, err := m.GetX509BundleForTrustDomain(td)
			if err != nil || !bundle.Equal(e.ca.Bundle()) {
				t.Errorf("bundle: got %v (err %v), want the CA's", bundle, err)
			}
			other := spiffeid.RequireTrustDomainFromString("other.example")
			if _, err := m.GetX509BundleForTrustDomain(other); err == nil ||
				err.Error() != `identity: no X.509 bundle for trust domain "other.example" (have "cluster.local")` {
				t.Errorf("bundle for another trust domain: got %v", err)
			}
			if m.Renewals() != 1 || m.Failures() != 0 || e.svc.Calls() != 1 || e.svc.LastToken() != "tok-a" {
				t.Errorf("renewals %d failures %d calls %d token %q; want 1 0 1 tok-a",
					m.Renewals(), m.Failures(), e.svc.Calls(), e.svc.LastToken())
			}
		})
	}
}

func TestRenewsAtHalfLifeWithNewKey(t *testing.T) {
	for _, tc := range []struct {
		name   string
		jitter float64
		after  time.Duration // from start; the SVID is valid from start-1m to start+24h
	}{
		{"earliest (40%)", 0, 9*time.Hour + 35*time.Minute + 24*time.Second},
		{"half-life", 0.5, halfLife},
		{"latest (60%)", 1, 14*time.Hour + 23*time.Minute + 36*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			m, _ := e.manager(t, "tok-a", Config{Rand: func() float64 { return tc.jitter }})
			updates, cancel := m.Subscribe()
			defer cancel()
			e.run(t, m)
			<-updates
			first, _ := m.GetX509SVID()

			e.clock.Step(tc.after - time.Second)
			if e.svc.Calls() != 1 {
				t.Fatalf("renewed %s early", time.Second)
			}
			e.clock.Step(time.Second)
			testutil.Eventually(t, "renewal", func() bool { return m.Renewals() == 2 })
			e.waitWaiters(t, 1)

			second, err := m.GetX509SVID()
			if err != nil {
				t.Fatal(err)
			}
			if second.ID != idA {
				t.Errorf("ID: got %s, want %s", second.ID, idA)
			}
			if second.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
				t.Error("the certificate did not change")
			}
			if second.PrivateKey.(*ecdsa.PrivateKey).Equal(first.PrivateKey) {
				t.Error("the key did not change")
			}
			if got, want := second.Certificates[0].NotBefore, e.start.Add(tc.after-certs.Backdate); !got.Equal(want) {
				t.Errorf("new NotBefore: got %s, want %s", got, want)
			}
			select {
			case <-updates:
			default:
				t.Error("subscriber not told about the rotation")
			}
			if m.Failures() != 0 {
				t.Errorf("failures: got %d, want 0", m.Failures())
			}
		})
	}
}

func TestKeepsServingWhileControlPlaneFails(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(e *env, tokenPath string)
		fix     func(e *env, tokenPath string) // nil: stays broken
		wantLog string
	}{
		{
			name:    "unavailable",
			breakIt: func(e *env, _ string) { e.svc.FailNext(5) },
			wantLog: "code = Unavailable desc = testutil: CertService: failing as told",
		},
		{
			name:    "token refused",
			breakIt: func(e *env, path string) { writeToken(t, path, "tok-unknown") },
			fix:     func(e *env, path string) { writeToken(t, path, "tok-a") },
			wantLog: `code = Unauthenticated desc = testutil: CertService: unknown token \"tok-unknown\"`,
		},
		{
			name:    "server gone",
			breakIt: func(e *env, _ string) { e.stop() },
			wantLog: "code = Unavailable",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			logs := &testutil.SyncBuffer{}
			m, path := e.manager(t, "tok-a", Config{
				Logger:  slog.New(slog.NewTextHandler(logs, nil)),
				Backoff: Backoff{Initial: time.Second, Max: 8 * time.Second},
			})
			e.run(t, m)
			first, _ := m.GetX509SVID()

			tc.breakIt(e, path)
			e.clock.Step(halfLife)
			testutil.Eventually(t, "a failed renewal", func() bool { return m.Failures() == 1 })
			e.waitWaiters(t, 1)
			// Backoff: 1s, 2s, 4s, 8s, 8s... each times 0.75 (jitter 0.5).
			for i, d := range []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second, 6 * time.Second} {
				calls := e.svc.Calls()
				e.clock.Step(d - time.Millisecond)
				if e.svc.Calls() != calls || m.Failures() != uint64(i+1) {
					t.Fatalf("retry %d came before its backoff of %s", i+1, d)
				}
				e.clock.Step(time.Millisecond)
				testutil.Eventually(t, "a retry", func() bool { return m.Failures() == uint64(i+2) })
				e.waitWaiters(t, 1)
				if svid, err := m.GetX509SVID(); err != nil || svid != first {
					t.Fatalf("after %d failures: got %v, %v; want the first SVID still served", i+2, svid, err)
				}
			}
			for _, want := range []string{"level=WARN", "cannot renew the X509-SVID; keeping the current one", tc.wantLog} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs)
				}
			}
			if tc.fix == nil {
				return
			}
			tc.fix(e, path)
			e.clock.Step(6 * time.Second)
			testutil.Eventually(t, "recovery", func() bool { return m.Renewals() == 2 })
			e.waitWaiters(t, 1)
			if svid, err := m.GetX509SVID(); err != nil || svid == first {
				t.Fatalf("after recovery: got %v, %v; want a new SVID", svid, err)
			}
			// Back to the renewal schedule: nothing before the next half-life.
			calls := e.svc.Calls()
			e.clock.Step(halfLife - time.Second)
			if e.svc.Calls() != calls {
				t.Fatal("still retrying after recovery")
			}
		})
	}
}

func TestExpiredSVIDIsNotServed(t *testing.T) {
	e := newEnv(t)
	logs := &testutil.SyncBuffer{}
	m, _ := e.manager(t, "tok-a", Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	e.run(t, m)

	e.svc.FailNext(1 << 30)
	e.clock.Step(25 * time.Hour) // the renewal timer fires once, far too late
	testutil.Eventually(t, "a failed renewal", func() bool { return m.Failures() == 1 })
	e.waitWaiters(t, 1)

	want := "identity: X509-SVID for spiffe://cluster.local/ns/demo/sa/a expired at " + e.start.Add(24*time.Hour).UTC().Format(time.RFC3339)
	if svid, err := m.GetX509SVID(); err == nil || err.Error() != want {
		t.Errorf("GetX509SVID: got %v, %v; want error %q", svid, err, want)
	}
	if b, err := m.GetX509BundleForTrustDomain(td); err == nil || err.Error() != want {
		t.Errorf("GetX509BundleForTrustDomain: got %v, %v; want error %q", b, err, want)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "has expired; serving none") {
		t.Errorf("log does not report the expiry:\n%s", logs)
	}

	e.svc.FailNext(0)
	e.clock.Step(time.Second) // the first backoff is 750ms
	testutil.Eventually(t, "recovery", func() bool { return m.Renewals() == 2 })
	if _, err := m.GetX509SVID(); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestRejectsBadResponses(t *testing.T) {
	e0 := newEnv(t) // only its CA is used: "another CA" of the same trust domain
	oldCA, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: fixedClock(e0.start.Add(-48 * time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(ca *certs.CA, csr []byte, id spiffeid.ID, ttl time.Duration) [][]byte {
		chain, err := ca.Sign(certs.SignRequest{CSR: csr, ID: id, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return ders(chain)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, otherKey)

	for _, tc := range []struct {
		name    string
		tamper  func(e *env, req *certificatev1.SignRequest, resp *certificatev1.SignResponse)
		firstOK bool // a valid first SVID, but not as a renewal
		wantLog string
	}{
		{
			name: "chain for another key",
			tamper: func(e *env, _ *certificatev1.SignRequest, resp *certificatev1.SignResponse) {
				resp.CertChain = sign(e.ca, otherCSR, idA, 0)
			},
			wantLog: "identity: invalid response for spiffe://cluster.local/ns/demo/sa/a: the certificate is not for our key",
		},
		{
			name: "bundle of another CA",
			tamper: func(_ *env, _ *certificatev1.SignRequest, resp *certificatev1.SignResponse) {
				resp.TrustBundle = ders(e0.ca.Bundle().X509Authorities())
			},
			wantLog: "x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority",
		},
		{
			name: "mismatched spiffe_id",
			tamper: func(_ *env, _ *certificatev1.SignRequest, resp *certificatev1.SignResponse) {
				resp.SpiffeId = idB.String()
			},
			wantLog: "identity: invalid response: spiffe_id is spiffe://cluster.local/ns/demo/sa/b but the certificate says spiffe://cluster.local/ns/demo/sa/a",
		},
		{
			name: "spiffe_id of another trust domain",
			tamper: func(_ *env, _ *certificatev1.SignRequest, resp *certificatev1.SignResponse) {
				resp.SpiffeId = "spiffe://other.example/ns/demo/sa/a"
			},
			wantLog: `x509svid: could not get X509 bundle: x509bundle: no X.509 bundle found for trust domain: \"cluster.local\"`,
		},
		{
			name: "invalid spiffe_id",
			tamper: func(_ *env, _ *certificatev1.SignRequest, resp *certificatev1.SignResponse) {
				resp.SpiffeId = "not-an-id"
			},
			wantLog: `identity: invalid response: spiffe_id \"not-an-id\": scheme is missing or invalid`,
		},
		{
			name: "garbage chain",
			tamper: func(_ *env, _ *certificatev1.SignRequest, resp *certificatev1.SignResponse) {
				resp.CertChain = [][]byte{[]byte("not a certificate")}
			},
			wantLog: "identity: invalid response: cert_chain: certificate 0: x509: malformed certificate",
		},
		{
			name: "empty bundle",
			tamper: func(_ *env, _ *certificatev1.SignRequest, resp *certificatev1.SignResponse) {
				resp.TrustBundle = nil
			},
			wantLog: "identity: invalid response: trust_bundle: empty",
		},
		{
			name: "expired certificate",
			tamper: func(_ *env, req *certificatev1.SignRequest, resp *certificatev1.SignResponse) {
				resp.CertChain = sign(oldCA, req.Csr, idA, time.Hour)
				resp.TrustBundle = ders(oldCA.Bundle().X509Authorities())
			},
			wantLog: "x509: certificate has expired or is not yet valid",
		},
		{
			name: "identity changed",
			tamper: func(e *env, req *certificatev1.SignRequest, resp *certificatev1.SignResponse) {
				resp.CertChain = sign(e.ca, req.Csr, idB, 0)
				resp.SpiffeId = idB.String()
			},
			firstOK: true,
			wantLog: "identity: invalid response: identity changed from spiffe://cluster.local/ns/demo/sa/a to spiffe://cluster.local/ns/demo/sa/b",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			logs := &testutil.SyncBuffer{}
			m, _ := e.manager(t, "tok-a", Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
			tamper := func(req *certificatev1.SignRequest, resp *certificatev1.SignResponse) { tc.tamper(e, req, resp) }
			rejected := 0
			if !tc.firstOK {
				e.client.set(tamper)
				testutil.Run(t, m.Run)
				testutil.Eventually(t, "a rejected first response", func() bool { return m.Failures() == 1 })
				e.waitWaiters(t, 1)
				rejected++
				select {
				case <-m.Ready():
					t.Fatal("Ready after a bad response")
				default:
				}
				if svid, err := m.GetX509SVID(); err == nil {
					t.Fatalf("GetX509SVID after a bad response: got %s", svid.ID)
				}
				e.client.set(nil)
				e.clock.Step(time.Second)
			} else {
				testutil.Run(t, m.Run)
			}
			<-m.Ready()
			e.waitWaiters(t, 1)
			first, _ := m.GetX509SVID()

			e.client.set(tamper)
			e.clock.Step(halfLife)
			testutil.Eventually(t, "a rejected renewal", func() bool { return m.Failures() == uint64(rejected+1) })
			e.waitWaiters(t, 1)
			rejected++
			if svid, err := m.GetX509SVID(); err != nil || svid != first {
				t.Errorf("after a bad renewal: got %v, %v; want the first SVID still served", svid, err)
			}
			if got := strings.Count(logs.String(), tc.wantLog); got != rejected {
				t.Errorf("log has %q %d times, want %d:\n%s", tc.wantLog, got, rejected, logs)
			}
		})
	}
}

func TestTokenIsReadForEveryRequest(t *testing.T) {
	for _, tc := range []struct {
		name      string
		change    func(t *testing.T, path string)
		wantToken string // "" means the renewal fails without calling the service
		wantLog   string
	}{
		{
			name:      "rotated by the kubelet",
			change:    func(t *testing.T, path string) { writeToken(t, path, "tok-a2") },
			wantToken: "tok-a2",
		},
		{
			name: "file gone",
			change: func(t *testing.T, path string) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			},
			wantLog: "identity: read token: open ",
		},
		{
			name:    "file empty",
			change:  func(t *testing.T, path string) { writeToken(t, path, "  ") },
			wantLog: "is empty",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			logs := &testutil.SyncBuffer{}
			m, path := e.manager(t, "tok-a", Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
			e.run(t, m)
			if got := e.svc.LastToken(); got != "tok-a" {
				t.Fatalf("first token: got %q, want tok-a", got)
			}

			tc.change(t, path)
			e.clock.Step(halfLife)
			testutil.Eventually(t, "the renewal attempt", func() bool { return m.Renewals()+m.Failures() == 2 })
			e.waitWaiters(t, 1)
			if tc.wantToken != "" {
				if m.Renewals() != 2 || e.svc.LastToken() != tc.wantToken {
					t.Fatalf("renewals %d, token %q; want 2, %q", m.Renewals(), e.svc.LastToken(), tc.wantToken)
				}
				return
			}
			if m.Failures() != 1 || e.svc.Calls() != 1 {
				t.Fatalf("failures %d, calls %d; want 1, 1 (no call without a token)", m.Failures(), e.svc.Calls())
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, logs)
			}
		})
	}
}

func ders(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}
