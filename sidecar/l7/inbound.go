package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/sidecar/l7/h1"
	"github.com/weftmesh/weft/sidecar/l7/h2"
)

// Peer is what the server sidecar knows of an inbound connection once its
// mTLS handshake and connection-level checks passed.
type Peer struct {
	// ID is the client's SPIFFE ID, from its verified X.509-SVID.
	ID spiffeid.ID
	// Dst is the connection's original destination: the pod's address
	// and the app's port that the request goes to.
	Dst netip.AddrPort
	// H2C: the app speaks HTTP/2 with prior knowledge on this port (gRPC,
	// h2c); otherwise HTTP/1.1.
	H2C bool
	// Value is what the sidecar attaches to the connection for Authorize
	// (the proxy: its filter chain's HTTP RBAC filters), nil for none.
	Value any
}

// Denied is an Authorize refusal: Policy names what refused the request.
type Denied struct{ Policy string }

func (d *Denied) Error() string { return "denied by " + d.Policy }

// BadRequest is an Authorize refusal of a request that cannot be decided
// (CheckPath): answered 400, or for gRPC INVALID_ARGUMENT.
type BadRequest struct{ Reason string }

func (b *BadRequest) Error() string { return "bad request: " + b.Reason }

// Inbound serves what client sidecars send over mTLS — HTTP/2 (ALPN h2)
// or HTTP/1.1 — and delivers each request to the app in the app's
// protocol, after authorizing it: a refused request gets 403, or for gRPC
// PERMISSION_DENIED, and never reaches the app.
type Inbound struct {
	// Authorize decides a request from peer; nil allows everything. A
	// *BadRequest is answered 400 (gRPC INVALID_ARGUMENT), any other error
	// (a *Denied) 403 "weft: RBAC: access denied" (gRPC PERMISSION_DENIED).
	Authorize func(r *http.Request, peer Peer) error
	// HTTP1 and H2C reach the app: the request's URL host is its address
	// (NewAppH1 and AppH2C make them).
	HTTP1, H2C http.RoundTripper
	Limits     ServerLimits
	Logger     *slog.Logger
	// Metrics counts every request (nil: none), route "inbound|<port>".
	Metrics *Metrics

	once  sync.Once
	relay *relay

	// Both protocols are weft's own servers, not net/http's: HTTP/2
	// connections (ALPN h2: every L7 client sidecar's) package h2's — a
	// quarter of the server sidecar's CPU was net/http's HTTP/2 server
	// (h2's doc) —, HTTP/1.1 ones (client sidecars on the L4 path)
	// package h1's, as the client sidecar serves its app's.
	h1     *h1.Server
	h2     *h2Serving
	marker *http.Server // http.ServerContextKey's value: see ConnServer.marker
}

// inConn is an inbound connection's peer, with what its requests use
// made once for all of them: the route label of its metrics and its
// destination's address as a URL host.
type inConn struct {
	peer  Peer
	route string // "inbound|<port>"
	dst   string // peer.Dst.String()
}

type peerKey struct{}

// inConnOf is the connection of the request with ctx, or nil.
func inConnOf(ctx context.Context) *inConn {
	c, _ := ctx.Value(peerKey{}).(*inConn)
	return c
}

func (in *Inbound) init() {
	in.relay = &relay{
		rewrite: func(_, out *http.Request) {
			u := *out.URL
			u.Scheme, u.Host = "http", inConnOf(out.Context()).dst
			out.URL = &u
		},
		// AppH1, net/http's transport and weft's HTTP/2 client report
		// interim responses through the request's client trace.
		trace1xx: true,
		roundTrip: func(r *http.Request, _ func(int, textproto.MIMEHeader) error) (*http.Response, error) {
			app := in.HTTP1
			if inConnOf(r.Context()).peer.H2C {
				app = in.H2C
			} else if err := wholeSmallBody(r); err != nil {
				return nil, err
			}
			return app.RoundTrip(r)
		},
		fail: func(w http.ResponseWriter, r *http.Request, err error) {
			if in.Logger != nil {
				in.Logger.Debug("app request failed", "err", err)
			}
			status, code := http.StatusBadGateway, grpcUnavailableCode
			if errors.Is(err, context.DeadlineExceeded) {
				status, code = http.StatusGatewayTimeout, grpcDeadlineExceeded
			}
			answer(w, r, status, "app unreachable", code)
		},
		logger: in.Logger,
	}
	in.h1 = &h1.Server{
		Handler:        http.HandlerFunc(in.serve),
		HeaderTimeout:  in.Limits.HeaderTimeout,
		IdleTimeout:    in.Limits.IdleTimeout,
		MaxHeaderBytes: in.Limits.MaxHeaderBytes,
	}
	if in.Logger != nil {
		in.h1.ErrorLog = func(c net.Conn, err error) { in.Logger.Debug("http/1.1 connection", "err", err) }
	}
	in.marker = &http.Server{}
	in.h2 = newH2Serving(http.HandlerFunc(in.serve), in.Limits, in.Logger)
}

