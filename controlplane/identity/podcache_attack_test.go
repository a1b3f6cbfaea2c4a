package identity

import (
	"context"
	"errors"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/testutil"
)

// The pods TokenReviewer.Pods returns are the informer's, shared with the
// registry's rebuilds: reviews running at once, accepted or refused on
// every branch of the cached path, read them and never write them (the
// race detector sees a write; the copies taken before see any change).
func TestPodCacheSharedPodsUntouched(t *testing.T) {
	f := newFixture(t, nil)
	terminating := testutil.Pod("demo", "app-2", "u2", "app")
	terminating.DeletionTimestamp = &metav1.Time{Time: f.clock.Now()}
	pods := []*corev1.Pod{testutil.Pod("demo", "app-1", "u1", "app"), terminating,
		testutil.Pod("demo", "legacy-1", "l1", ""), testutil.Pod("demo", "other-1", "o1", "other")}
	before := make([]*corev1.Pod, len(pods))
	for i, p := range pods {
		before[i] = p.DeepCopy()
	}
	r := &TokenReviewer{Client: f.api, Pods: podCache(pods...)}
	verdicts := map[string]bool{ // token: accepted
		"good": true, "legacy": true, "other": true, // the cached pod, with the token's UID and ServiceAccount
		"good2": false, "wrongsa": false, "defaultonapp": false, "apponlegacy": false, // terminating; another ServiceAccount
	}
	var wg sync.WaitGroup
	for range 8 {
		for token, ok := range verdicts {
			wg.Go(func() {
				_, err := r.Authenticate(context.Background(), token)
				if ok && err != nil {
					t.Errorf("%s refused: %v", token, err)
				}
				if !ok && !errors.Is(err, ErrUnauthenticated) {
					t.Errorf("%s: %v, want it refused as unauthenticated", token, err)
				}
			})
		}
	}
	wg.Wait()
	if n := f.podGets(); n != 0 {
		t.Errorf("%d pod GETs for pods the cache holds with the token's UID", n)
	}
	for i, p := range pods {
		if !equality.Semantic.DeepEqual(p, before[i]) {
			t.Errorf("the cached pod %s/%s was modified: %+v, was %+v", p.Namespace, p.Name, p, before[i])
		}
	}
}
