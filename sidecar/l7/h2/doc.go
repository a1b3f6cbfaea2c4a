// Package h2 is weft's own HTTP/2: the server connection (Server) and the
// client (Transport) of the sidecars' L7 path. The server serves the
// pooled mTLS connections between sidecars (ALPN h2) and an h2c app's
// connections to its client sidecar, each request with an http.Handler as
// net/http's HTTP/2 server does; the client sends requests over those
// connections between sidecars and to an h2c app, as an http.RoundTripper
// (see Transport).
//
// Why not net/http's: profiled at 1,000 req/s through the L7 pair
// (sidecar/proxy/bench), net/http's HTTP/2 server is a quarter of the
// server sidecar's CPU. For every request it hands frames between three
// goroutines (the frame reader, the connection's serve loop, the handler)
// and starts a fourth to write the response's HEADERS
// (http2writeResHeaders.staysWithinBuffer is always false), and it writes
// the HEADERS and DATA of a small response in separate flushes. Here the
// connection's one reader goroutine decodes frames and hands the request
// to a worker (a goroutine that ran an earlier handler and waits for the
// next, its stack already grown; at most 64 wait); the handler encodes
// its response's frames itself and writes them with one Write: HEADERS,
// DATA and END_STREAM together for a response that fits the flow-control
// windows.
//
// It is a whole HTTP/2 server for what a sidecar serves — prior-knowledge
// HTTP/2 (the client preface first: ALPN h2 or h2c), no server push, no
// extended CONNECT — checked against RFC 9113's rules for the peer: stream
// states and identifiers, flow control in both directions, SETTINGS,
// header validity (x/net/http2's Framer decodes frames, HPACK and
// CONTINUATION, and bounds the header list), and the floods a peer can
// send: streams beyond MAX_CONCURRENT_STREAMS are refused and a peer that
// keeps opening them is sent away (the rapid-reset attack), and control
// frames are answered by the reader itself, so a peer that does not read
// stops being read.
//
// The client was written for the same reason (session 29, profiled as
// above): net/http's HTTP/2 transport writes each request from a goroutine
// it starts for it, its HEADERS and DATA flushed apart, and hands each
// response from its reader goroutine to the caller's through channels.
// Transport writes a request it has whole (no body, one that arrived
// whole — BufferedBody, which the server's request bodies implement — or
// a small one of declared length) with its HEADERS in one Write from the
// caller's goroutine, from the body's own memory when it keeps it
// (HeldBody: l7's record of a body for retries); its response's DATA
// waits to be read in pooled arrays; its response bodies say what has arrived
// (Buffered), so a relay copying one need not flush what the response's
// end will carry: a gRPC call is one Write each way on every hop.
package h2
