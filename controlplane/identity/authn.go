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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Audience is the audience a projected token must carry to be accepted.
const Audience = "weft-ca"

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
}

var _ Authenticator = (*TokenReviewer)(nil)

// Authenticate implements Authenticator.
func (r *TokenReviewer) Authenticate(ctx context.Context, token string) (Caller, error) {
	aud := r.Audience
	if aud == "" {
		aud = Audience
	}
	review, err := r.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{aud}},
	}, metav1.CreateOptions{})
	if err != nil {
		// Not the caller's fault: the API server could not be asked.
		return Caller{}, fmt.Errorf("identity: TokenReview: %w", err)
	}
	st := review.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return Caller{}, fmt.Errorf("%w: %s", ErrUnauthenticated, msg)
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
	pod, err := r.Client.CoreV1().Pods(ns).Get(ctx, c.PodName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return Caller{}, fmt.Errorf("%w: pod %s/%s no longer exists", ErrUnauthenticated, ns, c.PodName)
	case err != nil:
		return Caller{}, fmt.Errorf("identity: get pod %s/%s: %w", ns, c.PodName, err)
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
	Next Authenticator
	TTL  time.Duration    // 0 means 30s
	Max  int              // 0 means 10,000
	Now  func() time.Time // nil means time.Now

	mu      sync.Mutex
	entries map[[32]byte]cachedCaller
}

type cachedCaller struct {
	c       Caller
	expires time.Time
}

var _ Authenticator = (*CachingAuthenticator)(nil)

// Authenticate implements Authenticator.
func (a *CachingAuthenticator) Authenticate(ctx context.Context, token string) (Caller, error) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	key := sha256.Sum256([]byte(token))
	a.mu.Lock()
	if e, ok := a.entries[key]; ok && now().Before(e.expires) {
		a.mu.Unlock()
		return e.c, nil
	}
	a.mu.Unlock()
	c, err := a.Next.Authenticate(ctx, token)
	if err != nil {
		return c, err
	}
	ttl, max := cmp.Or(a.TTL, 30*time.Second), cmp.Or(a.Max, 10_000)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.entries == nil {
		a.entries = map[[32]byte]cachedCaller{}
	}
	t := now()
	if len(a.entries) >= max {
		for k, e := range a.entries {
			if !t.Before(e.expires) {
				delete(a.entries, k)
			}
		}
		for k := range a.entries { // still full: drop any
			if len(a.entries) < max {
				break
			}
			delete(a.entries, k)
		}
	}
	a.entries[key] = cachedCaller{c: c, expires: t.Add(ttl)}
	return c, nil
}
