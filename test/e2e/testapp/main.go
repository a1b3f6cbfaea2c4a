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
//	testapp raw -connect HOST:PORT [-hello SNI | -no-sni] [-split N -gap D] [-send S]... [-wait D] [-read D]
//	                        the app as an attacker, choosing every byte: dial, write a TLS ClientHello
//	                        (crypto/tls's, for SNI or without one; -split writes its first N bytes, waits
//	                        -gap, then the rest), then each -send (Go-escaped, "GET / HTTP/1.1\r\n..."),
//	                        -wait apart; print what comes back (bytes other than printable ASCII, \r, \n
//	                        and \t as \xNN) until EOF or -read after the last write. Stderr says when each
//	                        write went ("write 2 (40 bytes) after 153 bytes received") and how it ended:
//	                        "closed after N bytes (EOF)" or "open after N bytes (read timeout 5s)";
//	                        exit 1 when nothing came back
//	testapp udp -to HOST:PORT -send S [-n N] [-wait D]
//	                        UDP client on a connected socket: send S (Go-escaped) N times, then read
//	                        replies for up to -wait, printing each ("reply 1 from ADDR: ..."); exit 1
//	                        printing the error when a send or read fails (an ICMP port unreachable
//	                        reads as "connection refused", a packet netfilter dropped on the way out as
//	                        "operation not permitted") or when nothing came back within -wait; stderr
//	                        says how long it took ("failed after 1.2ms")
//	testapp serve-udp -addr :PORT
//	                        UDP echo server: sends every datagram back to where it came from, and
//	                        prints one line per datagram: `datagram N bytes from ADDR: "..."`
//	testapp lookup NAME     resolve NAME with Go's resolver (/etc/resolv.conf, /etc/hosts); print the
//	                        addresses, one a line; exit 1 when it fails
//	testapp cp-stream -kind ads|als -node POD.NS [-token T | -token-file F] [-addr HOST:PORT]
//	                        the app as an attacker on the control plane, with what the Workload API
//	                        gave it as client certificate (and the token T or F's if given): open ADS as node
//	                        POD.NS, or write one egress event as it on the access-log stream; print
//	                        "accepted: ..." or "refused: <code>: <message>" (exit 1)
//	testapp grpc-serve -addr :9000 [-fail]
//	                        plaintext gRPC health server naming the pod in header x-served-by;
//	                        -fail answers every call UNAVAILABLE
//	testapp grpc-call -addr HOST:PORT [-n N] [-c C] [-timeout D]
//	                        N health checks over one gRPC connection, C at a time; prints
//	                        {"calls":N,"served_by":{"pod":n,...},"errors":{"Code":n},"seconds":s}
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testapp svid|serve|get|raw|udp|serve-udp|lookup|cp-stream|grpc-serve|grpc-call ...")
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
	case "raw":
		err = raw(ctx, os.Args[2:])
	case "udp":
		err = udpClient(ctx, os.Args[2:])
	case "serve-udp":
		err = serveUDP(ctx, os.Args[2:])
	case "lookup":
		err = lookup(ctx, os.Args[2:])
	case "cp-stream":
		err = cpStream(ctx, os.Args[2:])
	case "grpc-serve":
		err = grpcServe(ctx, os.Args[2:])
	case "grpc-call":
		err = grpcCall(ctx, os.Args[2:])
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
	inter := "none"
	if len(s.Certificates) > 1 {
		inter = fmt.Sprintf("%x", sha256.Sum256(s.Certificates[1].Raw))
	}
	fmt.Printf("SVID %s serial %s notAfter %s intermediate %s\n", s.ID, s.Certificates[0].SerialNumber.Text(16), s.Certificates[0].NotAfter.Format(time.RFC3339), inter)
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
		// ?delay=2s: answer that much later (at most a minute), or when
		// the caller goes away.
		if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil && d > 0 {
			t := time.NewTimer(min(d, time.Minute))
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
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
	tokenFile := fs.String("token-file", "", "send the token in this file as Authorization: Bearer")
	var headers [][2]string
	fs.Func("H", `a request header field "Name: value"; repeat for more`, func(s string) error {
		name, value, ok := strings.Cut(s, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("-H %q: want Name: value", s)
		}
		headers = append(headers, [2]string{strings.TrimSpace(name), strings.TrimSpace(value)})
		return nil
	})
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return fmt.Errorf("get: want one URL")
	}
	var token string
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		token = strings.TrimSpace(string(b))
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
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for _, h := range headers {
			req.Header.Add(h[0], h[1])
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

// raw writes the bytes it is told to on one connection and prints what
// comes back: what an app that wants around its sidecar's egress rules
// does.
func raw(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("raw", flag.ExitOnError)
	connect := fs.String("connect", "", "HOST:PORT to dial")
	var sends [][]byte
	fs.Func("send", "bytes to write, Go-escaped; repeat for writes -wait apart", func(s string) error {
		b, err := strconv.Unquote(`"` + s + `"`)
		if err != nil {
			return fmt.Errorf("-send %q: %w", s, err)
		}
		sends = append(sends, []byte(b))
		return nil
	})
	sni := fs.String("hello", "", "first write a TLS ClientHello with this server_name")
	noSNI := fs.Bool("no-sni", false, "first write a TLS ClientHello without server_name")
	split := fs.Int("split", 0, "write the ClientHello's first N bytes, then wait -gap, then the rest")
	gap := fs.Duration("gap", 0, "the pause of -split")
	wait := fs.Duration("wait", time.Second, "pause between writes")
	readFor := fs.Duration("read", 5*time.Second, "after the last write, read until EOF or this long")
	_ = fs.Parse(args)
	if *connect == "" || fs.NArg() != 0 {
		return errors.New("raw: want -connect HOST:PORT and flags only")
	}
	type write struct {
		b     []byte
		pause time.Duration // before it
	}
	var writes []write
	if *sni != "" || *noSNI {
		hello, err := clientHello(*sni)
		if err != nil {
			return err
		}
		if *split > 0 && *split < len(hello) {
			writes = append(writes, write{b: hello[:*split]}, write{b: hello[*split:], pause: *gap})
		} else {
			writes = append(writes, write{b: hello})
		}
	}
	for _, b := range sends {
		w := write{b: b}
		if len(writes) > 0 {
			w.pause = *wait
		}
		writes = append(writes, w)
	}

	var dialer net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, err := dialer.DialContext(dctx, "tcp", *connect)
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()

	// What comes back is printed as it comes, while writing.
	var got atomic.Int64
	ended := make(chan error, 1)
	go func() {
		b := make([]byte, 32<<10)
		for {
			n, err := c.Read(b)
			if n > 0 {
				got.Add(int64(n))
				os.Stdout.WriteString(printable(b[:n]))
			}
			if err != nil {
				ended <- err
				return
			}
		}
	}()
write:
	for i, w := range writes {
		select {
		case <-time.After(w.pause):
		case err := <-ended:
			ended <- err
			fmt.Fprintf(os.Stderr, "testapp raw: the connection ended before write %d\n", i+1)
			break write
		}
		fmt.Fprintf(os.Stderr, "testapp raw: write %d (%d bytes) after %d bytes received\n", i+1, len(w.b), got.Load())
		if _, err := c.Write(w.b); err != nil {
			fmt.Fprintf(os.Stderr, "testapp raw: write %d: %v\n", i+1, err)
			break
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(*readFor))
	err = <-ended
	n := got.Load()
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		fmt.Fprintf(os.Stderr, "testapp raw: open after %d bytes (read timeout %v)\n", n, *readFor)
		if n == 0 {
			return fmt.Errorf("raw: nothing received within %v", *readFor)
		}
		return nil
	case errors.Is(err, io.EOF):
		err = errors.New("EOF")
	}
	fmt.Fprintf(os.Stderr, "testapp raw: closed after %d bytes (%v)\n", n, err)
	if n == 0 {
		return fmt.Errorf("raw: closed after 0 bytes (%v)", err)
	}
	return nil
}

// udpClient sends datagrams on a connected UDP socket and prints what
// comes back: what a QUIC client's first packets look like to the
// network, without QUIC.
func udpClient(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("udp", flag.ExitOnError)
	to := fs.String("to", "", "HOST:PORT to send to")
	send := fs.String("send", "", "datagram payload, Go-escaped")
	n := fs.Int("n", 1, "datagrams to send")
	wait := fs.Duration("wait", 5*time.Second, "after the last send, wait this long for replies")
	_ = fs.Parse(args)
	if *to == "" || *n < 1 || fs.NArg() != 0 {
		return errors.New("udp: want -to HOST:PORT, -n >= 1 and flags only")
	}
	payload, err := strconv.Unquote(`"` + *send + `"`)
	if err != nil {
		return fmt.Errorf("udp: -send %q: %w", *send, err)
	}
	start := time.Now()
	failed := func(err error) error {
		fmt.Fprintf(os.Stderr, "testapp udp: failed after %v\n", time.Since(start))
		return err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", *to)
	if err != nil {
		return failed(fmt.Errorf("udp: %w", err))
	}
	defer c.Close()
	for i := 1; i <= *n; i++ {
		if _, err := c.Write([]byte(payload)); err != nil {
			return failed(fmt.Errorf("udp: send %d: %w", i, err))
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(*wait))
	b := make([]byte, 64<<10)
	got := 0
	for got < *n {
		k, err := c.Read(b)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && got > 0 {
				break
			}
			return failed(fmt.Errorf("udp: read after %d replies: %w", got, err))
		}
		got++
		fmt.Printf("reply %d from %s: %s\n", got, c.RemoteAddr(), printable(b[:k]))
	}
	fmt.Fprintf(os.Stderr, "testapp udp: %d of %d datagrams answered after %v\n", got, *n, time.Since(start))
	return nil
}

// serveUDP echoes every datagram to its sender, printing one line per
// datagram, until ctx ends.
func serveUDP(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve-udp", flag.ExitOnError)
	addr := fs.String("addr", ":8443", "listen address")
	_ = fs.Parse(args)
	pc, err := net.ListenPacket("udp", *addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	fmt.Printf("serving udp on %s\n", pc.LocalAddr())
	b := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(b)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Printf("datagram %d bytes from %s: \"%s\"\n", n, from, printable(b[:n]))
		if _, err := pc.WriteTo(b[:n], from); err != nil {
			fmt.Fprintf(os.Stderr, "serve-udp: echo to %s: %v\n", from, err)
		}
	}
}

// lookup resolves a name as the app would, with Go's own resolver.
func lookup(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New("lookup: want one NAME")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, args[0])
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Println(a)
	}
	return nil
}

// clientHello is the first record crypto/tls's client sends for
// server_name sni (none when sni is empty).
func clientHello(sni string) ([]byte, error) {
	app, capture := net.Pipe()
	defer capture.Close()
	go func() {
		//nolint:gosec // only the ClientHello is wanted
		_ = tls.Client(app, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
		app.Close()
	}()
	_ = capture.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(capture, hdr); err != nil {
		return nil, fmt.Errorf("raw: ClientHello: %w", err)
	}
	msg := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(capture, msg); err != nil {
		return nil, fmt.Errorf("raw: ClientHello: %w", err)
	}
	return append(hdr, msg...), nil
}

// printable keeps text as it is and shows other bytes as \xNN.
func printable(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f || c == '\r' || c == '\n' || c == '\t' {
			s.WriteByte(c)
		} else {
			fmt.Fprintf(&s, `\x%02x`, c)
		}
	}
	return s.String()
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
