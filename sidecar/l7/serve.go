package l7

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/sidecar/l7/h1"
	"github.com/weftmesh/weft/sidecar/l7/h2"
)

// Handler serves the requests of an app's connections: each request goes
// where its route sends it (Forwarder), its header fields, path and Host
// edited as the route says, and the response comes back as the endpoint
// gave it (status, headers, streamed body, trailers), its header fields
// edited as the route says. A route with a redirect is answered by the
// sidecar itself (Redirect). A request that gets no response is answered
// by the sidecar: 404 when no route matches, 502, 503 or 504 by the
// forwarder's *Error; a gRPC request gets HTTP 200 with the gRPC status
// instead (UNAVAILABLE, DEADLINE_EXCEEDED, UNIMPLEMENTED for no route), as
// gRPC clients expect.
type Handler struct {
	// Route finds the route of a request, or nil.
	Route     func(*http.Request) *Route
	Forwarder *Forwarder
	// Endpoint, when set, returns the address a request's connection was
	// made to (its original destination): a request routed to a cluster
	// holding that endpoint goes to it (WithEndpoint). Nil, or an invalid
	// address: requests are balanced.
	Endpoint func(*http.Request) netip.AddrPort
	Logger   *slog.Logger // nil: no logs
	// Metrics counts every request (nil: none).
	Metrics *Metrics

	once  sync.Once
	relay *relay
}

// served is what the Handler attaches to a request it serves, as one
// context value: its route, what the forwarder learns of it for the
// metrics, and the endpoint its connection was addressed to (pinned, when
// valid: as WithEndpoint).
type served struct {
	route  *Route
	info   requestInfo
	pinned netip.AddrPort
}

type servedKey struct{}

// servedOf is the value the Handler attached to ctx, or nil.
func servedOf(ctx context.Context) *served {
	s, _ := ctx.Value(servedKey{}).(*served)
	return s
}

// routeOf is the route of the request with ctx, or nil.
func routeOf(ctx context.Context) *Route {
	if s := servedOf(ctx); s != nil {
		return s.route
	}
	return nil
}

func (h *Handler) init() {
	h.relay = &relay{
		rewrite: func(_, out *http.Request) {
			// The route's edits run here, after the hop-by-hop fields are
			// removed from out (a copy of the app's request): what the
			// route sets is sent whatever the app's Connection names.
			if route := routeOf(out.Context()); route != nil {
				route.RequestHeaders.Apply(out.Header)
			}
		},
		roundTrip: func(out *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
			return h.Forwarder.forward(routeOf(out.Context()), out, got1xx)
		},
		modifyResponse: func(out *http.Request, resp *http.Response) {
			if route := routeOf(out.Context()); route != nil {
				route.ResponseHeaders.Apply(resp.Header)
			}
		},
		fail:   h.fail,
		logger: h.Logger,
	}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.once.Do(h.init)
	// One context value carries the request's route (from here on: its
	// response header mutation applies to the sidecar's own answers
	// too), its metrics' information and its connection's endpoint.
	s := &served{route: h.Route(r)}
	if h.Endpoint != nil {
		s.pinned = h.Endpoint(r)
	}
	if s.route == nil && !s.pinned.IsValid() {
		s = nil
	}
	route, info := (*Route)(nil), &requestInfo{}
	if s != nil {
		r = r.WithContext(context.WithValue(r.Context(), servedKey{}, s))
		route, info = s.route, &s.info
	}
	if route == nil {
		h.Metrics.serve("outbound", "none", info, w, r, func(w http.ResponseWriter, r *http.Request) {
			answer(w, r, http.StatusNotFound, "route not found", grpcUnimplemented)
		})
		return
	}
	switch {
	case route.Redirect != nil:
		h.Metrics.serve("outbound", route.Name, info, w, r, route.redirect)
	case isUpgrade(r):
		h.serveUpgrade(w, route.forwarded(r), route)
	default:
		h.Metrics.serve("outbound", route.Name, info, w, r, func(w http.ResponseWriter, r *http.Request) {
			h.relay.serve(w, route.rewritten(r))
		})
	}
}

