// Package streamauthtest is a fake registry and token reviewer for tests
// of the streams streamauth guards (controlplane/xds/ads, controlplane/audit).
package streamauthtest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/controlplane/streamauth"
)

// Pods is both streamauth.Pods and identity.Authenticator: each pod added
// gets a pod-bound token "token-<pod>.<ns>" (Token), UID "uid-<pod>" and,
// unless told otherwise, the IP 127.0.0.1 (where loopback clients dial
// from).
type Pods struct {
	mu      sync.Mutex
	pods    map[string]streamauth.Pod // namespace/name
	tokens  map[string]identity.Caller
	first   map[spiffeid.ID]string // the token of the first pod added per ID
	syncing map[string]bool        // namespace/name: Pod says Unavailable
}

var (
	_ streamauth.Pods        = (*Pods)(nil)
	_ identity.Authenticator = (*Pods)(nil)
)

// New returns an empty Pods.
func New() *Pods {
	return &Pods{pods: map[string]streamauth.Pod{}, tokens: map[string]identity.Caller{}, first: map[spiffeid.ID]string{}, syncing: map[string]bool{}}
}

// Pod implements streamauth.Pods.
func (f *Pods) Pod(_ context.Context, ns, name string) (streamauth.Pod, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.syncing[ns+"/"+name] {
		return streamauth.Pod{}, false, status.Error(codes.Unavailable, "registry not synced yet")
	}
	p, ok := f.pods[ns+"/"+name]
	return p, ok, nil
}

// Authenticate implements identity.Authenticator: a token Add made is its
// pod's, whether or not the pod is still there (as a TokenReview within
// the cache's TTL); anything else is refused.
func (f *Pods) Authenticate(_ context.Context, token string) (identity.Caller, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.tokens[token]
	if !ok {
		return identity.Caller{}, fmt.Errorf("%w: invalid bearer token", identity.ErrUnauthenticated)
	}
	return c, nil
}

// Add registers pod ns/name running as id (a workload ID
// spiffe://<td>/ns/<ns>/sa/<sa>) with the IPs given (none: 127.0.0.1)
// and returns its token.
func (f *Pods) Add(ns, name string, id spiffeid.ID, ips ...string) string {
	if len(ips) == 0 {
		ips = []string{"127.0.0.1"}
	}
	p := streamauth.Pod{UID: "uid-" + name, ID: id}
	for _, ip := range ips {
		p.IPs = append(p.IPs, netip.MustParseAddr(ip))
	}
	seg := strings.Split(id.Path(), "/")
	tok := Token(ns, name)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods[ns+"/"+name] = p
	f.tokens[tok] = identity.Caller{Namespace: ns, ServiceAccount: seg[len(seg)-1], PodName: name, PodUID: p.UID}
	if _, ok := f.first[id]; !ok {
		f.first[id] = tok
	}
	return tok
}

// Token is the token Add gives pod ns/name.
func Token(ns, name string) string { return "token-" + name + "." + ns }

// Known reports whether token is one Add made.
func (f *Pods) Known(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.tokens[token]
	return ok
}

// Remove forgets pod ns/name, as the registry does once it is deleted.
func (f *Pods) Remove(ns, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, ns+"/"+name)
}

// Replace gives pod ns/name a new UID, as a pod deleted and created again
// under the same name has.
func (f *Pods) Replace(ns, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pods[ns+"/"+name]
	p.UID += "-new"
	f.pods[ns+"/"+name] = p
}

// Syncing makes Pod answer Unavailable for pod ns/name.
func (f *Pods) Syncing(ns, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncing[ns+"/"+name] = true
}

// DefaultToken is the token of the first pod added for id ("" if none).
func (f *Pods) DefaultToken(id spiffeid.ID) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first[id]
}

// SetDefaultToken makes token id's default (a token with another
// identity's certificate).
func (f *Pods) SetDefaultToken(id spiffeid.ID, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.first[id] = token
}

// Bearer is a per-RPC credential sending a token as the sidecar does.
type Bearer string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (Bearer) RequireTransportSecurity() bool { return true }

// DialOptions make a client present token ("": none) on every call, as a
// sidecar does, and dial from the source IP from ("": the kernel's choice).
func DialOptions(token, from string) []grpc.DialOption {
	var opts []grpc.DialOption
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(Bearer(token)))
	}
	if from != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	}
	return opts
}
