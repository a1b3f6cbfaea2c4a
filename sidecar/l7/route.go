package l7

import (
	"context"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/sidecar/balance"
)

// RetryOn is the set of conditions a route retries on (Envoy's retry_on).
type RetryOn uint8

const (
	// ConnectFailure: the try could not connect to the endpoint (the
	// request never left this sidecar).
	ConnectFailure RetryOn = 1 << iota
	// Reset: the connection or stream failed after the request was sent,
	// before a response arrived; also a per-try timeout.
	Reset
	// Status5xx: any 5xx response.
	Status5xx
	// GatewayError: 502, 503 or 504.
	GatewayError
	// RetriableStatusCodes: the codes of RetryPolicy.StatusCodes.
	RetriableStatusCodes
	// Unavailable: gRPC status 14 in a trailers-only response.
	Unavailable
)

// RetryPolicy is a route's retry_policy.
type RetryPolicy struct {
	// Retries after the first try (num_retries); 0 disables retries.
	Retries int
	// PerTryTimeout bounds each try until its response head; 0: only the
	// route's timeout applies.
	PerTryTimeout time.Duration
	On            RetryOn
	StatusCodes   []int
	// NonIdempotent lets Reset, 5xx and status-code retries apply to
	// methods that are not idempotent (POST, PATCH, CONNECT).
	NonIdempotent bool
}

// Route is what one request gets.
type Route struct {
	// Name labels the route in metrics and errors.
	Name string
	// Timeout bounds the whole request, from the first try to the end of
	// the response body; 0 means none (streaming routes).
	Timeout time.Duration
	Retry   RetryPolicy
	// Backends split the route's requests by weight (weighted_clusters);
	// a backend of weight 0 gets none.
	Backends []Backend
	// ClusterNotFound is the status of the requests whose share goes to
	// a Missing backend (Envoy's cluster_not_found_response_code): 503,
	// 404 or 500; 0 means 503.
	ClusterNotFound int

	// Redirect, when set, is the answer to every request of the route:
	// nothing is forwarded (Backends, Timeout, Retry, RequestHeaders and
	// the rewrites are unused).
	Redirect *Redirect
	// RequestHeaders edits a request's header fields before it is
	// forwarded (it is routed on them as the app sent them).
	RequestHeaders HeaderMutation
	// ResponseHeaders edits the header fields of each response before
	// the app gets it: the endpoint's, and the sidecar's own (its errors,
	// a redirect).
	ResponseHeaders HeaderMutation
	// PathRewrite rewrites the path of a forwarded request; nil: none.
	PathRewrite *PathRewrite
	// HostRewrite replaces the Host (:authority) of a forwarded request;
	// "": the app's.
	HostRewrite string
}

// Backend is a cluster of a route and its weight.
type Backend struct {
	Cluster *Cluster
	Weight  uint32
	// Missing: the route names a cluster the configuration does not have
	// (Envoy's "cluster not found"); the requests its weight takes are
	// answered Route.ClusterNotFound. A backend with neither Cluster nor
	// Missing (a cluster this engine cannot send requests to) takes no
	// share: the others split its weight.
	Missing bool
}

// Budget is a cluster's retry budget (Envoy's retry_budget): retries in
// flight may be at most Percent of the requests in flight, and at least
// MinConcurrent.
type Budget struct {
	Percent       float64
	MinConcurrent int
}

// DefaultBudget is Envoy's: 20 % of active requests, at least 3.
var DefaultBudget = Budget{Percent: 20, MinConcurrent: 3}

// Cluster is one service port's endpoints.
type Cluster struct {
	Name     string
	Balancer *balance.Balancer
	// Transport sends a request to the endpoint that its URL's host names
	// (the request's URL host is set to the endpoint's address).
	Transport http.RoundTripper
	// Scheme of the requests to the endpoints: "https" between sidecars
	// (the Transport's TLS), "http" for h2c.
	Scheme string
	Budget Budget
	// DialTunnel connects to an endpoint (its address) for a request that
	// asks to switch protocols (upgrade.go): a connection of its own, on
	// which the request goes in HTTP/1.1 and which becomes a byte tunnel
	// once the endpoint switches. Between sidecars it is mTLS without
	// ALPN h2, which the server sidecar takes on the port's L4 chain. A
	// failure to connect is a *ConnectError. Nil: such requests are
	// answered 502.
	DialTunnel func(ctx context.Context, addr string) (net.Conn, error)

	active  atomic.Int64 // requests in flight
	retries atomic.Int64 // retries in flight
	peer    atomic.Pointer[connPeer]
}

// allowRetry takes a retry slot of the budget, or says no.
func (c *Cluster) allowRetry() bool {
	b := c.Budget
	if b.Percent == 0 && b.MinConcurrent == 0 {
		b = DefaultBudget
	}
	limit := max(int64(b.MinConcurrent), int64(float64(c.active.Load())*b.Percent/100))
	for {
		n := c.retries.Load()
		if n >= limit {
			return false
		}
		if c.retries.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// idempotent reports whether RFC 9110 makes method idempotent.
func idempotent(method string) bool {
	return slices.Contains([]string{http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete}, method)
}