// gRPC status codes the sidecar answers with.
const (
	grpcUnknown          = 2 // a 3xx (a redirect) and a 500, as Envoy maps them
	grpcDeadlineExceeded = 4
	grpcUnimplemented    = 12
	grpcUnavailableCode  = 14
)

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var le *Error
	if !errors.As(err, &le) {
		// The relay's own failures (an invalid Upgrade, a 101 unasked).
		le = &Error{Status: http.StatusBadGateway, Reason: "reset", Err: err}
	}
	if h.Logger != nil {
		h.Logger.Debug("request failed", "route", le.Route, "reason", le.Reason, "err", le.Err)
	}
	// gRPC's mapping of HTTP statuses (doc/http-grpc-status-mapping.md).
	code := grpcUnavailableCode
	switch le.Status {
	case http.StatusGatewayTimeout:
		code = grpcDeadlineExceeded
	case http.StatusNotFound:
		code = grpcUnimplemented
	case http.StatusInternalServerError:
		code = grpcUnknown
	}
	if route := routeOf(r.Context()); route != nil {
		route.ResponseHeaders.Apply(w.Header())
	}
	answer(w, r, le.Status, strings.ReplaceAll(le.Reason, "_", " "), code)
}

// answer writes the sidecar's own response: an HTTP status with a one-line
// body, or for gRPC a trailers-only response with the gRPC status.
func answer(w http.ResponseWriter, r *http.Request, status int, reason string, grpcCode int) {
	msg := "weft: " + reason
	if isGRPC(r) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", strconv.Itoa(grpcCode))
		w.Header().Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}

func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return r.ProtoMajor == 2 && (ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;"))
}

// ConnServer serves app connections that the sidecar accepted (and
// captured) with a Handler: HTTP/1.1 (weft's own server, package h1), and
// HTTP/2 with prior knowledge (h2c, gRPC: package h2), told apart by the
// connection's first bytes.
type ConnServer struct {
	h1 *h1.Server
	h2 *h2Serving
	// marker is the value of http.ServerContextKey in requests' contexts:
	// the relay cuts a response it cannot finish (panic(http.ErrAbortHandler))
	// only under a server.
	marker *http.Server
}

// ServerLimits bound what a client may hold (the sidecar's abuse bounds
// applied per request).
type ServerLimits struct {
	// HeaderTimeout bounds the time to read a request's head.
	HeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection without requests.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head (HTTP/1) or header list (HTTP/2).
	MaxHeaderBytes int
}

// h2Serving serves HTTP/2 connections with weft's own server (package h2)
// and keeps the open ones for Shutdown and Close.
type h2Serving struct {
	srv    *h2.Server
	mu     sync.Mutex
	conns  map[*h2.Conn]struct{}
	closed bool
}

func newH2Serving(h http.Handler, lim ServerLimits, logger *slog.Logger) *h2Serving {
	s := &h2Serving{srv: &h2.Server{Handler: h, IdleTimeout: lim.IdleTimeout, PrefaceTimeout: lim.HeaderTimeout}, conns: map[*h2.Conn]struct{}{}}
	if n := lim.MaxHeaderBytes; n > 0 {
		s.srv.MaxHeaderListSize = uint32(min(n+4096, 1<<30)) // as net/http's HTTP/2 server counts it
	}
	if logger != nil {
		s.srv.ErrorLog = func(c net.Conn, err error) { logger.Debug("http2 connection ended", "err", err) }
	}
	return s
}

// serve serves c, whose requests have ctx, until it ends; errServerClosed
// once shutdown or close was called.
func (s *h2Serving) serve(ctx context.Context, c net.Conn) error {
	sc := s.srv.NewConn(ctx, c)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return errServerClosed
	}
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
	_ = sc.Serve() // its errors are the connection's end: logged by ErrorLog
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
	return nil
}

