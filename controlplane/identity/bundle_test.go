package identity

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weftmesh/weft/internal/testutil"
)

var configMapsGR = schema.GroupResource{Resource: "configmaps"}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

var injected = map[string]string{InjectLabel: InjectEnabled}

// published returns what namespace ns's trust bundle ConfigMap holds.
func published(t *testing.T, api *fake.Clientset, ns string) (string, bool) {
	t.Helper()
	cm, err := api.CoreV1().ConfigMaps(ns).Get(context.Background(), BundleConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data[BundleKey], true
}

func countActions(api *fake.Clientset, verb, resource string) int {
	n := 0
	for _, a := range api.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}

// startPublisher runs p inside the test's synctest bubble until the test
// calls the returned stop, which checks that Run ended cleanly.
func startPublisher(t *testing.T, p *BundlePublisher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	settle()
	return func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
}

// settle lets the bubble's fake clock run a second (the informer polls its
// cache sync, the queue backs off) and waits for every goroutine to idle.
func settle() {
	time.Sleep(time.Second)
	synctest.Wait()
}

func TestBundlePublisherPublishesWhereSidecarsNeedIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := testutil.NewCA(t, td, testutil.FakeClock(t))
		dying := namespace("dying", injected)
		dying.Finalizers = []string{"kubernetes"}
		dying.DeletionTimestamp = &metav1.Time{Time: time.Now()}
		api := fake.NewClientset(
			namespace("weft-system", nil), // home: published without the label
			namespace("demo", injected),
			namespace("plain", nil),
			namespace("off", map[string]string{InjectLabel: "disabled"}),
			dying,
		)
		stop := startPublisher(t, &BundlePublisher{Client: api, Bundle: ca.BundlePEM, HomeNamespace: "weft-system"})
		want := string(ca.BundlePEM())
		for ns, should := range map[string]bool{"weft-system": true, "demo": true, "plain": false, "off": false, "dying": false} {
			got, ok := published(t, api, ns)
			if ok != should || (ok && got != want) {
				t.Errorf("namespace %s: published %v (bundle current: %v), want published %v", ns, ok, got == want, should)
			}
		}

		// Injection turned on later (an update) and a new injected namespace
		// (an add) get the bundle too.
		plain := namespace("plain", injected)
		if _, err := api.CoreV1().Namespaces().Update(context.Background(), plain, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.CoreV1().Namespaces().Create(context.Background(), namespace("late", injected), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		settle()
		for _, ns := range []string{"plain", "late"} {
			if got, ok := published(t, api, ns); !ok || got != want {
				t.Errorf("namespace %s: published %v (bundle current: %v), want the bundle", ns, ok, got == want)
			}
		}
		stop()
	})
}

// A rotated root reaches every namespace within Resync (5m when unset),
// with no namespace event to trigger it.
func TestBundlePublisherResyncSpreadsARotatedRoot(t *testing.T) {
	for _, tt := range []struct {
		name   string
		resync time.Duration
		within time.Duration
	}{
		{"default resync", 0, 5 * time.Minute},
		{"configured resync", 30 * time.Second, 30 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ca := testutil.NewCA(t, td, testutil.FakeClock(t))
				api := fake.NewClientset(namespace("weft-system", nil), namespace("demo", injected))
				stop := startPublisher(t, &BundlePublisher{Client: api, Bundle: ca.BundlePEM, HomeNamespace: "weft-system", Resync: tt.resync})
				before := string(ca.BundlePEM())
				if got, _ := published(t, api, "demo"); got != before {
					t.Fatal("bundle not published at start")
				}
				if err := ca.PrepareRoot(); err != nil {
					t.Fatal(err)
				}
				rotated := string(ca.BundlePEM())
				start := time.Now()
				for _, ns := range []string{"weft-system", "demo"} {
					for {
						if got, _ := published(t, api, ns); got == rotated {
							break
						}
						if time.Since(start) > tt.within+time.Second {
							t.Fatalf("namespace %s still has the old bundle %v after the rotation", ns, time.Since(start))
						}
						settle()
					}
				}
				stop()
			})
		})
	}
}

// A publish that fails is retried (with backoff) until it succeeds, and the
// failure is logged.
func TestBundlePublisherRetriesFailedPublishes(t *testing.T) {
	timeout := apierrors.NewServerTimeout(configMapsGR, "create", 1)
	conflict := apierrors.NewConflict(configMapsGR, BundleConfigMap, errors.New("the object has been modified"))
	for _, tt := range []struct {
		name     string
		existing []runtime.Object
		verb     string
		err      error
		logged   bool
	}{
		{"create times out, discarded log", nil, "create", timeout, false},
		{"create times out, logged", nil, "create", timeout, true},
		{"update conflicts, logged", []runtime.Object{&corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: BundleConfigMap},
			Data:       map[string]string{BundleKey: "stale"},
		}}, "update", conflict, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ca := testutil.NewCA(t, td, testutil.FakeClock(t))
				api := fake.NewClientset(append(tt.existing, namespace("demo", injected))...)
				var mu sync.Mutex
				failures := 3
				api.PrependReactor(tt.verb, "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
					mu.Lock()
					defer mu.Unlock()
					if failures == 0 {
						return false, nil, nil
					}
					failures--
					return true, nil, tt.err
				})
				var logs testutil.SyncBuffer
				p := &BundlePublisher{Client: api, Bundle: ca.BundlePEM, HomeNamespace: "weft-system"}
				if tt.logged {
					p.Logger = slog.New(slog.NewTextHandler(&logs, nil))
				}
				stop := startPublisher(t, p)
				settle()
				if got, ok := published(t, api, "demo"); !ok || got != string(ca.BundlePEM()) {
					t.Fatalf("after 3 failed %ss: published %v, bundle current %v; want it retried until current", tt.verb, ok, got == string(ca.BundlePEM()))
				}
				if n := countActions(api, tt.verb, "configmaps"); n != 4 {
					t.Errorf("%d %ss, want 3 failed and 1 good", n, tt.verb)
				}
				stop()
				if tt.logged {
					out := logs.String()
					if n := strings.Count(out, `level=WARN msg="publishing trust bundle" namespace=demo err="identity: publish demo/weft-trust-bundle: `); n != 3 {
						t.Errorf("log has %d publish warnings, want 3 naming the namespace and the error:\n%s", n, out)
					}
				}
			})
		})
	}
}

