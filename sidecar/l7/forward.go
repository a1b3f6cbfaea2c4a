package l7

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/sidecar/balance"
	"github.com/weftmesh/weft/sidecar/l7/h2"
)

// ConnectError is what a Cluster's Transport returns (wrapped or not) when
// it could not connect to the endpoint: the request never left this
// sidecar, so it is always safe to retry.
type ConnectError struct{ Err error }

func (e *ConnectError) Error() string { return "connect: " + e.Err.Error() }
func (e *ConnectError) Unwrap() error { return e.Err }

// Error is a request that got no response; Status is the one to answer
// the caller with (502, 503 or 504; 499 when the caller is gone).
type Error struct {
	Route  string
	Status int
	Reason string // "no_backend", "no_endpoint", "connect_failure", "reset", "timeout", "client_cancelled"
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("l7: route %q: %s (%d): %v", e.Route, e.Reason, e.Status, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// statusClientClosed is the status recorded for a request whose caller
// went away before its response (nginx's 499; nothing is sent).
const statusClientClosed = 499

var (
	errPerTryTimeout = errors.New("per-try timeout")
	errNoBackend     = errors.New("no backend with a weight")
	// errClusterNotFound: the backend chosen names a cluster that the
	// configuration does not have (a backendRef that did not resolve).
	errClusterNotFound = errors.New("the route's cluster is not in the configuration")
)

// Try is one try of a request, as Forwarder.Observe sees it.
type Try struct {
	Route    string
	Cluster  string
	Endpoint netip.AddrPort
	Peer     string // the endpoint's SPIFFE ID (over mTLS), or ""
	Attempt  int    // 0 for the first try
	Status   int    // the response's status; 0 when Err
	Err      error
	Retry    bool // another try follows this one
}

// Forwarder applies routes to requests. The zero value is ready.
type Forwarder struct {
	// Rand returns a uniform integer in [0, n) for weighted splits (nil:
	// math/rand/v2).
	Rand func(n int) int
	// Observe, when set, is told of every try (metrics, logs).
	Observe func(Try)
}

// kind is how a try ended.
type kind int

const (
	answered kind = iota
	connectFailed
	reset
	timedOut // the route's timeout or the caller: never retried
)

// Forward sends req as route says and returns the response the caller
// should get, or an *Error. The caller must close the response's body; the
// route's timeout runs until then. req.Body is closed in every case.
func (f *Forwarder) Forward(route *Route, req *http.Request) (*http.Response, error) {
	return f.forward(route, req, nil)
}

// forward is Forward, got1xx (when set) told of every interim response
// through the tries' client trace: one trace per try, not two composed.
func (f *Forwarder) forward(route *Route, req *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	fail := func(status int, reason string, err error) (*http.Response, error) {
		return nil, &Error{Route: route.Name, Status: status, Reason: reason, Err: err}
	}
	fw := &forwarding{}
	if req.Body != nil && req.Body != http.NoBody {
		fw.body = newReplayBody(req.Body, RetryBodyLimit)
	}
	body := fw.body
	c, missing := f.pickBackend(route)
	switch {
	case missing:
		fw.closeBody()
		return fail(route.clusterNotFound(), "cluster_not_found", errClusterNotFound)
	case c == nil:
		fw.closeBody()
		return fail(http.StatusServiceUnavailable, "no_backend", errNoBackend)
	}
	fw.c = c
	ctx := req.Context()
	if route.Timeout > 0 {
		ctx, fw.cancel = context.WithTimeout(ctx, route.Timeout)
	}
	c.active.Add(1)
	var info *requestInfo
	if s := servedOf(req.Context()); s != nil {
		info = &s.info
	}
	var tried []netip.AddrPort
	retrying := false
	for attempt := 0; ; attempt++ {
		pick, err := c.pick(req.Context(), tried)
		if err != nil {
			if retrying {
				c.retries.Add(-1)
			}
			fw.finish()
			return fail(http.StatusServiceUnavailable, "no_endpoint", fmt.Errorf("cluster %s: %w", c.Name, err))
		}
		// A try has a context of its own only when it has a timeout of
		// its own: otherwise the route's context is the try's (a try
		// given up for a retry has its response body closed, which ends
		// its stream).
		tryCtx := ctx
		fw.tryCancel = nil
		var timer *time.Timer
		if d := route.Retry.PerTryTimeout; d > 0 {
			var tryCancel context.CancelCauseFunc
			tryCtx, tryCancel = context.WithCancelCause(ctx)
			fw.tryCancel = tryCancel
			timer = time.AfterFunc(d, func() { tryCancel(errPerTryTimeout) })
		}
		// The response time starts when the request has a connection:
		// a handshake is not the endpoint's slowness.
		fw.pick, fw.peer = pick, ""
		trace := &fw.trace
		if attempt > 0 { // an earlier try's stream may still read its own
			trace = new(httptrace.ClientTrace)
		}
		*trace = httptrace.ClientTrace{GotConn: fw.gotConn, Got1xxResponse: got1xx}
		traced := httptrace.WithClientTrace(tryCtx, trace)
		// A shallow copy of the request with its own URL: the transport
		// only reads the header fields (a RoundTripper must not modify
		// the request), so the tries share them rather than each cloning
		// them (req is the reverse proxy's copy of the app's request).
		out := req.WithContext(traced)
		u := *req.URL
		u.Scheme, u.Host = c.Scheme, pick.Host
		out.URL = &u
		out.RequestURI = ""
		out.GetBody = nil
		if body != nil {
			v, ok := body.view()
			if !ok { // cannot happen: a retry checks replayable first
				fw.endTry()
				fw.finish()
				return fail(http.StatusBadGateway, "reset", errors.New("request body cannot be sent again"))
			}
			out.Body = v
		}
		resp, err := c.Transport.RoundTrip(out)
		if timer != nil {
			timer.Stop()
		}
		if retrying {
			c.retries.Add(-1)
			retrying = false
		}
		peer := fw.peer
		k := classify(ctx, tryCtx, err)
		pick.Done(outcome(req.Context(), k, resp))
		again := attempt < route.Retry.Retries &&
			retryable(route.Retry, req.Method, k, resp) &&
			(body == nil || body.replayable()) &&
			len(req.Trailer) == 0 && // its trailers' map is every try's: one try fills it while the next reads it
			ctx.Err() == nil
		if again {
			again = c.allowRetry()
			retrying = again
		}
		if info != nil {
			info.dst, info.peer, info.retries = c.Name, peer, attempt
		}
		if f.Observe != nil {
			t := Try{Route: route.Name, Cluster: c.Name, Endpoint: pick.Addr, Peer: peer, Attempt: attempt, Err: err, Retry: again}
			if resp != nil {
				t.Status = resp.StatusCode
			}
			f.Observe(t)
		}
		if again {
			if resp != nil {
				discard(resp)
			}
			fw.endTry()
			tried = append(tried, pick.Addr)
			continue
		}
		if err != nil {
			fw.endTry()
			fw.finish()
			switch k {
			case connectFailed:
				return fail(http.StatusServiceUnavailable, "connect_failure", err)
			case timedOut:
				if req.Context().Err() != nil {
					// The caller went away (or half-closed: net/http
					// cancels on the client's EOF); nobody reads this.
					return fail(statusClientClosed, "client_cancelled", err)
				}
				return fail(http.StatusGatewayTimeout, "timeout", err)
			}
			if errors.Is(context.Cause(tryCtx), errPerTryTimeout) {
				return fail(http.StatusGatewayTimeout, "timeout", errPerTryTimeout)
			}
			return fail(http.StatusBadGateway, "reset", err)
		}
		fw.resp = finishBody{ReadCloser: resp.Body, fw: fw}
		resp.Body = &fw.resp
		return resp, nil
	}
}

// forwarding is one request's state across its tries, in one allocation:
// what ends it (finish) and the current try's (endTry).
type forwarding struct {
	c         *Cluster
	body      *replayBody
	cancel    context.CancelFunc      // the route's timeout; nil: none
	tryCancel context.CancelCauseFunc // the try's own timeout; nil: none
	pick      *balance.Request        // the current try's
	peer      string                  // the current try's server, once it has a connection
	trace     httptrace.ClientTrace   // the first try's
	resp      finishBody
}

// gotConn is the try's httptrace GotConn: its response time starts, and
// its server is known.
func (fw *forwarding) gotConn(i httptrace.GotConnInfo) {
	fw.pick.Sent()
	fw.peer = fw.c.peerID(i.Conn)
}

func (fw *forwarding) closeBody() {
	if fw.body != nil {
		fw.body.Close()
	}
}

// endTry ends the current try's own context, if it has one.
func (fw *forwarding) endTry() {
	if fw.tryCancel != nil {
		fw.tryCancel(nil)
	}
}

// finish ends the request: its timeout, the cluster's count, its body.
func (fw *forwarding) finish() {
	if fw.cancel != nil {
		fw.cancel()
	}
	fw.c.active.Add(-1)
	fw.closeBody()
}

// peerID is the SPIFFE ID of an mTLS connection's server, or "": the
// cluster keeps the last connection's, so that requests on one pooled
// connection parse its certificate once (a connection's peer never
// changes: TLS 1.3 has no renegotiation). Only a *tls.Conn has a peer,
// and only one is kept: the cluster's transport may report a connection
// of any type, whose values may not even compare (== would panic). A
// connection is kept once handshaken: before, it has no peer yet.
func (c *Cluster) peerID(conn net.Conn) string {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return ""
	}
	if p := c.peer.Load(); p != nil && p.conn == tc {
		return p.id
	}
	st := tc.ConnectionState()
	id := certsID(st.PeerCertificates)
	if st.HandshakeComplete {
		c.peer.Store(&connPeer{conn: tc, id: id})
	}
	return id
}

// connPeer is a connection and its server's SPIFFE ID.
type connPeer struct {
	conn *tls.Conn
	id   string
}

// peerID is the SPIFFE ID of an mTLS connection's server, or "".
func peerID(c net.Conn) string {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ""
	}
	return certsID(tc.ConnectionState().PeerCertificates)
}

