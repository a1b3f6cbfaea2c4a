package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/testutil"
)

// socketPath returns a path for a unix socket. t.TempDir is too long for
// the 108-byte limit on sun_path under some test names.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "weft")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "api.sock")
}

// serve runs m.ServeWorkloadAPI on a fresh socket until the test ends.
func serve(t *testing.T, m *Manager) string {
	t.Helper()
	sock := socketPath(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ServeWorkloadAPI(ctx, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeWorkloadAPI: %v", err)
		}
	})
	testutil.Eventually(t, "the socket", func() bool { _, err := os.Stat(sock); return err == nil })
	return sock
}

// x509Source is a go-spiffe Workload API client of sock, closed when the
// test ends.
func x509Source(t *testing.T, sock string) *workloadapi.X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+sock)))
	if err != nil {
		t.Fatalf("NewX509Source: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func TestWorkloadAPIServesRotatingSVIDsUsableForMTLS(t *testing.T) {
	// The fake clock starts 13 h in the past so that the renewed SVIDs
	// (issued ~12 h later) are valid in real time, which crypto/tls uses.
	e := newEnvAt(t, time.Now().Add(-13*time.Hour).Truncate(time.Second))
	mA, _ := e.manager(t, "tok-a", Config{})
	mB, _ := e.manager(t, "tok-b", Config{})
	testutil.Run(t, mA.Run)
	testutil.Run(t, mB.Run)
	<-mA.Ready()
	<-mB.Ready()
	e.waitWaiters(t, 2)
	srcA := x509Source(t, serve(t, mA))
	srcB := x509Source(t, serve(t, mB))

	for _, tc := range []struct {
		m   *Manager
		src *workloadapi.X509Source
	}{{mA, srcA}, {mB, srcB}} {
		want, _ := tc.m.GetX509SVID()
		testutil.Eventually(t, "the first SVID from the Workload API", func() bool { return sameSVID(tc.src, want) })
	}

	e.clock.Step(halfLife)
	testutil.Eventually(t, "renewals", func() bool { return mA.Renewals() == 2 && mB.Renewals() == 2 })
	e.waitWaiters(t, 2)
	for _, tc := range []struct {
		m   *Manager
		src *workloadapi.X509Source
	}{{mA, srcA}, {mB, srcB}} {
		want, _ := tc.m.GetX509SVID()
		testutil.Eventually(t, "the renewed SVID from the Workload API", func() bool { return sameSVID(tc.src, want) })
		got, _ := tc.src.GetX509SVID()
		if key, ok := got.PrivateKey.(*ecdsa.PrivateKey); !ok || !key.Equal(want.PrivateKey) {
			t.Errorf("%s: the Workload API's key is not the SVID's", want.ID)
		}
		b, err := tc.src.GetX509BundleForTrustDomain(td)
		if err != nil || !b.Equal(e.ca.Bundle()) {
			t.Errorf("%s: bundle from the Workload API: got %v, %v; want the CA's", want.ID, b, err)
		}
	}

	// A real mTLS handshake between the two apps, each with its own source.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	serverPeer := make(chan spiffeid.ID, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			serverPeer <- spiffeid.ID{}
			return
		}
		defer conn.Close()
		tc := tls.Server(conn, tlsconfig.MTLSServerConfig(srcB, srcB, tlsconfig.AuthorizeID(idA)))
		if err := tc.Handshake(); err != nil {
			t.Errorf("server handshake: %v", err)
			serverPeer <- spiffeid.ID{}
			return
		}
		id, _ := x509svid.IDFromCert(tc.ConnectionState().PeerCertificates[0])
		serverPeer <- id
		io.Copy(io.Discard, tc)
	}()
	conn, err := tls.Dial("tcp", lis.Addr().String(), tlsconfig.MTLSClientConfig(srcA, srcA, tlsconfig.AuthorizeID(idB)))
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	defer conn.Close()
	peer := conn.ConnectionState().PeerCertificates[0]
	if id, _ := x509svid.IDFromCert(peer); id != idB {
		t.Errorf("client sees peer %s, want %s", id, idB)
	}
	if want, _ := mB.GetX509SVID(); !peer.Equal(want.Certificates[0]) {
		t.Error("the server did not present its renewed SVID")
	}
	if got := <-serverPeer; got != idA {
		t.Errorf("server sees peer %s, want %s", got, idA)
	}
}

