package identity

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
)

func TestLoadOrCreateConcurrentStartsAgreeOnOneCA(t *testing.T) {
	api := fake.NewClientset()
	store := CAStore{Client: api, Namespace: "weft-system", Name: "weft-ca"}
	const replicas = 8
	bundles := make([][]byte, replicas)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range replicas {
		wg.Go(func() {
			<-start
			ca, err := store.LoadOrCreate(context.Background(), certs.CAConfig{TrustDomain: td})
			if err != nil {
				t.Error(err)
				return
			}
			bundles[i] = ca.BundlePEM()
		})
	}
	close(start)
	wg.Wait()
	for i := 1; i < replicas; i++ {
		if !bytes.Equal(bundles[0], bundles[i]) {
			t.Fatalf("replica %d has a different root than replica 0", i)
		}
	}
	list, err := api.CoreV1().Secrets("weft-system").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d secrets, want 1", len(list.Items))
	}
}

// mustLoad loads store's CA, or creates it; an error fails the test.
func mustLoad(t *testing.T, store CAStore) *certs.CA {
	t.Helper()
	ca, err := store.LoadOrCreate(context.Background(), certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestLoadOrCreateReusesTheCAAcrossRestarts(t *testing.T) {
	api := fake.NewClientset()
	store := CAStore{Client: api, Namespace: "weft-system", Name: "weft-ca"}
	first := mustLoad(t, store)
	second := mustLoad(t, store)
	if !bytes.Equal(first.BundlePEM(), second.BundlePEM()) || !bytes.Equal(first.Intermediate().Raw, second.Intermediate().Raw) {
		t.Fatal("restart produced a different CA")
	}
}

func TestLoadOrCreateRefusesACorruptSecret(t *testing.T) {
	api := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-ca"},
		Data:       map[string][]byte{SecretKeyRoots: []byte("garbage")},
	})
	store := CAStore{Client: api, Namespace: "weft-system", Name: "weft-ca"}
	_, err := store.LoadOrCreate(context.Background(), certs.CAConfig{TrustDomain: td})
	if err == nil || !strings.HasPrefix(err.Error(), "identity: CA secret weft-system/weft-ca: certs: ") {
		t.Fatalf("err = %v, want a CA secret error", err)
	}
	// The corrupt Secret is left for the operator to inspect, not replaced.
	sec, _ := api.CoreV1().Secrets("weft-system").Get(context.Background(), "weft-ca", metav1.GetOptions{})
	if string(sec.Data[SecretKeyRoots]) != "garbage" {
		t.Fatal("corrupt secret was overwritten")
	}
}

var secretsGR = schema.GroupResource{Resource: "secrets"}

// caSecret is the Secret LoadOrCreate would have written for ca.
func caSecret(t *testing.T, ca *certs.CA) *corev1.Secret {
	t.Helper()
	m, err := ca.Material()
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-ca"},
		Data: map[string][]byte{
			SecretKeyRoots: m.RootsPEM, SecretKeyRootKey: m.RootKeyPEM,
			SecretKeyIntermediate: m.IntermediatePEM, SecretKeyIntermediateKey: m.IntermediateKeyPEM,
		},
	}
}

// The Secret a first start writes holds the whole CA it returned: its roots,
// its intermediate and both keys, so a restart (or a second replica) signs
// under the same roots.
func TestLoadOrCreateStoresTheCAItCreated(t *testing.T) {
	api := fake.NewClientset()
	store := CAStore{Client: api, Namespace: "weft-system", Name: "weft-ca"}
	ca := mustLoad(t, store)
	sec, err := api.CoreV1().Secrets("weft-system").Get(context.Background(), "weft-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Type != corev1.SecretTypeOpaque || sec.Labels["app.kubernetes.io/part-of"] != "weft" || len(sec.Data) != 4 {
		t.Fatalf("secret type %q labels %v keys %d, want Opaque, part-of weft, 4 keys", sec.Type, sec.Labels, len(sec.Data))
	}
	if !bytes.Equal(sec.Data[SecretKeyRoots], ca.BundlePEM()) {
		t.Fatal("roots.pem is not the returned CA's bundle")
	}
	blk, _ := pem.Decode(sec.Data[SecretKeyIntermediate])
	if blk == nil || !bytes.Equal(blk.Bytes, ca.Intermediate().Raw) {
		t.Fatal("intermediate.pem is not the returned CA's intermediate")
	}
	loaded, err := certs.LoadCA(certs.CAConfig{TrustDomain: td}, certs.Material{
		RootsPEM: sec.Data[SecretKeyRoots], RootKeyPEM: sec.Data[SecretKeyRootKey],
		IntermediatePEM: sec.Data[SecretKeyIntermediate], IntermediateKeyPEM: sec.Data[SecretKeyIntermediateKey],
	})
	if err != nil {
		t.Fatalf("the stored CA does not load: %v", err)
	}
	if !bytes.Equal(loaded.BundlePEM(), ca.BundlePEM()) {
		t.Fatal("the stored CA has other roots")
	}
}