func TestPublishWritesTheCurrentBundle(t *testing.T) {
	const want = "-----BEGIN CERTIFICATE-----\nnew root\n-----END CERTIFICATE-----\n"
	labels := map[string]string{"app.kubernetes.io/part-of": "weft"}
	for _, tt := range []struct {
		name     string
		existing *corev1.ConfigMap
		data     map[string]string
		labels   map[string]string
		updates  int
	}{
		{"missing: created", nil, map[string]string{BundleKey: want}, labels, 0},
		{"stale: bundle replaced, other keys and labels kept", &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMap, Namespace: "demo", Labels: map[string]string{"team": "a"}},
			Data:       map[string]string{BundleKey: "old root", "extra.pem": "kept"},
		}, map[string]string{BundleKey: want, "extra.pem": "kept"}, map[string]string{"team": "a"}, 1},
		{"emptied by hand: bundle put back", &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMap, Namespace: "demo"},
		}, map[string]string{BundleKey: want}, nil, 1},
		{"current: left alone", &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMap, Namespace: "demo"},
			Data:       map[string]string{BundleKey: want},
		}, map[string]string{BundleKey: want}, nil, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := fake.NewClientset()
			if tt.existing != nil {
				api = fake.NewClientset(tt.existing)
			}
			p := &BundlePublisher{Client: api, Bundle: func() []byte { return []byte(want) }}
			if err := p.Publish(context.Background(), "demo"); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			cm, err := api.CoreV1().ConfigMaps("demo").Get(context.Background(), BundleConfigMap, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(cm.Data, tt.data) || !maps.Equal(cm.Labels, tt.labels) {
				t.Fatalf("ConfigMap data %q labels %q, want data %q labels %q", cm.Data, cm.Labels, tt.data, tt.labels)
			}
			if n := countActions(api, "update", "configmaps"); n != tt.updates {
				t.Fatalf("%d updates, want %d", n, tt.updates)
			}
		})
	}
}

func TestPublishSurfacesErrors(t *testing.T) {
	stale := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMap, Namespace: "demo"},
		Data:       map[string]string{BundleKey: "old root"},
	}
	forbidden := apierrors.NewForbidden(configMapsGR, BundleConfigMap, errors.New("RBAC"))
	for _, tt := range []struct {
		name     string
		existing []runtime.Object
		verb     string
		err      error
		is       func(error) bool // nil: err must not wrap an API status
		message  string
		creates  int
	}{
		{"get refused", nil, "get", forbidden, apierrors.IsForbidden, "identity: publish demo/weft-trust-bundle: ", 0},
		{"create refused", nil, "create", forbidden, apierrors.IsForbidden, "identity: publish demo/weft-trust-bundle: ", 1},
		{"created by another writer meanwhile", nil, "create", apierrors.NewAlreadyExists(configMapsGR, BundleConfigMap), nil,
			"identity: ConfigMap demo/weft-trust-bundle appeared while creating it; will retry", 1},
		{"update conflicts", []runtime.Object{stale}, "update", apierrors.NewConflict(configMapsGR, BundleConfigMap, errors.New("modified")), apierrors.IsConflict,
			"identity: publish demo/weft-trust-bundle: ", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := fake.NewClientset(tt.existing...)
			api.PrependReactor(tt.verb, "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tt.err
			})
			p := &BundlePublisher{Client: api, Bundle: func() []byte { return []byte("new root") }}
			err := p.Publish(context.Background(), "demo")
			if err == nil || !strings.HasPrefix(err.Error(), tt.message) {
				t.Fatalf("Publish: %v, want an error starting %q", err, tt.message)
			}
			if tt.is != nil && !tt.is(err) {
				t.Fatalf("Publish: %v does not wrap the API error %v", err, tt.err)
			}
			if n := countActions(api, "create", "configmaps"); n != tt.creates {
				t.Fatalf("%d creates, want %d", n, tt.creates)
			}
			if len(tt.existing) > 0 {
				if got, _ := published(t, api, "demo"); got != "old root" {
					t.Fatalf("bundle %q after a failed update", got)
				}
			}
		})
	}
}
