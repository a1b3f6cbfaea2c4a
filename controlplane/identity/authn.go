package identity

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/api/names"
)

// Audience is the audience a projected token must carry to be accepted.
const Audience = names.TokenAudience

// Keys of the extra fields the API server puts on pod-bound tokens.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// Caller is who a token belongs to, as the API server says.
type Caller struct {
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         string
}

// Authenticator turns a bearer token into a Caller.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Caller, error)
}

// ErrUnauthenticated wraps every reason a token is refused.
var ErrUnauthenticated = errors.New("identity: token refused")

// TokenReviewer authenticates tokens with the Kubernetes TokenReview API and
// checks that the pod the token is bound to still exists.
type TokenReviewer struct {
	Client   kubernetes.Interface
	Audience string // "" means Audience
	// Pods, when set, looks the token's pod up in a cache of the API
	// server's pods first (the control plane's informers, which watch
	// every pod anyway): a pod it holds with the token's UID is checked
	// there, and the API server is spared a GET. A pod it does not hold,
	// or holds with another UID (a name reused, a cache behind), is asked
	// of the API server as without it. The returned pod is not modified.
	Pods func(namespace, name string) (*corev1.Pod, bool)
}

var _ Authenticator = (*TokenReviewer)(nil)

// Authenticate implements Authenticator.
func (r *TokenReviewer) Authenticate(ctx context.Context, token string) (Caller, error) {
	aud := r.Audience
	if aud == "" {
		aud = Audience
	}
	st, err := ReviewToken(ctx, r.Client, token, []string{aud})
	if err != nil {
		return Caller{}, err
	}
	if !slices.Contains(st.Audiences, aud) {
		return Caller{}, fmt.Errorf("%w: audiences %q do not include %q", ErrUnauthenticated, st.Audiences, aud)
	}
	ns, sa, ok := parseServiceAccountUser(st.User.Username)
	if !ok {
		return Caller{}, fmt.Errorf("%w: user %q is not a service account", ErrUnauthenticated, st.User.Username)
	}
	c := Caller{Namespace: ns, ServiceAccount: sa, PodName: first(st.User.Extra[extraPodName]), PodUID: first(st.User.Extra[extraPodUID])}
	if c.PodName == "" || c.PodUID == "" {
		return Caller{}, fmt.Errorf("%w: token of %s/%s is not bound to a pod", ErrUnauthenticated, ns, sa)
	}
	var pod *corev1.Pod
	if r.Pods != nil {
		if p, ok := r.Pods(ns, c.PodName); ok && string(p.UID) == c.PodUID {
			pod = p
		}
	}
	if pod == nil {
		pod, err = r.Client.CoreV1().Pods(ns).Get(ctx, c.PodName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return Caller{}, fmt.Errorf("%w: pod %s/%s no longer exists", ErrUnauthenticated, ns, c.PodName)
		case err != nil:
			return Caller{}, fmt.Errorf("identity: get pod %s/%s: %w", ns, c.PodName, err)
		}
	}
	if string(pod.UID) != c.PodUID {
		return Caller{}, fmt.Errorf("%w: pod %s/%s has UID %s, token is bound to %s", ErrUnauthenticated, ns, c.PodName, pod.UID, c.PodUID)
	}
	if pod.DeletionTimestamp != nil {
		return Caller{}, fmt.Errorf("%w: pod %s/%s is being deleted", ErrUnauthenticated, ns, c.PodName)
	}
	if podSA := pod.Spec.ServiceAccountName; podSA != sa && !(podSA == "" && sa == "default") {
		return Caller{}, fmt.Errorf("%w: pod %s/%s runs as %q, token is for %q", ErrUnauthenticated, ns, c.PodName, podSA, sa)
	}
	return c, nil
}

// ReviewToken asks the API server (TokenReview) who token belongs to. With
// audiences nil the token must be valid for the API server itself; else
// for one of audiences. A token the API server does not accept is
// ErrUnauthenticated; any other error means it could not be asked (not
// the caller's fault). The returned status has Authenticated set.
func ReviewToken(ctx context.Context, client kubernetes.Interface, token string, audiences []string) (authenticationv1.TokenReviewStatus, error) {
	review, err := client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.TokenReviewStatus{}, fmt.Errorf("identity: TokenReview: %w", err)
	}
	st := review.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return authenticationv1.TokenReviewStatus{}, fmt.Errorf("%w: %s", ErrUnauthenticated, msg)
	}
	return st, nil
}

// parseServiceAccountUser splits "system:serviceaccount:<ns>:<sa>".
func parseServiceAccountUser(user string) (ns, sa string, ok bool) {
	rest, found := strings.CutPrefix(user, "system:serviceaccount:")
	if !found {
		return "", "", false
	}
	ns, sa, found = strings.Cut(rest, ":")
	if !found || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return "", "", false
	}
	return ns, sa, true
}

func first(v authenticationv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// CachingAuthenticator remembers Next's answer for a token for TTL: a
// sidecar that renews, restarts or retries within it costs the API server
// no second TokenReview and Pod GET. Only successes are kept (a refused
// token is asked again: it may have become valid), keyed by the token's
// SHA-256, at most Max entries. A pod deleted within TTL of its last
// review keeps its token accepted that long.
type CachingAuthenticator struct {
	Next  Authenticator
	TTL   time.Duration      // 0 means 30s
	Max   int                // 0 means 10,000
	Clock clock.PassiveClock // nil: the real clock

	once  sync.Once
	cache *TokenCache[Caller]
}

var _ Authenticator = (*CachingAuthenticator)(nil)

// Authenticate implements Authenticator.
func (a *CachingAuthenticator) Authenticate(ctx context.Context, token string) (Caller, error) {
	a.once.Do(func() { a.cache = &TokenCache[Caller]{TTL: cmp.Or(a.TTL, 30*time.Second), Max: a.Max, Clock: a.Clock} })
	if c, ok := a.cache.Get(token); ok {
		return c, nil
	}
	c, err := a.Next.Authenticate(ctx, token)
	if err != nil {
		return c, err
	}
	a.cache.Put(token, c)
	return c, nil
}

// TokenCache keeps one value per bearer token (a successful review's
// answer) for TTL, keyed by the token's SHA-256 so that no token is held
// in memory, at most Max entries (expired ones are dropped first, then
// any). The zero value is ready: TTL 30s, Max 10,000, the real clock.
type TokenCache[T any] struct {
	TTL   time.Duration      // 0 means 30s
	Max   int                // 0 means 10,000
	Clock clock.PassiveClock // nil: the real clock

	mu      sync.Mutex
	entries map[[32]byte]tokenEntry[T]
}

type tokenEntry[T any] struct {
	v       T
	expires time.Time
}

func (c *TokenCache[T]) now() time.Time {
	if c.Clock != nil {
		return c.Clock.Now()
	}
	return clock.RealClock{}.Now()
}

// Get returns the value kept for token, if it has not expired.
func (c *TokenCache[T]) Get(token string) (T, bool) {
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok && c.now().Before(e.expires) {
		return e.v, true
	}
	var zero T
	return zero, false
}

// Put keeps v for token for TTL from now.
func (c *TokenCache[T]) Put(token string, v T) {
	key := sha256.Sum256([]byte(token))
	ttl, max := cmp.Or(c.TTL, 30*time.Second), cmp.Or(c.Max, 10_000)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[[32]byte]tokenEntry[T]{}
	}
	t := c.now()
	if len(c.entries) >= max {
		for k, e := range c.entries {
			if !t.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries { // still full: drop any
			if len(c.entries) < max {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = tokenEntry[T]{v: v, expires: t.Add(ttl)}
}
