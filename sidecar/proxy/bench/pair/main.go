// Command pair runs one side of a weft sidecar pair on loopback so that
// external load tools (iperf3, fortio) can push traffic through it, with
// the small helpers the benchmarks need around it:
//
//	pair -mode certs  -certs DIR            CA, two X.509-SVIDs and the bundle as PEM
//	pair -mode client -certs DIR -listen A -to B   client sidecar: plaintext on A, mTLS to B
//	pair -mode server -certs DIR -listen B -to C   server sidecar: mTLS on B, plaintext to C
//	     [-app-protocol tcp|http|http2|grpc]       the service port's protocol (both sides alike)
//	pair -mode echo   -listen C                    echo server
//	pair -mode hold   -to A -n 1000 -for 30s       opens n idle connections through A and holds them
//	pair -mode relay  -listen A -to B [-splice]    plaintext TCP relay, no TLS: the throughput ceiling
//	pair -mode stdlib-client|stdlib-server ...     the same as client/server with -app-protocol http|http2|grpc,
//	                                               built of net/http alone: the L7 pair's ceiling (stdlib.go)
//
// The relay is the baseline no TLS proxy pair can beat in the same layout:
// it makes the same loopback system calls a proxy must make (a read and a
// write per buffer on each side) with 256 KiB buffers — fewer calls than
// TLS's 16 KiB records allow — and no cryptography at all. With -splice it
// moves bytes in the kernel (io.Copy between TCP sockets uses splice(2)),
// which a TLS proxy without kernel TLS cannot do.
//
// The sidecars are the real proxy.Proxy with a hand-made model.Config shaped
// like the control plane's (sniffing on, an EDS cluster with mTLS and
// SPIFFE ID checks, egress chains beside it); SO_ORIGINAL_DST is faked: the
// client side maps every connection to the service address, the server
// side to the app's port. "ready" is printed once the listeners are open.
//
// -app-protocol says what the control plane's registry would call the
// service port (config.go): tcp (the default) is today's L4 pair, bytes
// copied over one mTLS connection per app connection; http, http2 and grpc
// are the L7 pair of --http-routing (docs/l7.md): the client sidecar serves
// the app's HTTP/1.1 or h2c request by request and sends each over pooled
// HTTP/2 on mTLS (ALPN h2) to the server sidecar's inbound|<port>|h2 chain,
// which delivers it to the app in HTTP/1.1 (http) or h2c (http2, grpc).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served on -pprof only
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/memtune"
	"github.com/weftmesh/weft/sidecar/proxy"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("cluster.local")
	clientID  = spiffeid.RequireFromSegments(td, "ns", "bench", "sa", "client")
	serverID  = spiffeid.RequireFromSegments(td, "ns", "bench", "sa", "server")
	serviceIP = netip.MustParseAddr("198.19.0.10") // what the client app "dialled"
	podIP     = netip.MustParseAddr("198.18.0.2")  // the server pod
)