// ServeConn serves c, an established mTLS connection from peer, and
// returns when the server is done with it.
func (in *Inbound) ServeConn(c *tls.Conn, peer Peer) error {
	in.once.Do(in.init)
	ic := &inConn{peer: peer, route: "inbound|" + strconv.Itoa(int(peer.Dst.Port())), dst: peer.Dst.String()}
	// http.ServerContextKey: the relay aborts a response it cannot finish
	// (panic(http.ErrAbortHandler), the stream reset) only under a server.
	ctx := context.WithValue(context.WithValue(context.Background(), http.ServerContextKey, in.marker), peerKey{}, ic)
	if c.ConnectionState().NegotiatedProtocol == "h2" {
		return in.h2.serve(ctx, c)
	}
	if err := in.h1.ServeConn(ctx, c); err != nil {
		return errServerClosed
	}
	return nil
}

// Shutdown stops accepting connections and lets the open ones finish
// (HTTP/2 GOAWAY), waiting for them until ctx ends; Close cuts the rest.
func (in *Inbound) Shutdown(ctx context.Context) error {
	in.once.Do(in.init)
	return in.h2.shutdownWith(ctx, in.h1)
}

// Close stops serving and closes every connection.
func (in *Inbound) Close() error {
	in.once.Do(in.init)
	in.h2.close()
	return in.h1.Close()
}

func (in *Inbound) serve(w http.ResponseWriter, r *http.Request) {
	ic := inConnOf(r.Context())
	if ic == nil {
		answer(w, r, http.StatusForbidden, "no peer", grpcPermissionDenied)
		return
	}
	in.Metrics.serve("inbound", ic.route, &requestInfo{peer: ic.peer.ID.String()}, w, r, func(w http.ResponseWriter, r *http.Request) {
		in.authorizeAndDeliver(w, r, ic.peer)
	})
}

func (in *Inbound) authorizeAndDeliver(w http.ResponseWriter, r *http.Request, peer Peer) {
	if in.Authorize != nil {
		if err := in.Authorize(r, peer); err != nil {
			var b *BadRequest
			if errors.As(err, &b) {
				answer(w, r, http.StatusBadRequest, "bad request: "+b.Reason, grpcInvalidArgument)
				return
			}
			// Envoy's answer; the policy is the sidecar's to log, not the
			// client's to learn.
			answer(w, r, http.StatusForbidden, "RBAC: access denied", grpcPermissionDenied)
			return
		}
	}
	in.relay.serve(w, r)
}

// MaxWholeBody is the largest request body, its length declared, that
// goes to an HTTP/1.1 app read whole (wholeSmallBody): with its head it
// fits the 4 KiB write buffer of net/http's transport.
const MaxWholeBody = 3 << 10

// wholeSmallBody reads r's body into memory when its length is declared
// and at most MaxWholeBody: net/http's HTTP/1.1 transport writes the head
// and a body it knows is in memory in one system call, where it flushes
// the head alone before copying any other body (two writes, and two reads
// for the app). The body has come or is coming with the request (the
// client sidecar sends a request's DATA right behind its HEADERS), so
// reading it first delays nothing; a request with trailers or a longer
// body streams as before. (A request that asks for 100-continue is
// answered by the sidecar's own server when its body is first read, with
// or without this: as Envoy does by default.) The transport closes the
// body it is given; the stream's own body is the server's to close.
func wholeSmallBody(r *http.Request) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength <= 0 || r.ContentLength > MaxWholeBody || r.Trailer != nil {
		return nil
	}
	b := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, b); err != nil {
		return err
	}
	r.Body = &wholeBody{b: b}
	return nil
}