func sameSVID(src *workloadapi.X509Source, want *x509svid.SVID) bool {
	got, err := src.GetX509SVID()
	return err == nil && got.ID == want.ID && len(got.Certificates) == len(want.Certificates) &&
		got.Certificates[0].Equal(want.Certificates[0])
}

func TestWorkloadAPIRequests(t *testing.T) {
	e := newEnv(t)
	m, _ := e.manager(t, "tok-a", Config{})
	sock := serve(t, m)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := workload.NewSpiffeWorkloadAPIClient(conn)

	// A stream opened before the first SVID gets it once it exists.
	early, err := client.FetchX509SVID(withHeader(t.Context()), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, m.Run)
	<-m.Ready()
	resp, err := early.Recv()
	if err != nil {
		t.Fatalf("early stream: %v", err)
	}
	if got := resp.GetSvids()[0].GetSpiffeId(); got != idA.String() {
		t.Errorf("early stream: got %s, want %s", got, idA)
	}

	const noHeader = "identity: security header missing from request: workload.spiffe.io: true"
	const jwt = "identity: weft issues X.509-SVIDs only; JWT-SVIDs are not supported"
	for _, tc := range []struct {
		name     string
		header   bool
		call     func(ctx context.Context) error
		wantCode codes.Code
		wantMsg  string
	}{
		{"X509-SVID without header", false, fetchX509SVID(client), codes.InvalidArgument, noHeader},
		{"X509 bundles without header", false, fetchX509Bundles(client), codes.InvalidArgument, noHeader},
		{"JWT-SVID without header", false, fetchJWTSVID(client), codes.InvalidArgument, noHeader},
		{"X509-SVID", true, fetchX509SVID(client), codes.OK, ""},
		{"X509 bundles", true, fetchX509Bundles(client), codes.OK, ""},
		{"JWT-SVID", true, fetchJWTSVID(client), codes.Unimplemented, jwt},
		{"JWT bundles", true, func(ctx context.Context) error {
			s, err := client.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.Unimplemented, jwt},
		{"validate JWT-SVID", true, func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "x", Svid: "y"})
			return err
		}, codes.Unimplemented, jwt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			if tc.header {
				ctx = withHeader(ctx)
			}
			err := tc.call(ctx)
			if s := status.Convert(err); s.Code() != tc.wantCode || s.Message() != tc.wantMsg {
				t.Fatalf("got %v, want code %s, message %q", err, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

func fetchX509SVID(client workload.SpiffeWorkloadAPIClient) func(context.Context) error {
	return func(ctx context.Context) error {
		s, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err != nil {
			return err
		}
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		_, err = x509svid.ParseRaw(resp.GetSvids()[0].GetX509Svid(), resp.GetSvids()[0].GetX509SvidKey())
		return err
	}
}

func fetchX509Bundles(client workload.SpiffeWorkloadAPIClient) func(context.Context) error {
	return func(ctx context.Context) error {
		s, err := client.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
		if err != nil {
			return err
		}
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		if _, ok := resp.GetBundles()["spiffe://cluster.local"]; !ok {
			return errors.New("no bundle for spiffe://cluster.local")
		}
		return nil
	}
}

func fetchJWTSVID(client workload.SpiffeWorkloadAPIClient) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
		return err
	}
}

func TestServeWorkloadAPISocketFile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr bool
	}{
		{"fresh", func(*testing.T, string) {}, false},
		{"stale socket", func(t *testing.T, path string) {
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			l.Close()
		}, false},
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			m, _ := e.manager(t, "tok-a", Config{})
			sock := socketPath(t)
			tc.prepare(t, sock)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.ServeWorkloadAPI(ctx, sock) }()
			if tc.wantErr {
				err := <-done
				cancel()
				if want := "identity: workload API: " + sock + " exists and is not a socket (mode -rw-------)"; err == nil || err.Error() != want {
					t.Fatalf("got %v, want %q", err, want)
				}
				return
			}
			testutil.Eventually(t, "the socket", func() bool {
				fi, err := os.Stat(sock)
				return err == nil && fi.Mode().Type() == os.ModeSocket && fi.Mode().Perm() == 0o777
			})
			// A stream waiting for the first SVID must not hold up shutdown.
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(withHeader(t.Context()), &workload.X509SVIDRequest{})
			if err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, "the stream to subscribe", func() bool {
				m.mu.RLock()
				defer m.mu.RUnlock()
				return len(m.subs) == 1
			})
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("ServeWorkloadAPI: %v", err)
			}
			if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
				t.Errorf("open stream at shutdown: got %v, want Unavailable", err)
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket left behind: %v", err)
			}
		})
	}
}