// certsID is the SPIFFE ID of a peer's certificate chain, or "".
func certsID(certs []*x509.Certificate) string {
	if len(certs) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return ""
	}
	return id.String()
}

// pickBackend chooses a backend of route by weight: its cluster, or
// missing when the backend chosen is a cluster the configuration does not
// have. Nil and false: no backend can take the request.
func (f *Forwarder) pickBackend(route *Route) (c *Cluster, missing bool) {
	var total uint64
	for _, b := range route.Backends {
		if b.Cluster != nil || b.Missing {
			total += uint64(b.Weight)
		}
	}
	if total == 0 {
		return nil, false
	}
	rnd := f.Rand
	if rnd == nil {
		rnd = rand.IntN
	}
	n := uint64(rnd(int(total)))
	for _, b := range route.Backends {
		if b.Cluster == nil && !b.Missing {
			continue
		}
		if n < uint64(b.Weight) {
			return b.Cluster, b.Missing
		}
		n -= uint64(b.Weight)
	}
	return nil, false // unreachable: n < total
}

// clusterNotFound is the status of a request whose backend is Missing.
func (rt *Route) clusterNotFound() int {
	if rt.ClusterNotFound == 0 {
		return http.StatusServiceUnavailable
	}
	return rt.ClusterNotFound
}

