package adminauth

import (
	"cmp"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/internal/keyedrate"
)

// Group is the API group of the virtual resources a guarded request is
// authorized for.
const Group = "weft.dev"

// The virtual resources, one per guarded path prefix (verb get).
const (
	ResourceAuditEvents = "auditevents" // /audit/*
	ResourceDebug       = "debug"       // /debug/*
)

// Config configures a Guard.
type Config struct {
	Client    kubernetes.Interface // required: TokenReview and SubjectAccessReview
	Namespace string               // the namespace the SubjectAccessReview names ("weft-system")
	TTL       time.Duration        // 0 means 10s: how long a review or decision is reused
	Clock     clock.PassiveClock   // nil: the real clock
	Logger    *slog.Logger
	// SourceLimit and SourceBurst bound, per source address, the requests
	// that would ask the API server something (a TokenReview or a
	// SubjectAccessReview not answered from the cache): random tokens
	// from one address cost at most this many API calls. 0 means 5/s,
	// burst 20 (the certificate service's per-source limit). Requests
	// answered from the cache are never limited. Callers that come through
	// a port-forward share the address 127.0.0.1.
	SourceLimit rate.Limit
	SourceBurst int
}

// Guard authenticates and authorizes requests to the admin endpoints.
type Guard struct {
	cfg       Config
	tokens    *identity.TokenCache[authenticationv1.UserInfo]
	decisions *identity.TokenCache[bool]
	sources   *keyedrate.Limiter // per source address, before an API call
}

// New returns a Guard.
func New(cfg Config) (*Guard, error) {
	if cfg.Client == nil || cfg.Namespace == "" {
		return nil, errors.New("adminauth: Config.Client and Config.Namespace are required")
	}
	cfg.TTL = cmp.Or(cfg.TTL, 10*time.Second)
	cfg.SourceLimit = cmp.Or(cfg.SourceLimit, 5)
	cfg.SourceBurst = cmp.Or(cfg.SourceBurst, 20)
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Guard{cfg: cfg,
		tokens:    &identity.TokenCache[authenticationv1.UserInfo]{TTL: cfg.TTL, Clock: cfg.Clock},
		decisions: &identity.TokenCache[bool]{TTL: cfg.TTL, Clock: cfg.Clock},
		sources:   keyedrate.New(keyedrate.Config{Limit: cfg.SourceLimit, Burst: cfg.SourceBurst, IdleAfter: time.Minute}),
	}, nil
}

// errUnavailable marks a failure to ask the API server.
var errUnavailable = errors.New("adminauth: the API server could not be asked")

// errLimited: the source asked the API server too often.
var errLimited = errors.New("too many requests from this address that needed the API server")

// spend takes one API call from r's source address's budget.
func (g *Guard) spend(r *http.Request) error {
	src, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		src = r.RemoteAddr
	}
	if !g.sources.Allow(src, g.cfg.Clock.Now(), 1) {
		return errLimited
	}
	return nil
}

// tooMany answers a limited request.
func tooMany(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, "weft: "+errLimited.Error()+"; retry later", http.StatusTooManyRequests)
}