// A replica whose Create loses the race (another replica's Secret appeared
// between its Get and its Create) returns the winner's CA, and the
// winner's Secret stays as it was.
func TestLoadOrCreateLosingTheRaceLoadsTheWinnersCA(t *testing.T) {
	clk := testutil.FakeClock(t)
	winner := testutil.NewCA(t, td, clk)
	api := fake.NewClientset()
	api.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if err := api.Tracker().Add(caSecret(t, winner)); err != nil {
			t.Error(err)
		}
		return true, nil, apierrors.NewAlreadyExists(secretsGR, "weft-ca")
	})
	store := CAStore{Client: api, Namespace: "weft-system", Name: "weft-ca"}
	ca, err := store.LoadOrCreate(context.Background(), certs.CAConfig{TrustDomain: td, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca.BundlePEM(), winner.BundlePEM()) || !bytes.Equal(ca.Intermediate().Raw, winner.Intermediate().Raw) {
		t.Fatal("the losing replica uses its own CA, not the winner's")
	}
	sec, err := api.CoreV1().Secrets("weft-system").Get(context.Background(), "weft-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sec.Data[SecretKeyRoots], winner.BundlePEM()) {
		t.Fatal("the winner's Secret was replaced")
	}
}

// API errors surface, and none of them makes LoadOrCreate return a CA the
// cluster does not keep.
func TestLoadOrCreateSurfacesAPIErrors(t *testing.T) {
	forbidden := apierrors.NewForbidden(secretsGR, "weft-ca", errors.New("RBAC"))
	notFound := apierrors.NewNotFound(secretsGR, "weft-ca")
	alreadyExists := apierrors.NewAlreadyExists(secretsGR, "weft-ca")
	for _, tt := range []struct {
		name    string
		gets    []error // what each Get returns; the last repeats
		create  error
		message string
		calls   int
	}{
		{"get refused", []error{forbidden}, nil, "identity: get CA secret weft-system/weft-ca: ", 1},
		{"create refused", []error{notFound}, forbidden, "identity: create CA secret weft-system/weft-ca: ", 2},
		{"get after losing the race refused", []error{notFound, forbidden}, alreadyExists,
			"identity: get CA secret weft-system/weft-ca after losing the create race: ", 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := fake.NewClientset()
			gets := tt.gets
			api.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				err := gets[0]
				if len(gets) > 1 {
					gets = gets[1:]
				}
				return true, nil, err
			})
			api.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tt.create
			})
			store := CAStore{Client: api, Namespace: "weft-system", Name: "weft-ca"}
			ca, err := store.LoadOrCreate(context.Background(), certs.CAConfig{TrustDomain: td})
			if err == nil || !strings.HasPrefix(err.Error(), tt.message) || !apierrors.IsForbidden(err) {
				t.Fatalf("LoadOrCreate: %v, want an error starting %q wrapping the API's", err, tt.message)
			}
			if ca != nil {
				t.Fatal("LoadOrCreate returned a CA with its error")
			}
			if n := len(api.Actions()); n != tt.calls {
				t.Fatalf("%d API calls, want %d", n, tt.calls)
			}
		})
	}
}

// TestLoadOrCreateIntermediateOnly: a Secret without the root key loads as
// an intermediate-only CA, and says so in the log, with the intermediate's
// expiry, so that it is renewed where the root key lives.
func TestLoadOrCreateIntermediateOnly(t *testing.T) {
	clk := testutil.FakeClock(t)
	m, err := testutil.NewCA(t, td, clk).Material()
	if err != nil {
		t.Fatal(err)
	}
	api := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-ca"},
		Data: map[string][]byte{SecretKeyRoots: m.RootsPEM, SecretKeyIntermediate: m.IntermediatePEM,
			SecretKeyIntermediateKey: m.IntermediateKeyPEM},
	})
	var logs bytes.Buffer
	store := CAStore{Client: api, Namespace: "weft-system", Name: "weft-ca", Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))}
	ca, err := store.LoadOrCreate(context.Background(), certs.CAConfig{TrustDomain: td, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IntermediateOnly() {
		t.Fatal("a CA loaded without its root key is not intermediate-only")
	}
	want := "level=INFO msg=\"loaded an intermediate-only CA: "
	line, notAfter := logs.String(), ca.Intermediate().NotAfter.Format("2006-01-02T15:04:05.000Z07:00") // as slog writes a time
	if !strings.HasPrefix(line, want) || !strings.HasSuffix(line, "\" secret=weft-system/weft-ca not_after="+notAfter+"\n") ||
		strings.Count(line, "\n") != 1 {
		t.Errorf("logged %q, want one line %s… secret=weft-system/weft-ca intermediateNotAfter=%s", line, want, notAfter)
	}
}
