package identity

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/testutil"
)

// podCache is what TokenReviewer.Pods reads: pods by namespace/name, as an
// informer would hold them.
func podCache(pods ...*corev1.Pod) func(ns, name string) (*corev1.Pod, bool) {
	m := map[string]*corev1.Pod{}
	for _, p := range pods {
		m[p.Namespace+"/"+p.Name] = p
	}
	return func(ns, name string) (*corev1.Pod, bool) {
		p, ok := m[ns+"/"+name]
		return p, ok
	}
}

// podGets is how many pod GETs the fixture's API server answered.
func (f fixture) podGets() int { return f.actions("get", "pods") }

// The cache changes what a token costs the API server, never the verdict:
// every token of the fixture, reviewed with and without a cache holding the
// API server's own pods, gets the same answer; the ones whose pod the cache
// holds with the token's UID cost no GET.
func TestPodCacheSameVerdictsFewerGets(t *testing.T) {
	f := newFixture(t, nil)
	cached := podCache(testutil.Pod("demo", "app-1", "u1", "app"), testutil.Pod("demo", "app-2", "u2", "app"),
		testutil.Pod("demo", "other-1", "o1", "other"), testutil.Pod("weft-system", "inj-1", "i1", "weft-injector"),
		testutil.Pod("demo", "legacy-1", "l1", ""))
	plain := &TokenReviewer{Client: f.api}
	withCache := &TokenReviewer{Client: f.api, Pods: cached}
	for _, tt := range []struct {
		token string
		gets  int // pod GETs with the cache
	}{
		{"good", 0}, {"good2", 0}, {"other", 0}, {"injector", 0}, {"legacy", 0},
		{"wrongsa", 0}, {"defaultonapp", 0}, {"apponlegacy", 0},
		{"deletedpod", 1},                                               // not in the cache: asked, and gone
		{"reusedname", 1},                                               // the cache holds app-1 with another UID: asked
		{"podgetfails", 1},                                              // not in the cache; the GET fails
		{"expired", 0}, {"foreignaud", 0}, {"unbound", 0}, {"human", 0}, // refused before any pod is looked at
	} {
		t.Run(tt.token, func(t *testing.T) {
			want, wantErr := plain.Authenticate(context.Background(), tt.token)
			g0 := f.podGets()
			got, err := withCache.Authenticate(context.Background(), tt.token)
			if gets := f.podGets() - g0; gets != tt.gets {
				t.Errorf("%d pod GETs with the cache, want %d", gets, tt.gets)
			}
			if got != want || (err == nil) != (wantErr == nil) || errors.Is(err, ErrUnauthenticated) != errors.Is(wantErr, ErrUnauthenticated) {
				t.Fatalf("with the cache %+v, %v; without %+v, %v", got, err, want, wantErr)
			}
		})
	}
}

// A cache behind the API server is never trusted past what it can say:
// a pod it holds as terminating is refused at once; one it holds with an
// older UID, or does not hold, is asked of the API server.
func TestPodCacheBehindTheAPIServer(t *testing.T) {
	f := newFixture(t, nil)
	terminating := testutil.Pod("demo", "app-1", "u1", "app")
	terminating.DeletionTimestamp = &metav1.Time{Time: f.clock.Now()}
	for _, tt := range []struct {
		name  string
		cache func(ns, name string) (*corev1.Pod, bool)
		gets  int
		ok    bool
	}{
		{"terminating in the cache", podCache(terminating), 0, false},
		{"an older pod of that name in the cache", podCache(testutil.Pod("demo", "app-1", "u0", "app")), 1, true},
		{"not in the cache", podCache(), 1, true},
		{"running as another ServiceAccount in the cache", podCache(testutil.Pod("demo", "app-1", "u1", "other")), 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &TokenReviewer{Client: f.api, Pods: tt.cache}
			g0 := f.podGets()
			c, err := r.Authenticate(context.Background(), "good")
			if gets := f.podGets() - g0; gets != tt.gets {
				t.Errorf("%d pod GETs, want %d", gets, tt.gets)
			}
			switch {
			case tt.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.ok && c.PodUID != "u1":
				t.Fatalf("caller %+v, want the API server's pod u1", c)
			case !tt.ok && !errors.Is(err, ErrUnauthenticated):
				t.Fatalf("got %+v, %v; want it refused as unauthenticated", c, err)
			}
		})
	}
}
