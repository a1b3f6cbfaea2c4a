package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"time"

	"github.com/weftmesh/weft/internal/memtune"
)

// runStdlib runs one side of the standard library's L7 pair (-mode
// stdlib-client, stdlib-server): the ceiling a sidecar built on net/http
// can reach, measured beside weft's L7 pair. It makes the same two HTTP
// hops per side that weft's L7 mode makes and nothing else: the client
// side serves the app's HTTP/1.1 (or h2c, -app-protocol grpc/http2) with
// an httputil.ReverseProxy whose transport speaks HTTP/2 over mTLS (TLS
// 1.3, ALPN h2, the pair's certificates, chains checked against the CA;
// net/http's Transport with the settings weft's sidecars had) to
// the server side, which serves HTTP/2 on TLS and forwards each request
// with a ReverseProxy to the app at to (HTTP/1.1, or h2c; the app
// transport likewise). No routing,
// policy, metrics, retries, balancing or SPIFFE ID check: what weft's L7
// pair costs above this pair is weft's own work.
func runStdlib(ctx context.Context, mode, dir, listen, to, proto string) error {
	h2c := proto == "grpc" || proto == "http2"
	if proto != "http" && !h2c {
		return fmt.Errorf("-mode %s: -app-protocol %q: want http, http2 or grpc", mode, proto)
	}
	side := "client"
	if mode == "stdlib-server" {
		side = "server"
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, side+".pem"), filepath.Join(dir, side+".key"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("ca.pem: no certificate")
	}
	memtune.Apply() // as the weft pair does
	go memtune.ReleaseWhenQuiet(ctx, memtune.Quiet{}, nil)

	var rp *httputil.ReverseProxy
	var p http.Protocols
	srv := &http.Server{Protocols: &p, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second}
	if mode == "stdlib-client" {
		// net/http's Transport with the settings of weft's mesh transport
		// (HTTP/2 only, a pool per server), over crypto/tls's own dialer.
		d := &tls.Dialer{Config: &tls.Config{
			MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
			InsecureSkipVerify: true, VerifyPeerCertificate: verifyChain(roots, x509.ExtKeyUsageServerAuth),
		}}
		var h2 http.Protocols
		h2.SetHTTP2(true)
		rp = proxyTo("https", to, &http.Transport{Protocols: &h2, DisableCompression: true, IdleConnTimeout: 5 * time.Minute,
			DialTLSContext: d.DialContext})
		if h2c {
			p.SetUnencryptedHTTP2(true)
		} else {
			p.SetHTTP1(true)
		}
	} else {
		// net/http's Transport with the settings of weft's app transports,
		// and a plain dialer.
		var app http.Protocols
		if h2c {
			app.SetUnencryptedHTTP2(true)
		} else {
			app.SetHTTP1(true)
		}
		rp = proxyTo("http", to, &http.Transport{Protocols: &app, DialContext: (&net.Dialer{}).DialContext,
			DisableCompression: true, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second})
		p.SetHTTP2(true)
		srv.TLSConfig = &tls.Config{
			MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
			ClientAuth: tls.RequireAnyClientCert, NextProtos: []string{"h2"},
			VerifyPeerCertificate: verifyChain(roots, x509.ExtKeyUsageClientAuth),
		}
	}
	srv.Handler = rp
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Println("ready")
	if mode == "stdlib-server" {
		err = srv.ServeTLS(l, "", "")
	} else {
		err = srv.Serve(l)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// proxyTo is a ReverseProxy sending every request to scheme://host over t
// (ReverseProxy's defaults, as weft's).
func proxyTo(scheme, host string, t http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = scheme, host
		},
		Transport: t,
	}
}

// verifyChain checks the peer's chain against roots for usage (the pair's
// SVIDs name no DNS host, so the name check is skipped and the chain
// checked here, as a SPIFFE verifier does before its ID check).
func verifyChain(roots *x509.CertPool, usage x509.ExtKeyUsage) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("no peer certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, der := range raw {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return err
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
}
