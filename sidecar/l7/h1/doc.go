// Package h1 is weft's HTTP/1.1 server: the client sidecar serves its
// app's HTTP/1.1 connections with it (sidecar/l7's ConnServer), as it
// serves HTTP/2 ones with package h2.
//
// Why not net/http's server: a proxy's request costs little besides its
// system calls, and net/http's server added a third of a client sidecar's
// CPU per request on the L7 path — a read goroutine started and stopped
// for every request (a read deadline in the past to end it), a context
// and its cancel goroutine, a response split over two buffers, and a
// request body that cannot tell whether it has arrived whole (so the
// HTTP/2 client read it from a goroutine of its own to send it with its
// HEADERS). This server reads a request with net/http's own parser
// (http.ReadRequest: the request line, header fields, Content-Length and
// Transfer-Encoding, their smuggling checks) and then checks what
// net/http's server checks on top (Host, field names and values, Expect,
// the header size), serves it on the connection's goroutine, and writes
// the response — head, body and the chunked encoding's end, or its
// trailers — in one Write when the handler returns with it whole.
//
// What the handler gets is what net/http's server gives: an
// http.ResponseWriter that is an http.Flusher and an http.Hijacker
// (http.NewResponseController works), interim responses with
// WriteHeader(1xx), trailers (announced in Trailer, or http.TrailerPrefix),
// panic(http.ErrAbortHandler) to cut a response, and a request whose
// context ends when the handler returns. Request bodies of a declared
// length say what they hold (Buffered), as h2's do.
//
// Deliberate differences from net/http's server:
//   - No Content-Type sniffing: a response without one is sent without
//     one (a proxy passes what the endpoint said).
//   - A response the handler wrote whole, up to 16 KiB, gets a
//     Content-Length; a longer or flushed one is chunked (net/http: 2 KiB).
//   - A request body the handler left unread is discarded when all of it
//     has arrived already; otherwise the connection closes after the
//     response (net/http reads up to 256 KiB more of it first).
//   - A Write past the declared Content-Length fails and sends nothing;
//     the response is what was written within it (net/http's sends the
//     head alone and closes the connection).
//   - An HTTP/1.1 request with an empty Host is refused (http.ReadRequest
//     does not say whether the field was there); net/http serves it.
//   - An HTTP/1.1 request whose target is in absolute form
//     ("GET http://web.demo/ HTTP/1.1") is served without a Host field
//     (net/http refuses it: its server reads the fields before
//     http.ReadRequest drops the Host), its authority the target's, as
//     RFC 9112 §3.2.2 has a proxy take it whatever the Host says; the
//     server sidecar sends the app the Host field the authority gives.
//   - A request whose handler runs for longer than watchAfter has its
//     connection watched for the client going away (its context then
//     ends) — once its body was read to its end, as a proxy reads it; a
//     quicker one is never watched (net/http starts a read goroutine for
//     every request). As with net/http's, a client that pipelined its next
//     request and then closed the connection is not noticed until the
//     response is written (net/http's background read stops at the
//     pipelined byte: a read that sees the next request cannot see the
//     close behind it).
package h1