// stop refuses new connections and returns the open ones.
func (s *h2Serving) stop() []*h2.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	conns := make([]*h2.Conn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	return conns
}

// shutdown sends every connection GOAWAY and waits for their streams to
// end, or ctx to; the connections are closed either way.
func (s *h2Serving) shutdown(ctx context.Context) {
	var wg sync.WaitGroup
	for _, sc := range s.stop() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = sc.Shutdown(ctx)
		}()
	}
	wg.Wait()
}

// shutdownWith shuts down srv (the HTTP/1.1 side) and s's connections at
// once, and returns when both are done: srv's error, else ctx's.
func (s *h2Serving) shutdownWith(ctx context.Context, srv interface{ Shutdown(context.Context) error }) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.shutdown(ctx)
	}()
	err := srv.Shutdown(ctx)
	<-done
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// close closes every connection.
func (s *h2Serving) close() {
	for _, sc := range s.stop() {
		sc.Close()
	}
}

// NewConnServer starts serving; Close stops it.
func NewConnServer(h http.Handler, lim ServerLimits, logger *slog.Logger) *ConnServer {
	s := &ConnServer{
		h1: &h1.Server{
			Handler:        h,
			HeaderTimeout:  lim.HeaderTimeout,
			IdleTimeout:    lim.IdleTimeout,
			MaxHeaderBytes: lim.MaxHeaderBytes,
		},
		marker: &http.Server{},
	}
	if logger != nil {
		s.h1.ErrorLog = func(c net.Conn, err error) { logger.Debug("http/1.1 connection", "err", err) }
	}
	s.h2 = newH2Serving(h, lim, logger)
	s.h1.H2C = s.h2.serve
	return s
}

// ServeH2CWith is ServeConnWith for a connection whose first bytes are
// HTTP/2's client preface (h2c, gRPC): served by weft's own HTTP/2 server
// (package h2).
func (s *ConnServer) ServeH2CWith(c net.Conn, v any) error {
	return s.h2.serve(s.connContext(c, v), c)
}

func (s *ConnServer) connContext(c net.Conn, v any) context.Context {
	ctx := context.WithValue(context.Background(), http.ServerContextKey, s.marker)
	if v != nil {
		ctx = context.WithValue(ctx, connValueKey{}, v)
	}
	return context.WithValue(ctx, connKey{}, c)
}

// ServeConn serves c and returns when the server is done with it: the
// client closed it, a timeout or Close ended it, or, once a request of it
// switched protocols, its tunnel ended.
func (s *ConnServer) ServeConn(c net.Conn) error { return s.ServeConnWith(c, nil) }

// ServeConnWith is ServeConn, v being what [ConnValue] returns for the
// requests of c (the sidecar passes the route configuration the
// connection's filter chain names, and its original destination).
func (s *ConnServer) ServeConnWith(c net.Conn, v any) error {
	if err := s.h1.ServeConn(s.connContext(c, v), c); err != nil {
		return errServerClosed
	}
	return nil
}

type connValueKey struct{}

// connKey's value in a request's context is its connection.
type connKey struct{}

// ConnValue returns the value r's connection was served with
// (ServeConnWith), or nil.
func ConnValue(r *http.Request) any { return r.Context().Value(connValueKey{}) }

// Shutdown stops accepting connections, closes the idle ones and asks the
// others to finish (HTTP/2 GOAWAY; HTTP/1.1 closes after the response in
// progress), waiting for them until ctx ends (then it returns ctx's
// error; Close cuts what is left).
func (s *ConnServer) Shutdown(ctx context.Context) error { return s.h2.shutdownWith(ctx, s.h1) }

// Close stops accepting connections and closes the ones being served.
func (s *ConnServer) Close() error {
	s.h2.close()
	return s.h1.Close()
}

var errServerClosed = errors.New("l7: server closed")