func main() {
	mode := flag.String("mode", "", "certs, client, server, echo, hold, relay, stdlib-client or stdlib-server")
	dir := flag.String("certs", "", "directory of the PEM files")
	listen := flag.String("listen", "", "address to listen on")
	to := flag.String("to", "", "address to forward or connect to")
	proto := flag.String("app-protocol", "tcp", "client, server: the service port's protocol: tcp (L4), http, http2 or grpc (HTTP routing)")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this loopback address")
	n := flag.Int("n", 1000, "hold: connections to open")
	splice := flag.Bool("splice", false, "relay: copy with splice(2) instead of read/write")
	hold := flag.Duration("for", 30*time.Second, "hold: how long to hold them")
	flag.Parse()
	if *pprofAddr != "" {
		go func() { _ = http.ListenAndServe(*pprofAddr, nil) }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch *mode {
	case "certs":
		err = writeCerts(*dir)
	case "client", "server":
		err = runSidecar(ctx, *mode, *dir, *listen, *to, *proto)
	case "echo":
		err = runEcho(ctx, *listen)
	case "hold":
		err = runHold(ctx, *to, *n, *hold)
	case "relay":
		err = runRelay(ctx, *listen, *to, *splice)
	case "stdlib-client", "stdlib-server":
		err = runStdlib(ctx, *mode, *dir, *listen, *to, *proto)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pair:", err)
		os.Exit(1)
	}
}

// writeCerts makes a CA and writes ca.pem (the bundle), client.pem,
// client.key, server.pem and server.key (leaf then intermediate; ECDSA
// P-256) into dir.
func writeCerts(dir string) error {
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.pem": ca.BundlePEM()}
	for name, id := range map[string]spiffeid.ID{"client": clientID, "server": serverID} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			return err
		}
		chain, err := ca.Sign(certs.SignRequest{CSR: csr, ID: id, TTL: 24 * time.Hour})
		if err != nil {
			return err
		}
		var crt []byte
		for _, c := range chain {
			crt = append(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		files[name+".pem"] = crt
		files[name+".key"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// runSidecar runs the client or the server side of a port of protocol
// proto (-app-protocol) until ctx ends.
func runSidecar(ctx context.Context, mode, dir, listen, to, proto string) error {
	hp, err := appProtocol(proto)
	if err != nil {
		return err
	}
	svid, err := x509svid.Load(filepath.Join(dir, mode+".pem"), filepath.Join(dir, mode+".key"))
	if err != nil {
		return err
	}
	bundle, err := x509bundle.Load(td, filepath.Join(dir, "ca.pem"))
	if err != nil {
		return err
	}
	target, err := netip.ParseAddrPort(to)
	if err != nil {
		return fmt.Errorf("-to: %w", err)
	}
	memtune.Apply() // as cmd/weft-sidecar does
	go memtune.ReleaseWhenQuiet(ctx, memtune.Quiet{}, nil)
	cfg := proxy.Config{
		SVID: svid, Bundle: bundle, TrustDomain: td,
		InboundAddr: "127.0.0.1:0", OutboundAddr: "127.0.0.1:0", AdminAddr: "-",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if mode == "client" {
		cfg.OutboundAddr = listen
		dst := netip.AddrPortFrom(serviceIP, 80)
		cfg.OriginalDst = func(*net.TCPConn) (netip.AddrPort, error) { return dst, nil }
	} else {
		cfg.InboundAddr = listen
		dst := netip.AddrPortFrom(podIP, target.Port())
		cfg.OriginalDst = func(*net.TCPConn) (netip.AddrPort, error) { return dst, nil }
	}
	xc := sidecarConfig(mode, target, hp)
	cfg.Config = func() *model.Config { return xc }
	p, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
		fmt.Println("ready")
	case err := <-done:
		return err
	}
	return <-done
}

// serveTCP accepts on listen, prints "ready" and runs handle on its own
// goroutine for every connection (closing it after), until ctx ends.
func serveTCP(ctx context.Context, listen string, handle func(*net.TCPConn)) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); l.Close() }()
	fmt.Println("ready")
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			handle(c.(*net.TCPConn))
		}()
	}
}

// runEcho echoes every connection back, half-closing after EOF.
func runEcho(ctx context.Context, listen string) error {
	return serveTCP(ctx, listen, func(c *net.TCPConn) {
		_, _ = io.Copy(c, c)
		_ = c.CloseWrite()
	})
}

// runRelay forwards every connection on listen to to, both ways, with
// half-close: read/write through a 256 KiB buffer, or io.Copy (splice).
func runRelay(ctx context.Context, listen, to string, splice bool) error {
	copyHalf := func(dst, src *net.TCPConn) {
		if splice {
			_, _ = io.Copy(dst, src)
		} else {
			buf := make([]byte, 256<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
		}
		_ = dst.CloseWrite()
	}
	return serveTCP(ctx, listen, func(c *net.TCPConn) {
		u, err := net.Dial("tcp", to)
		if err != nil {
			return
		}
		defer u.Close()
		done := make(chan struct{})
		go func() { copyHalf(u.(*net.TCPConn), c); close(done) }()
		copyHalf(c, u.(*net.TCPConn))
		<-done
	})
}

// runHold opens n connections to addr, checks each echoes one byte, prints
// "holding", and keeps them open for d or until ctx ends.
func runHold(ctx context.Context, addr string, n int, d time.Duration) error {
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// A zero byte is no HTTP method nor a TLS record: the sniffer decides at
	// once (a letter could start a request line, and it would wait
	// SniffTimeout for more: 200 ms per connection).
	one := []byte{0}
	for i := range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(one); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
	}
	fmt.Println("holding", len(conns))
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	return nil
}
