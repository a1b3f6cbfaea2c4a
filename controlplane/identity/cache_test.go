package identity

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"k8s.io/apimachinery/pkg/runtime"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/internal/testutil"
)

// TestTokenReviewCache: 1,000 renewals from 10 pods within the cache's TTL
// cost the API server one TokenReview and one Pod GET per pod instead of
// per renewal; past the TTL a token is reviewed again; a refused token is
// never cached.
func TestTokenReviewCache(t *testing.T) {
	clk := testutil.FakeClock(t)
	tokens := map[string]testutil.Token{}
	var kubeObjs []runtime.Object
	for i := range 10 {
		pod, uid := fmt.Sprintf("app-%d", i), fmt.Sprintf("u%d", i)
		tokens[pod] = testutil.Token{User: "system:serviceaccount:demo:app", Audiences: []string{Audience}, Pod: pod, UID: uid}
		kubeObjs = append(kubeObjs, testutil.Pod("demo", pod, uid, "app"))
	}
	api := testutil.FakeKube(tokens, kubeObjs...)
	count := func() (reviews, gets int) {
		for _, a := range api.Actions() {
			switch {
			case a.GetVerb() == "create" && a.GetResource().Resource == "tokenreviews":
				reviews++
			case a.GetVerb() == "get" && a.GetResource().Resource == "pods":
				gets++
			}
		}
		return
	}
	for _, cached := range []bool{false, true} {
		api.ClearActions()
		var auth Authenticator = &TokenReviewer{Client: api}
		if cached {
			auth = &CachingAuthenticator{Next: auth, TTL: 30 * time.Second, Clock: clk}
		}
		svc, err := New(Config{CA: testutil.NewCA(t, td, clk), Authenticator: auth, Clock: clk, RateLimit: 1000, RateBurst: 1000, SourceRateLimit: rate.Inf})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 1000 {
			if _, err := svc.Sign(withToken(fmt.Sprintf("app-%d", i%10)), &certificatev1.SignRequest{Csr: newCSR(t)}); err != nil {
				t.Fatalf("renewal %d: %v", i, err)
			}
		}
		reviews, gets := count()
		t.Logf("cached=%v: 1,000 renewals from 10 pods: %d TokenReviews, %d Pod GETs", cached, reviews, gets)
		want := 1000
		if cached {
			want = 10
		}
		if reviews != want || gets != want {
			t.Fatalf("cached=%v: %d TokenReviews and %d Pod GETs for 1,000 renewals, want %d each", cached, reviews, gets, want)
		}
	}
	// Past the TTL, asked again; a bad token is asked every time.
	c := &CachingAuthenticator{Next: &TokenReviewer{Client: api}, TTL: 30 * time.Second, Clock: clk}
	api.ClearActions()
	ctx := context.Background()
	for range 3 {
		if _, err := c.Authenticate(ctx, "app-1"); err != nil {
			t.Fatal(err)
		}
		_, _ = c.Authenticate(ctx, "no-such-token")
	}
	clk.Step(31 * time.Second)
	if _, err := c.Authenticate(ctx, "app-1"); err != nil {
		t.Fatal(err)
	}
	if reviews, _ := count(); reviews != 1+3+1 {
		t.Fatalf("%d TokenReviews, want 5 (app-1 once, the bad token thrice, app-1 after the TTL)", reviews)
	}
}

// TestTokenCacheZeroValue: the zero TokenCache keeps a value 30s, not a
// nanosecond more.
func TestTokenCacheZeroValue(t *testing.T) {
	clk := testutil.FakeClock(t)
	c := &TokenCache[int]{Clock: clk}
	c.Put("a", 1)
	clk.Step(30*time.Second - time.Nanosecond)
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("Get 30s-1ns after Put = %d, %v; want 1, true", v, ok)
	}
	clk.Step(time.Nanosecond)
	if _, ok := c.Get("a"); ok {
		t.Fatal("kept past 30s")
	}
}

// TestTokenCacheMax: a full cache drops expired entries first, and only
// when none has expired any other; it never holds more than Max.
func TestTokenCacheMax(t *testing.T) {
	clk := testutil.FakeClock(t)
	held := func(c *TokenCache[int], tokens ...string) (n int) {
		for _, tok := range tokens {
			if _, ok := c.Get(tok); ok {
				n++
			}
		}
		return n
	}
	c := &TokenCache[int]{TTL: time.Hour, Max: 2, Clock: clk}
	c.Put("a", 1)
	c.Put("b", 2)
	c.Put("c", 3) // full, nothing expired: a or b goes
	if _, ok := c.Get("c"); !ok || held(c, "a", "b") != 1 {
		t.Fatalf("after a third Put into 2: c held %v, %d of a and b; want c and one other", ok, held(c, "a", "b"))
	}
	// Expired entries go first.
	e := &TokenCache[int]{TTL: time.Hour, Max: 2, Clock: clk}
	e.Put("old", 1)
	clk.Step(time.Hour)
	e.Put("new", 2)
	e.Put("newer", 3) // full: "old" has expired and goes, "new" stays
	if held(e, "new", "newer") != 2 {
		t.Fatalf("an unexpired entry was dropped while an expired one could go")
	}
}
