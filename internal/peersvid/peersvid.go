// Package peersvid reads the SPIFFE ID of a gRPC stream's client
// certificate. The control plane's port 15012 only requests a client
// certificate (the certificate service's callers have none yet), so the
// streams that require one — ADS and the egress audit stream — verify it
// themselves against weft's trust bundle with this.
package peersvid

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ID returns the verified SPIFFE ID of the stream's client certificate.
// Every failure is codes.Unauthenticated, its message prefixed with service
// ("xds", "audit") and naming what needs the certificate (what).
func ID(ctx context.Context, bundle x509bundle.Source, now time.Time, service, what string) (spiffeid.ID, error) {
	id, _, err := Verify(ctx, bundle, now, service, what)
	return id, err
}

// Verify is ID that also returns the verified leaf certificate (its
// NotAfter is when the stream's credential ends).
func Verify(ctx context.Context, bundle x509bundle.Source, now time.Time, service, what string) (spiffeid.ID, *x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, nil, status.Error(codes.Unauthenticated, service+": no peer on the stream")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return spiffeid.ID{}, nil, status.Error(codes.Unauthenticated, service+": the stream is not over TLS")
	}
	chain := info.State.PeerCertificates
	if len(chain) == 0 {
		return spiffeid.ID{}, nil, status.Error(codes.Unauthenticated,
			service+": a client certificate (the sidecar's X.509-SVID) is required for "+what)
	}
	id, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now))
	if err != nil {
		return spiffeid.ID{}, nil, status.Errorf(codes.Unauthenticated, "%s: client certificate: %v", service, err)
	}
	return id, chain[0], nil
}