// wholeBody is a request's body read whole: AppH1 writes its bytes behind
// the head; any other transport reads it.
type wholeBody struct {
	b    []byte
	off  int
	read bool // Read was called: b is no longer all of what is left
}

func (w *wholeBody) Read(p []byte) (int, error) {
	w.read = true
	if w.off >= len(w.b) {
		return 0, io.EOF
	}
	n := copy(p, w.b[w.off:])
	w.off += n
	return n, nil
}

func (w *wholeBody) Close() error { return nil }

// CheckPath refuses (*BadRequest) a request whose path cannot be compared
// with an authorization rule as the app will see it: a path that is not
// absolute (e.g. "*" or an authority), that has a "." or ".." segment or an
// empty one ("//", a trailing "/" aside) once its escapes are decoded (the
// app would resolve them: "/api/../admin" is "/admin" to it), or that
// holds an escaped "/" or "\" (%2F, %5C, any case) or a "\" (an app may
// take either for a separator). Paths that pass are compared decoded, the
// query left out: what a Go or most other apps route on.
func CheckPath(r *http.Request) error {
	p := r.URL.Path
	if r.URL.Opaque != "" || !strings.HasPrefix(p, "/") {
		return &BadRequest{Reason: "the path is not absolute"}
	}
	raw := r.URL.EscapedPath()
	if r.RequestURI != "" { // as sent
		raw, _, _ = strings.Cut(r.RequestURI, "?")
	}
	if l := strings.ToLower(raw); strings.Contains(l, "%2f") || strings.Contains(l, "%5c") || strings.Contains(p, "\\") {
		return &BadRequest{Reason: "an escaped separator in the path"}
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		if s == "." || s == ".." || s == "" && i < len(segs)-1 {
			return &BadRequest{Reason: "a dot or empty segment in the path"}
		}
	}
	return nil
}

// gRPC status codes of the answers.
const (
	grpcInvalidArgument  = 3
	grpcPermissionDenied = 7
)

// AppTransport reaches an HTTP/1.1 app over connections that dial makes
// (the sidecar dials from 127.0.0.6): AppH1's fallback. Responses are
// passed as the app wrote them (no transparent decompression).
func AppTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	var p http.Protocols
	p.SetHTTP1(true)
	return &http.Transport{
		Protocols:             &p,
		DialContext:           dial,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // the route's timeout, on the client side, bounds it
	}
}

// H2Transport is weft's HTTP/2 client (sidecar/l7/h2) as a Cluster's or
// an Inbound's transport: a request the server did not process
// (h2.ErrUnprocessed, and it could not be sent again) is reported as a
// *ConnectError, as a failed dial is: it never reached the server's app,
// so the forwarder may retry it whatever its method.
type H2Transport struct{ h2.Transport }

// RoundTrip sends r (h2.Transport.RoundTrip).
func (t *H2Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.Transport.RoundTrip(r)
	if err != nil && errors.Is(err, h2.ErrUnprocessed) {
		var ce *ConnectError
		if !errors.As(err, &ce) {
			err = &ConnectError{Err: err}
		}
	}
	return resp, err
}

// AppH2C reaches an h2c app (HTTP/2 with prior knowledge: gRPC) over
// connections that dial makes.
func AppH2C(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *H2Transport {
	return &H2Transport{h2.Transport{
		Dial:        func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) },
		IdleTimeout: 90 * time.Second,
	}}
}

// MeshTransport reaches server sidecars: HTTP/2 over the mTLS connections
// that dialTLS makes (handshaken, ALPN h2), one pool per endpoint, a new
// connection when one's concurrent streams are used up. A failed dial is
// reported as a *ConnectError, so the forwarder may retry it.
func MeshTransport(dialTLS func(ctx context.Context, network, addr string) (*tls.Conn, error)) *H2Transport {
	return &H2Transport{h2.Transport{
		IdleTimeout: 5 * time.Minute,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := dialTLS(ctx, "tcp", addr)
			if err != nil {
				var ce *ConnectError
				if !errors.As(err, &ce) {
					err = &ConnectError{Err: err}
				}
				return nil, err
			}
			if c.ConnectionState().NegotiatedProtocol != "h2" {
				c.Close()
				return nil, &ConnectError{Err: errors.New("l7: the server sidecar did not negotiate h2")}
			}
			return c, nil
		},
	}}
}
