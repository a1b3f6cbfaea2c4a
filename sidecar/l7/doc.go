// Package l7 forwards HTTP requests from a client sidecar to the server
// sidecars of a service, one request at a time: the HTTP-aware data plane
// of docs/l7.md.
//
// A [Route] says what a request gets: its timeout, its retry policy and
// the clusters it is split over by weight. A [Cluster] is one service
// port's endpoints behind a [balance.Balancer] and the transport that
// reaches them (in the sidecar: HTTP/2 over the mesh's mTLS, pooled per
// endpoint). [Forwarder] is the http.RoundTripper that applies a route to
// a request: it picks a cluster by weight and an endpoint by the balancer
// for every try, bounds the whole request by the route's timeout and each
// try by the per-try timeout, and retries what is safe to retry within the
// cluster's retry budget, avoiding the endpoints already tried.
//
// A route may also change what it forwards and what comes back, as Envoy's
// router does (rewrite.go): a [HeaderMutation] of the request before it is
// forwarded and of every response the app gets for it, a [PathRewrite] and
// a Host rewrite; or it answers every request with a [Redirect] itself,
// forwarding nothing. These are what the Gateway API's HTTPRoute and
// GRPCRoute filters translate into.
//
// What is safe to retry: a try that never reached an endpoint (the
// connection failed) always; a try that failed after the request may have
// reached the app (a reset, a 5xx, a per-try timeout) only when the method
// is idempotent or the route allows it; a gRPC UNAVAILABLE when the route
// asks for it. Never once a response has been handed to the caller. A
// request body is kept for a retry while it is at most [RetryBodyLimit]
// bytes, as it streams (a streaming request is never held back); a larger
// body is not retried, nor is a request with trailers (they come after its
// body, in a map every try would share).
//
// A request that switches protocols (HTTP/1.1 Upgrade: WebSocket) cannot
// ride the pooled HTTP/2 connections: [Handler] routes and balances it as
// any request, sends it on a connection of its own ([Cluster].DialTunnel)
// and, once the endpoint answers 101, hijacks the app's connection and
// copies bytes both ways until either side closes; any other answer is
// delivered as a response (upgrade.go).
//
// HTTP/2 is served by the package's own server (sidecar/l7/h2): client
// sidecars' connections to [Inbound] (ALPN h2) and an h2c app's
// connections to [ConnServer] (ServeH2CWith). An app's HTTP/1.1
// connections to [ConnServer], and [Inbound]'s HTTP/1.1 over mTLS (client
// sidecars of the L4 path), are served by weft's own HTTP/1.1 server
// (sidecar/l7/h1: net/http's parser, its own connection loop and response
// writer, request bodies that say what has arrived).
//
// On the server side, [Inbound] serves what client sidecars send over
// mTLS (HTTP/2, or HTTP/1.1) and delivers each request to the app in the
// protocol its port declares (HTTP/1.1, or h2c for gRPC), after an
// Authorize hook (L7 AuthorizationPolicy) allowed it; a body of declared
// length up to [MaxWholeBody] goes to an HTTP/1.1 app in one write with
// its head. [AppH1] carries such requests, and those without a body, to an
// HTTP/1.1 app in the request's own goroutine, writing what net/http's
// transport writes; [AppTransport] (net/http's) carries the rest. HTTP/2
// is weft's own client (sidecar/l7/h2's Transport, as [H2Transport]):
// [MeshTransport] carries requests between sidecars, [AppH2C] every
// request to an h2c app. None adds to or takes from the exchange (no
// compression, no forwarding headers).
// Both sides pass requests on and responses back through the package's
// relay (relay.go): what httputil.ReverseProxy does in its Rewrite mode
// (hop-by-hop fields removed, interim responses and trailers passed on,
// streamed responses flushed), with less copying.
//
// The package dials nothing itself (the sidecar passes its mTLS and app
// dialers) and reads time only through the standard library's timers and
// contexts; the sidecar wires it to the configuration it receives over
// xDS. It may import sidecar/balance, internal/metrics (its golden
// metrics), api/admin (their names, which weftctl reads), go-spiffe,
// golang.org/x/net/http/httpguts (net/http's own field and host checks,
// which AppH1 applies as net/http's transport does; gRPC links it already),
// its own sidecar/l7/h2 (which frames with golang.org/x/net/http2) and the
// standard library.
package l7
