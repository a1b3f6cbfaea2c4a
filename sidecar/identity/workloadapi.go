package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The Workload API served here follows the SPIFFE Workload API standard
// (X.509-SVID profile). It has no caller attestation of its own: the socket
// lives in an emptyDir volume that only the containers of this pod mount,
// and every container of the pod runs as the pod's service account, so
// every caller is entitled to the pod's identity. That is why handing out
// the private key is right here: the SVID is the app's own identity (the
// spec's model: the Workload API delivers each workload its SVID and key),
// the same one the sidecar presents for it. The key crosses the pod's
// boundary nowhere: not to disk, not to the control plane.

// workloadHeader is the metadata every Workload API request must carry
// (value "true"); it shows the request was made deliberately by a
// Workload API client and not forwarded by an unwitting proxy.
const workloadHeader = "workload.spiffe.io"

// socketMode lets any UID in the pod connect. App containers run as UIDs the
// sidecar (UID 1337) cannot predict; the emptyDir volume, not the file
// mode, is what keeps other pods out.
const socketMode = 0o777

// ServeWorkloadAPI serves the SPIFFE Workload API on a unix socket at
// socketPath until ctx is done, then stops and removes the socket. A stale
// socket left by an earlier run is removed first; any other file at that
// path is an error. It returns nil after ctx is done.
func (m *Manager) ServeWorkloadAPI(ctx context.Context, socketPath string) error {
	if err := removeStaleSocket(socketPath); err != nil {
		return err
	}
	lis, err := net.Listen("unix", socketPath)
	if err != nil {
		return fmt.Errorf("identity: workload API: %w", err)
	}
	if err := os.Chmod(socketPath, socketMode); err != nil {
		lis.Close()
		return fmt.Errorf("identity: workload API: %w", err)
	}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkWorkloadHeader(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkWorkloadHeader(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	workload.RegisterSpiffeWorkloadAPIServer(srv, &workloadAPI{m: m, done: ctx.Done()})

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
		// Streams watch ctx too, so GracefulStop does not wait for clients.
		srv.GracefulStop() // closes lis, which removes the socket file
		<-served
		return nil
	case err := <-served:
		return fmt.Errorf("identity: workload API on %s: %w", socketPath, err)
	}
}

// removeStaleSocket removes a socket file at path; anything else there is
// left alone and reported.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("identity: workload API: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("identity: workload API: %s exists and is not a socket (mode %s)", path, fi.Mode())
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("identity: workload API: remove stale socket: %w", err)
	}
	return nil
}

func checkWorkloadHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(workloadHeader); len(v) != 1 || v[0] != "true" {
		return status.Errorf(codes.InvalidArgument, "identity: security header missing from request: %s: true", workloadHeader)
	}
	return nil
}

// workloadAPI implements the X.509 part of the Workload API over a Manager.
type workloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	m    *Manager
	done <-chan struct{} // the server is shutting down
}

var _ workload.SpiffeWorkloadAPIServer = (*workloadAPI)(nil)

const jwtUnsupported = "identity: weft issues X.509-SVIDs only; JWT-SVIDs are not supported"

// FetchX509SVID sends the current SVID (waiting for one if there is none or
// it has expired) and then every new one, until the client goes away.
func (w *workloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	var sent *x509svid.SVID
	return w.watch(stream.Context(), func(svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
		if svid == sent {
			return nil
		}
		resp, err := x509SVIDResponse(svid, bundle)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		sent = svid
		return nil
	})
}

// FetchX509Bundles sends the current trust bundle and then every change.
func (w *workloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	var sent *x509bundle.Bundle
	return w.watch(stream.Context(), func(_ *x509svid.SVID, bundle *x509bundle.Bundle) error {
		if sent != nil && sent.Equal(bundle) {
			return nil
		}
		if err := stream.Send(&workload.X509BundlesResponse{
			Bundles: map[string][]byte{bundle.TrustDomain().IDString(): concatDER(bundle.X509Authorities())},
		}); err != nil {
			return err
		}
		sent = bundle
		return nil
	})
}

// watch calls send with the current SVID and bundle, if valid, and again
// after every rotation, until ctx or the server is done.
func (w *workloadAPI) watch(ctx context.Context, send func(*x509svid.SVID, *x509bundle.Bundle) error) error {
	updates, cancel := w.m.Subscribe() // before reading, so no rotation is missed
	defer cancel()
	for {
		if svid, bundle, err := w.m.current(); err == nil {
			if err := send(svid, bundle); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-w.done:
			return status.Error(codes.Unavailable, "identity: workload API shutting down")
		case <-updates:
		}
	}
}

func (w *workloadAPI) FetchJWTSVID(context.Context, *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	return nil, status.Error(codes.Unimplemented, jwtUnsupported)
}

func (w *workloadAPI) FetchJWTBundles(*workload.JWTBundlesRequest, grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return status.Error(codes.Unimplemented, jwtUnsupported)
}

func (w *workloadAPI) ValidateJWTSVID(context.Context, *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	return nil, status.Error(codes.Unimplemented, jwtUnsupported)
}

// x509SVIDResponse encodes svid as the Workload API does: the chain as
// concatenated DER, the key as PKCS#8 DER, the bundle of its trust domain as
// concatenated DER.
func x509SVIDResponse(svid *x509svid.SVID, bundle *x509bundle.Bundle) (*workload.X509SVIDResponse, error) {
	key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "identity: marshal private key: %v", err)
	}
	return &workload.X509SVIDResponse{
		Svids: []*workload.X509SVID{{
			SpiffeId:    svid.ID.String(),
			X509Svid:    concatDER(svid.Certificates),
			X509SvidKey: key,
			Bundle:      concatDER(bundle.X509Authorities()),
		}},
	}, nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
