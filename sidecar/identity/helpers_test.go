package identity

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	clocktesting "k8s.io/utils/clock/testing"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
)

var (
	td  = spiffeid.RequireTrustDomainFromString("cluster.local")
	idA = spiffeid.RequireFromPath(td, "/ns/demo/sa/a")
	idB = spiffeid.RequireFromPath(td, "/ns/demo/sa/b")
)

// env is one control plane (a real CA behind the fake certificate service)
// and a fake clock shared by the CA and the Managers under test.
type env struct {
	start  time.Time // the clock's first reading
	clock  *clocktesting.FakeClock
	ca     *certs.CA
	svc    *testutil.CertService
	client *tamperClient
	stop   func()
}

// newEnv starts the clock at testutil.Epoch(t), decades from the wall
// clock, so a check that reads the wall clock fails at once.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvAt(t, testutil.Epoch(t))
}

// newEnvAt starts the clock at now: only for a test whose certificates must
// also be valid on the wall clock (go-spiffe's tlsconfig verifies peers on
// it, with no option to give it another).
func newEnvAt(t *testing.T, now time.Time) *env {
	t.Helper()
	fc := testutil.FakeClock(t)
	fc.SetTime(now)
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: fc})
	if err != nil {
		t.Fatal(err)
	}
	svc, client, stop := testutil.StartCertService(t, ca, map[string]spiffeid.ID{
		"tok-a": idA, "tok-a2": idA, "tok-b": idB,
	})
	return &env{start: now, clock: fc, ca: ca, svc: svc, client: &tamperClient{next: client}, stop: stop}
}

// manager returns a Manager for the token (written to a fresh file) with
// deterministic jitter (0.5: renew at exactly half-life), and the token
// file's path. cfg's zero fields are filled in.
func (e *env) manager(t *testing.T, token string, cfg Config) (*Manager, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	writeToken(t, path, token)
	if cfg.Client == nil {
		cfg.Client = e.client
	}
	cfg.TokenPath = path
	cfg.Clock = e.clock
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 0.5 }
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m, path
}

func writeToken(t *testing.T, path, token string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitWaiters waits until n goroutines wait on the fake clock, i.e. every
// Manager has finished its attempt and parked on its next timer.
func (e *env) waitWaiters(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, "managers to wait on the clock", func() bool { return e.clock.Waiters() == n })
}

// run runs m until t ends and waits until it is ready (its first SVID
// served) and parked on its renewal timer.
func (e *env) run(t *testing.T, m *Manager) {
	t.Helper()
	testutil.Run(t, m.Run)
	<-m.Ready()
	e.waitWaiters(t, 1)
}

// tamperClient passes Sign to the real client and lets a test rewrite the
// response.
type tamperClient struct {
	next certificatev1.CertificateServiceClient

	mu     sync.Mutex
	tamper func(*certificatev1.SignRequest, *certificatev1.SignResponse)
}

func (c *tamperClient) set(f func(*certificatev1.SignRequest, *certificatev1.SignResponse)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tamper = f
}

func (c *tamperClient) Sign(ctx context.Context, req *certificatev1.SignRequest, opts ...grpc.CallOption) (*certificatev1.SignResponse, error) {
	resp, err := c.next.Sign(ctx, req, opts...)
	c.mu.Lock()
	f := c.tamper
	c.mu.Unlock()
	if err == nil && f != nil {
		f(req, resp)
	}
	return resp, err
}

// fixedClock is a certs.Clock that stays at one instant.
type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }
