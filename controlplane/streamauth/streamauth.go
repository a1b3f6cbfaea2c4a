// Package streamauth decides who may hold a pod's long-lived streams to
// the control plane — ADS (controlplane/xds/ads) and the egress audit stream
// (controlplane/audit) — and ends a stream when that stops being true.
//
// # Why the SVID is not enough
//
// The sidecar serves its pod's X.509-SVID and key to the pod's app
// containers over the SPIFFE Workload API: that is what the API is for. A
// stream authenticated by the SVID alone may therefore be the app, which
// could then read its pod's configuration (harmless: it is the pod's) and,
// worse, write egress audit events as its pod. So a stream must also carry
// a credential the app containers cannot obtain: the pod's projected
// ServiceAccount token of audience weft-ca, which the injector mounts
// into the weft-proxy container only (volume weft-token at
// /var/run/secrets/weft/tokens; app containers get the Workload API socket
// volume and nothing else, and the injector refuses a pod or ephemeral
// container that mounts weft-token itself). The sidecar sends it as
// "authorization: Bearer <token>" metadata on every stream, read afresh
// from the file each time (the kubelet rotates it).
//
// # What Authorize checks, once per stream
//
//  1. The client certificate verifies against weft's bundle at the control
//     plane's time (Unauthenticated otherwise).
//  2. The token is present and a TokenReview accepts it for audience
//     weft-ca, bound to a pod that still exists with the same UID (the
//     certificate service's authenticator, with its 30 s cache;
//     Unauthenticated otherwise, Unavailable if the API server cannot be
//     asked).
//  3. The token's ServiceAccount is the certificate's SPIFFE ID
//     (PermissionDenied).
//  4. The registry knows the token's pod with the token's UID, running as
//     that SPIFFE ID (PermissionDenied), and the stream's peer address is
//     one of the pod's IPs (status.podIPs; the pod network has no NAT), so
//     neither a token nor an SVID carried off the pod works elsewhere
//     (PermissionDenied).
//
// The stream's node ID must then name the token's pod: controlplane/xds/ads and
// controlplane/audit check that against [Grant.Pod] and [Grant.Namespace]. A pod sharing a
// ServiceAccount with another cannot claim the other's node ID, since its
// token names itself.
//
// # When a stream ends
//
// A [Grant] lives until its stream ends or, first: the client certificate
// expires (its NotAfter, on the control plane's clock: Unauthenticated),
// or the pod is deleted or replaced by one of the same name (a different
// UID), as the registry sees it after each change ([Authorizer.Recheck]:
// PermissionDenied). Its context then ends with that status as its cause;
// [Stream] makes a stream's Recv and Send fail with it, so the stream's
// handler returns it to the client.
//
// Imports: controlplane/identity (the Authenticator), internal/peersvid,
// go-spiffe, gRPC, k8s.io/utils/clock. The pod lookup comes in as [Pods],
// implemented by the wiring over the registry.
package streamauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/internal/peersvid"
)

// Pod is what the registry says about a pod.
type Pod struct {
	UID string
	ID  spiffeid.ID  // the SPIFFE ID of its ServiceAccount
	IPs []netip.Addr // status.podIPs
}

// Pods finds pods. A pod it does not know is ok == false. An error with a
// gRPC status code keeps it (Unavailable while the registry syncs); any
// other error is Unavailable.
type Pods interface {
	Pod(ctx context.Context, namespace, name string) (p Pod, ok bool, err error)
}

// Config configures an Authorizer. Everything but Clock and Logger is
// required.
type Config struct {
	// Authenticator reviews the pod's token (identity.TokenReviewer
	// behind identity.CachingAuthenticator, the certificate service's).
	Authenticator identity.Authenticator
	Pods          Pods
	// Bundle verifies client certificates (weft's roots, live).
	Bundle x509bundle.Source
	Clock  clock.Clock  // nil: the real clock
	Logger *slog.Logger // nil: discard
}

// Authorizer authorizes streams and keeps their grants to end them.
type Authorizer struct {
	cfg Config

	mu     sync.Mutex
	grants map[*Grant]struct{}
}

// New returns an Authorizer.
func New(cfg Config) (*Authorizer, error) {
	if cfg.Authenticator == nil || cfg.Pods == nil || cfg.Bundle == nil {
		return nil, errors.New("streamauth: Config.Authenticator, Pods and Bundle are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Authorizer{cfg: cfg, grants: map[*Grant]struct{}{}}, nil
}

// Grant is an authorized stream of one pod's sidecar.
type Grant struct {
	Namespace, Pod, UID string
	ID                  spiffeid.ID // the client certificate's (and the token's ServiceAccount's)
	NotAfter            time.Time   // the client certificate's
	Peer                netip.Addr

	service string
	ctx     context.Context
	cancel  context.CancelCauseFunc
}

// NodeID is the pod's node ID, "<pod>.<namespace>".
func (g *Grant) NodeID() string { return g.Pod + "." + g.Namespace }

// Context ends when the grant does, with the reason (a gRPC status error)
// as its cause, or when the stream's own context ends.
func (g *Grant) Context() context.Context { return g.ctx }

// Err is nil while the grant holds, else the status error that ended it
// (nil too when only the stream itself ended).
func (g *Grant) Err() error {
	if g.ctx.Err() == nil {
		return nil
	}
	if c := context.Cause(g.ctx); c != nil {
		if _, ok := status.FromError(c); ok {
			return c // only end's causes are status errors
		}
	}
	return nil
}

func (g *Grant) end(code codes.Code, format string, args ...any) {
	g.cancel(status.Errorf(code, g.service+": stream of node "+g.NodeID()+" closed: "+format, args...))
}

type grantKey struct{}

// FromContext returns the grant a context carries ([Grant.Context] and
// the contexts derived from it), or nil.
func FromContext(ctx context.Context) *Grant {
	g, _ := ctx.Value(grantKey{}).(*Grant)
	return g
}

// Authorize checks the stream whose context is ctx (see the package doc)
// and returns its grant. service prefixes messages ("xds", "audit"); what
// names the stream for them ("ADS"). Every error is a gRPC status error.
func (a *Authorizer) Authorize(ctx context.Context, service, what string) (*Grant, error) {
	now := a.cfg.Clock.Now()
	id, leaf, err := peersvid.Verify(ctx, a.cfg.Bundle, now, service, what)
	if err != nil {
		return nil, err
	}
	token, ok := identity.BearerToken(ctx)
	if !ok {
		return nil, status.Errorf(codes.Unauthenticated, `%s: %s needs the pod's ServiceAccount token (audience %s) as "authorization: Bearer <token>" `+
			`besides the client certificate: the SVID alone may be the app's`, service, what, identity.Audience)
	}
	caller, err := a.cfg.Authenticator.Authenticate(ctx, token)
	switch {
	case errors.Is(err, identity.ErrUnauthenticated):
		return nil, status.Errorf(codes.Unauthenticated, "%s: %s: %v", service, what, err)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "%s: %s: cannot review the token: %v", service, what, err)
	}
	tokenID, err := spiffeid.FromSegments(id.TrustDomain(), "ns", caller.Namespace, "sa", caller.ServiceAccount)
	if err != nil || tokenID != id {
		return nil, status.Errorf(codes.PermissionDenied, "%s: the token is ServiceAccount %s/%s's, the client certificate is %s",
			service, caller.Namespace, caller.ServiceAccount, id)
	}
	name := caller.Namespace + "/" + caller.PodName
	pod, known, err := a.cfg.Pods.Pod(ctx, caller.Namespace, caller.PodName)
	switch {
	case err != nil:
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
			return nil, status.Errorf(st.Code(), "%s: pod %s: %s", service, name, st.Message())
		}
		return nil, status.Errorf(codes.Unavailable, "%s: pod %s: %v", service, name, err)
	case podGone(pod, known, caller.PodUID):
		if !known {
			// A pod the informer has not seen yet looks the same as one
			// that does not exist; the sidecar retries with backoff
			// either way.
			return nil, status.Errorf(codes.PermissionDenied, "%s: pod %s is not known", service, name)
		}
		return nil, status.Errorf(codes.PermissionDenied, "%s: pod %s has UID %s, the token is bound to UID %s", service, name, pod.UID, caller.PodUID)
	case pod.ID != id:
		return nil, status.Errorf(codes.PermissionDenied, "%s: pod %s runs as %s, the client certificate is %s", service, name, pod.ID, id)
	}
	addr := peerIP(ctx)
	if !addr.IsValid() || !slices.Contains(pod.IPs, addr) {
		return nil, status.Errorf(codes.PermissionDenied, "%s: %s comes from %v, which is not an IP of pod %s %v", service, what, addrString(addr), name, pod.IPs)
	}

	g := &Grant{Namespace: caller.Namespace, Pod: caller.PodName, UID: caller.PodUID, ID: id, NotAfter: leaf.NotAfter, Peer: addr, service: service}
	g.ctx, g.cancel = context.WithCancelCause(context.WithValue(ctx, grantKey{}, g))
	expiry := a.cfg.Clock.NewTimer(leaf.NotAfter.Sub(now))
	a.mu.Lock()
	a.grants[g] = struct{}{}
	a.mu.Unlock()
	go func() {
		select {
		case <-expiry.C():
			g.end(codes.Unauthenticated, "its client certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
		case <-g.ctx.Done():
			expiry.Stop()
		}
		a.mu.Lock()
		delete(a.grants, g)
		a.mu.Unlock()
	}()
	// The pod again, now that a Recheck would see the grant: a snapshot
	// without it published since the check above (its Recheck found no
	// grant to end) must not leave a stream nothing rechecks until the
	// next change.
	switch pod, known, err := a.cfg.Pods.Pod(ctx, caller.Namespace, caller.PodName); {
	case err != nil:
		// A lookup error leaves the grant alone, as Recheck does.
	case podGone(pod, known, caller.PodUID):
		g.end(codes.PermissionDenied, "pod %s went while its %s was authorized", name, what)
		return nil, status.Errorf(codes.PermissionDenied, "%s: pod %s is not known", service, name)
	}
	return g, nil
}

// Recheck ends the grants whose pod the registry no longer knows, or
// knows with another UID (deleted, or replaced by a pod of the same
// name). Call it after every registry change; a lookup error leaves the
// grant alone.
func (a *Authorizer) Recheck(ctx context.Context) {
	a.mu.Lock()
	gs := make([]*Grant, 0, len(a.grants))
	for g := range a.grants {
		gs = append(gs, g)
	}
	a.mu.Unlock()
	for _, g := range gs {
		pod, known, err := a.cfg.Pods.Pod(ctx, g.Namespace, g.Pod)
		switch {
		case err != nil, !podGone(pod, known, g.UID):
			continue
		case !known:
			g.end(codes.PermissionDenied, "pod %s/%s was deleted", g.Namespace, g.Pod)
		default:
			g.end(codes.PermissionDenied, "pod %s/%s was replaced (UID %s, the stream's is %s)", g.Namespace, g.Pod, pod.UID, g.UID)
		}
		a.cfg.Logger.Info("stream closed: its pod is gone", "service", g.service, "node", g.NodeID(), "cause", context.Cause(g.ctx))
	}
}

// podGone reports whether the pod with UID uid (the one a stream's token
// is bound to) is gone, by the registry's answer (pod, known) for its
// namespace and name: the name is not known (deleted, or not seen yet),
// or names a pod with another UID (replaced by one of the same name).
// Authorize's two checks and Recheck share it, so a stream is refused at
// the start and ended later for the same reasons.
func podGone(pod Pod, known bool, uid string) bool {
	return !known || pod.UID != uid
}

// Run calls Recheck after each value from changes until ctx ends.
func (a *Authorizer) Run(ctx context.Context, changes <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
			a.Recheck(ctx)
		}
	}
}

// Len is the number of live grants.
func (a *Authorizer) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.grants)
}

func peerIP(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "an unknown address"
	}
	return a.String()
}

// Stream wraps a server stream of grant g: its Context is g's, and Recv
// and Send fail with the grant's cause once it ends, a Recv that is
// waiting included, so the handler (go-control-plane's, which watches
// only its own context) returns.
func Stream(ss grpc.ServerStream, g *Grant) grpc.ServerStream {
	return &stream{ServerStream: ss, g: g}
}

type stream struct {
	grpc.ServerStream
	g *Grant
}

func (s *stream) Context() context.Context { return s.g.ctx }

func (s *stream) ended() error {
	if err := s.g.Err(); err != nil {
		return err
	}
	return s.g.ctx.Err()
}

func (s *stream) SendMsg(m any) error {
	if s.g.ctx.Err() != nil {
		return s.ended()
	}
	return s.ServerStream.SendMsg(m)
}

// RecvMsg waits for the next message or the grant's end. On the latter
// the inner RecvMsg is left to return when the handler does (it may fill
// m, which the caller no longer reads).
func (s *stream) RecvMsg(m any) error {
	if s.g.ctx.Err() != nil {
		return s.ended()
	}
	done := make(chan error, 1)
	go func() { done <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-done:
		return err
	case <-s.g.ctx.Done():
		return s.ended()
	}
}

// String describes the grant for logs.
func (g *Grant) String() string {
	return fmt.Sprintf("%s (%s, %s, until %s)", g.NodeID(), g.ID, g.Peer, g.NotAfter.UTC().Format(time.RFC3339))
}
