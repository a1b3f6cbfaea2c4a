// Command testapp is the workload of weft's end-to-end tests (image
// weft/testapp). It is an ordinary app: it knows nothing of weft beyond the
// SPIFFE Workload API socket that the pod gives it.
//
//	testapp svid            fetch the pod's X.509-SVID from the Workload API, print it, keep watching
//	testapp serve -addr :8080 [-tls]
//	                        HTTP server: logs every request body line, answers "hello from <pod>";
//	                        -tls serves HTTPS with a fresh self-signed certificate (an "external" service)
//	testapp get URL [-body S] [-n N] [-k] [-hold D] [-connect HOST:PORT]
//	                        HTTP client: N requests, prints status and body, exit 1 on failure;
//	                        -hold keeps the (keep-alive) connection open D after the last answer;
//	                        -connect dials HOST:PORT whatever the URL's host (which still makes the
//	                        SNI and Host): what an app fronting a name onto another address does
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testapp svid|serve|get ...")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch os.Args[1] {
	case "svid":
		err = svid(ctx)
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "get":
		err = get(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}

type watcher struct{}

func (watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	s := c.DefaultSVID()
	fmt.Printf("SVID %s serial %s notAfter %s\n", s.ID, s.Certificates[0].SerialNumber.Text(16), s.Certificates[0].NotAfter.Format(time.RFC3339))
}

func (watcher) OnX509ContextWatchError(err error) {
	fmt.Fprintln(os.Stderr, "watch error:", err)
}

// svid watches the Workload API at SPIFFE_ENDPOINT_SOCKET until ctx ends.
func svid(ctx context.Context) error {
	client, err := workloadapi.New(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	err = client.WatchX509Context(ctx, watcher{})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen address")
	useTLS := fs.Bool("tls", false, "serve HTTPS with a self-signed certificate")
	name := fs.String("name", os.Getenv("POD_NAME"), "name in the answer")
	_ = fs.Parse(args)
	pod := *name
	srv := &http.Server{Addr: *addr, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		fmt.Printf("request %s %s from %s body=%q\n", r.Method, r.URL.Path, r.RemoteAddr, strings.TrimSpace(string(body)))
		fmt.Fprintf(w, "hello from %s\n", pod)
	})}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Printf("serving on %s (tls %v)\n", *addr, *useTLS)
	var err error
	if *useTLS {
		cert, cerr := selfSigned()
		if cerr != nil {
			return cerr
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		err = srv.ListenAndServeTLS("", "")
	} else {
		err = srv.ListenAndServe()
	}
	if err != http.ErrServerClosed {
		return err
	}
	return nil
}

func get(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	body := fs.String("body", "", "request body (POST when set)")
	n := fs.Int("n", 1, "requests")
	insecure := fs.Bool("k", false, "do not verify the server's certificate")
	hold := fs.Duration("hold", 0, "keep the idle connection open this long after the last answer")
	connect := fs.String("connect", "", "dial this host:port instead of the URL's (SNI and Host stay the URL's)")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return fmt.Errorf("get: want one URL")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: *insecure}} //nolint:gosec // test client, -k
	if *connect != "" {
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, *connect)
		}
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	for i := 0; i < *n; i++ {
		method := http.MethodGet
		if *body != "" {
			method = http.MethodPost
		}
		req, err := http.NewRequestWithContext(ctx, method, fs.Arg(0), strings.NewReader(*body))
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %s\n", resp.StatusCode, strings.TrimSpace(string(b)))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("get: %s", resp.Status)
		}
	}
	if *hold > 0 {
		select {
		case <-time.After(*hold):
		case <-ctx.Done():
		}
	}
	return nil
}

// selfSigned makes a throwaway certificate for any name.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"*"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