// Protect serves next only to callers that came over TLS, authenticated,
// and may get resource in API group weft.dev in the Guard's namespace.
func (g *Guard) Protect(resource string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log := g.cfg.Logger.With("path", r.URL.Path, "peer", r.RemoteAddr)
		if r.TLS == nil {
			// Not 401: a client must not answer this by sending a credential
			// in the clear.
			http.Error(w, "weft: "+r.URL.Path+" is served over TLS only (https on this port); plain HTTP serves /metrics and /healthz", http.StatusForbidden)
			return
		}
		user, err := g.authenticate(r)
		switch {
		case errors.Is(err, errLimited):
			log.Info("admin request refused", "reason", err.Error())
			tooMany(w)
			return
		case errors.Is(err, errUnavailable):
			log.Error("admin request: authentication", "err", err)
			http.Error(w, "weft: cannot authenticate now: the API server could not be asked", http.StatusServiceUnavailable)
			return
		case err != nil:
			log.Info("admin request refused", "reason", err.Error())
			w.Header().Set("WWW-Authenticate", `Bearer realm="weft-controlplane"`)
			http.Error(w, "weft: unauthorized: "+err.Error(), http.StatusUnauthorized)
			return
		}
		allowed, err := g.authorize(r, user, resource)
		if errors.Is(err, errLimited) {
			log.Info("admin request refused", "user", user.Username, "reason", err.Error())
			tooMany(w)
			return
		}
		if err != nil {
			log.Error("admin request: authorization", "user", user.Username, "err", err)
			http.Error(w, "weft: cannot authorize now: the API server could not be asked", http.StatusServiceUnavailable)
			return
		}
		if !allowed {
			log.Info("admin request forbidden", "user", user.Username, "groups", user.Groups, "resource", resource)
			http.Error(w, fmt.Sprintf("weft: forbidden: user %q cannot get %s.%s in namespace %s (see the ClusterRoles weft-audit-reader and weft-status-reader)",
				user.Username, resource, Group, g.cfg.Namespace), http.StatusForbidden)
			return
		}
		log.Info("admin request", "user", user.Username, "resource", resource)
		next.ServeHTTP(w, r)
	})
}

// authenticate says who made r: its verified client certificate, else its
// bearer token.
func (g *Guard) authenticate(r *http.Request) (authenticationv1.UserInfo, error) {
	if chains := r.TLS.VerifiedChains; len(chains) > 0 && len(chains[0]) > 0 {
		return certUser(chains[0][0])
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return authenticationv1.UserInfo{}, errors.New("no credentials: send a bearer token or a client certificate of the cluster's client CA")
	}
	scheme, token, _ := strings.Cut(auth, " ")
	token = strings.TrimSpace(token)
	if token == "" || !strings.EqualFold(scheme, "bearer") {
		return authenticationv1.UserInfo{}, errors.New("the Authorization header is not a bearer token")
	}
	if u, ok := g.tokens.Get(token); ok {
		return u, nil
	}
	if err := g.spend(r); err != nil {
		return authenticationv1.UserInfo{}, err
	}
	st, err := identity.ReviewToken(r.Context(), g.cfg.Client, token, nil)
	switch {
	case errors.Is(err, identity.ErrUnauthenticated):
		return authenticationv1.UserInfo{}, errors.New("token refused by the API server")
	case err != nil:
		return authenticationv1.UserInfo{}, fmt.Errorf("%w: %v", errUnavailable, err)
	}
	if st.User.Username == "" {
		return authenticationv1.UserInfo{}, errors.New("token refused: the API server named no user")
	}
	g.tokens.Put(token, st.User)
	return st.User, nil
}

// certUser is the user a client certificate names, as the API server's
// x509 authenticator reads it.
func certUser(c *x509.Certificate) (authenticationv1.UserInfo, error) {
	if c.Subject.CommonName == "" {
		return authenticationv1.UserInfo{}, errors.New("client certificate without a common name")
	}
	groups := slices.Clone(c.Subject.Organization)
	if !slices.Contains(groups, "system:authenticated") {
		groups = append(groups, "system:authenticated")
	}
	return authenticationv1.UserInfo{Username: c.Subject.CommonName, Groups: groups}, nil
}

// authorize asks the API server whether user may get resource, reusing a
// decision younger than TTL.
func (g *Guard) authorize(r *http.Request, user authenticationv1.UserInfo, resource string) (bool, error) {
	key, err := json.Marshal(struct {
		U, UID, R string
		G         []string
		E         map[string]authenticationv1.ExtraValue
	}{user.Username, user.UID, resource, user.Groups, user.Extra})
	if err != nil {
		return false, err
	}
	if allowed, ok := g.decisions.Get(string(key)); ok {
		return allowed, nil
	}
	if err := g.spend(r); err != nil {
		return false, err
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := g.cfg.Client.AuthorizationV1().SubjectAccessReviews().Create(r.Context(), &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: g.cfg.Namespace, Verb: "get", Group: Group, Resource: resource},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("SubjectAccessReview: %w", err)
	}
	allowed := sar.Status.Allowed && !sar.Status.Denied
	g.decisions.Put(string(key), allowed)
	return allowed, nil
}