// classify says how a try that returned err ended.
func classify(routeCtx, tryCtx context.Context, err error) kind {
	switch {
	case err == nil:
		return answered
	case routeCtx.Err() != nil:
		return timedOut
	case errors.Is(context.Cause(tryCtx), errPerTryTimeout):
		return reset
	}
	var ce *ConnectError
	if errors.As(err, &ce) {
		return connectFailed
	}
	return reset
}

// outcome is what the balancer learns of a try.
func outcome(callerCtx context.Context, k kind, resp *http.Response) balance.Result {
	switch {
	case k == timedOut && callerCtx.Err() != nil:
		return balance.Cancelled // the caller went away: nothing learned
	case k != answered:
		return balance.Failure
	case resp.StatusCode >= 500, grpcStatus(resp) == grpcUnavailable:
		return balance.Failure
	}
	return balance.Success
}

const grpcUnavailable = "14"

// grpcStatus is the grpc-status of a trailers-only gRPC response (the
// status in the response head), or "".
func grpcStatus(resp *http.Response) string { return resp.Header.Get("Grpc-Status") }

// retryable reports whether policy retries a try of method that ended so.
func retryable(p RetryPolicy, method string, k kind, resp *http.Response) bool {
	safe := p.NonIdempotent || idempotent(method)
	switch k {
	case connectFailed:
		return p.On&ConnectFailure != 0
	case reset:
		return p.On&Reset != 0 && safe
	case timedOut:
		return false
	}
	if p.On&Unavailable != 0 && grpcStatus(resp) == grpcUnavailable {
		return true
	}
	if !safe {
		return false
	}
	s := resp.StatusCode
	return p.On&Status5xx != 0 && s >= 500 ||
		p.On&GatewayError != 0 && (s == 502 || s == 503 || s == 504) ||
		p.On&RetriableStatusCodes != 0 && slices.Contains(p.StatusCodes, s)
}

// discard ends a response that is not kept. Over HTTP/2 (between
// sidecars) closing it resets its stream at once, which costs the
// connection nothing; an HTTP/1 response is read a little first (4 KiB at
// most), so its connection can be reused — a body that comes slowly holds
// the retry back, which HTTP/2 spares it.
func discard(resp *http.Response) {
	if resp.ProtoMajor < 2 {
		io.CopyN(io.Discard, resp.Body, 4<<10)
	}
	resp.Body.Close()
}

// finishBody ends the request (its timeout, the cluster's count) when the
// caller closes the response body.
type finishBody struct {
	io.ReadCloser
	once sync.Once
	fw   *forwarding
}

// Buffered passes on the transport's body's (h2.BufferedBody).
func (b *finishBody) Buffered() (int, bool) {
	if bb, ok := b.ReadCloser.(h2.BufferedBody); ok {
		return bb.Buffered()
	}
	return 0, false
}

func (b *finishBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { b.fw.endTry(); b.fw.finish() })
	return err
}
