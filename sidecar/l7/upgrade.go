package l7

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/sidecar/balance"
)

// Requests that switch protocols (RFC 9110 §7.8: WebSocket, and any
// HTTP/1.1 Upgrade). Go's HTTP/2 stack does not carry RFC 8441's extended
// CONNECT both ways, so such a request does not go on the pooled HTTP/2
// connections: it is routed as any request (route, weighted cluster, an
// endpoint from the cluster's balancer), then sent in HTTP/1.1 on a
// connection of its own to the endpoint (Cluster.DialTunnel: between
// sidecars, mTLS without ALPN h2, so the server sidecar takes the port's
// L4 chain, its connection-level authorization, and copies bytes to the
// app). If the endpoint switches (101), the app's connection is hijacked
// and both become one byte tunnel until either side closes (a half-close
// is passed on); any other response is delivered as a response, and the
// app's connection goes on in HTTP/1.1.
//
// The route's timeout (and the caller's going away) bounds the request
// until its response head for a switch, to the end of the response
// otherwise: a tunnel lasts as long as its two ends want. Retries are as
// for other requests (the policy's conditions, the budget, other
// endpoints), while no byte of the response has reached the app and the
// request has no body. The request stays in flight, for the balancer (the
// endpoint carries it) and in weft_sidecar_http_requests_in_flight, as
// long as its tunnel lives; it is counted in weft_sidecar_http_requests_total
// when its response head arrives (class 1xx for a switch), and its latency
// sample is the time to that head, not the tunnel's life.

// aLongTimeAgo is a deadline in the past: it cuts a blocked read or write
// at once.
var aLongTimeAgo = time.Unix(1, 0)

// maxResponseHead bounds the response head of an upgrade.
const maxResponseHead = 64 << 10

// isUpgrade reports whether r asks to switch protocols: HTTP/1.1 with
// Connection: upgrade and an Upgrade header (HTTP/2 has neither).
func isUpgrade(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.ProtoMinor >= 1 && r.Header.Get("Upgrade") != "" && hasToken(r.Header["Connection"], "upgrade")
}

// hasToken reports whether the comma-separated values hold tok (ASCII
// case-insensitively).
func hasToken(values []string, tok string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), tok) {
				return true
			}
		}
	}
	return false
}

// serveUpgrade serves an upgrade request on route, counting it in the
// metrics.
func (h *Handler) serveUpgrade(w http.ResponseWriter, r *http.Request, route *Route) {
	m := h.Metrics
	info := &requestInfo{}
	sw := &statusWriter{ResponseWriter: w}
	start := time.Now()
	recorded := false
	record := func(status int, hdr http.Header) {
		if m != nil && !recorded {
			recorded = true
			m.recordStatus("outbound", route.Name, info, status, hdr, time.Since(start))
		}
	}
	if m != nil {
		g := m.inFlight.With("outbound", route.Name)
		g.Inc()
		defer g.Dec()
	}
	defer func() { record(sw.status, sw.Header()) }() // what was not a switch
	h.upgrade(sw, r, route, info, record)
}

// upgrade does the work of serveUpgrade; switched is called with the 101's
// head once the app's connection is hijacked.
func (h *Handler) upgrade(w http.ResponseWriter, r *http.Request, route *Route, info *requestInfo, switched func(int, http.Header)) {
	fail := func(status int, reason string, err error) {
		h.fail(w, r, &Error{Route: route.Name, Status: status, Reason: reason, Err: err})
	}
	c, missing := h.Forwarder.pickBackend(route)
	switch {
	case missing:
		fail(route.clusterNotFound(), "cluster_not_found", errClusterNotFound)
		return
	case c == nil:
		fail(http.StatusServiceUnavailable, "no_backend", errNoBackend)
		return
	case c.DialTunnel == nil:
		fail(http.StatusBadGateway, "upgrade_unsupported", fmt.Errorf("cluster %s cannot switch protocols", c.Name))
		return
	}
	ctx, cancel := r.Context(), context.CancelFunc(func() {})
	if route.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, route.Timeout)
	}
	defer cancel()
	c.active.Add(1)
	defer c.active.Add(-1)
	// A body (rare in an upgrade) is sent once: no retry after it.
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	var tried []netip.AddrPort
	retrying := false
	endRetry := func() {
		if retrying {
			c.retries.Add(-1)
			retrying = false
		}
	}
	defer endRetry()
	for attempt := 0; ; attempt++ {
		pick, err := c.pick(r.Context(), tried)
		if err != nil {
			fail(http.StatusServiceUnavailable, "no_endpoint", fmt.Errorf("cluster %s: %w", c.Name, err))
			return
		}
		info.dst, info.retries = c.Name, attempt
		t := &tunnelTry{h: h, route: route, c: c, pick: pick, attempt: attempt}
		var (
			up   net.Conn
			resp *http.Response
			head []byte
			br   *bufio.Reader
			stop = func() bool { return true }
		)
		closeUp := func() {
			stop()
			if up != nil {
				up.Close()
			}
		}
		up, err = c.DialTunnel(ctx, pick.Host)
		if err == nil {
			info.peer = peerID(up)
			t.peer = info.peer
			pick.Sent()
			// The route's timeout, and the caller going away, cut the
			// connection while the request waits for its response.
			conn := up
			stop = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
			resp, head, br, err = exchange(up, r)
		} else {
			up = nil
		}
		k := answered
		if err != nil {
			k = classify(ctx, ctx, err)
			closeUp()
		}
		endRetry()
		switching := err == nil && resp.StatusCode == http.StatusSwitchingProtocols
		if res := outcome(r.Context(), k, resp); switching {
			pick.Observe(res) // in flight until the tunnel ends
		} else {
			pick.Done(res)
		}
		again := attempt < route.Retry.Retries && retryable(route.Retry, r.Method, k, resp) &&
			(k == connectFailed || !hasBody) && ctx.Err() == nil
		if again {
			again = c.allowRetry()
			retrying = again
		}
		t.observe(resp, err, again)
		if again {
			closeUp()
			tried = append(tried, pick.Addr)
			continue
		}
		if err != nil {
			switch {
			case r.Context().Err() != nil:
				fail(statusClientClosed, "client_cancelled", err)
			case k == timedOut:
				fail(http.StatusGatewayTimeout, "timeout", err)
			case k == connectFailed:
				fail(http.StatusServiceUnavailable, "connect_failure", err)
			default:
				fail(http.StatusBadGateway, "reset", err)
			}
			return
		}
		if !switching {
			// Refused (or answered): a response like any other, read to
			// its end on the tunnel's connection, which then closes.
			defer closeUp()
			resp, err = http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(head), br)), r)
			if err != nil { // cannot happen: the head parsed once already
				fail(http.StatusBadGateway, "reset", err)
				return
			}
			route.ResponseHeaders.Apply(resp.Header)
			deliver(w, resp)
			return
		}
		defer pick.Done(balance.Success) // learned at the 101 already: ends the count in flight
		if !stop() {
			// The timeout fired as the 101 arrived: it wins.
			up.Close()
			fail(http.StatusGatewayTimeout, "timeout", ctx.Err())
			return
		}
		_ = up.SetDeadline(time.Time{})
		down, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			fail(http.StatusBadGateway, "reset", fmt.Errorf("switching protocols: %w", err))
			return
		}
		if !route.ResponseHeaders.empty() {
			// The 101 as the endpoint wrote it, its header fields edited.
			route.ResponseHeaders.Apply(resp.Header)
			head = responseHead(resp)
		}
		switched(resp.StatusCode, resp.Header)
		_ = down.SetDeadline(time.Time{})
		// The 101 as the endpoint wrote it, what followed it, and what
		// the app sent after its request, before the copies start.
		upBuffered, _ := br.Peek(br.Buffered())
		_, err = down.Write(append(head, upBuffered...))
		if err == nil && brw.Reader.Buffered() > 0 {
			b, _ := brw.Reader.Peek(brw.Reader.Buffered())
			_, err = up.Write(b)
		}
		if err == nil {
			tunnel(down, up)
		}
		down.Close()
		up.Close()
		return
	}
}

// tunnelTry is one try of an upgrade, as Forwarder.Observe sees it.
type tunnelTry struct {
	h       *Handler
	route   *Route
	c       *Cluster
	pick    *balance.Request
	peer    string
	attempt int
}

func (t *tunnelTry) observe(resp *http.Response, err error, retry bool) {
	f := t.h.Forwarder
	if f.Observe == nil {
		return
	}
	tr := Try{Route: t.route.Name, Cluster: t.c.Name, Endpoint: t.pick.Addr, Peer: t.peer, Attempt: t.attempt, Err: err, Retry: retry}
	if resp != nil {
		tr.Status = resp.StatusCode
	}
	f.Observe(tr)
}

// exchange writes r on up in HTTP/1.1 and reads the response's head: the
// first that is not an interim response (1xx other than 101, dropped). It
// returns the head as parsed and as read, and the reader of up holding
// what followed the head.
func exchange(up net.Conn, r *http.Request) (*http.Response, []byte, *bufio.Reader, error) {
	if err := writeRequest(up, r); err != nil {
		return nil, nil, nil, refusedTLS(err)
	}
	br := bufio.NewReader(up)
	for {
		head, err := readHead(br, maxResponseHead)
		if err != nil {
			return nil, nil, nil, refusedTLS(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), r)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("response head: %w", err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, head, br, nil
		}
	}
}

// writeRequest writes r's head as the app sent it (its request-target,
// Host and header fields; the framing of its body; less Expect, which this
// sidecar's server answered already), then its body.
func writeRequest(w io.Writer, r *http.Request) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.Method, r.RequestURI, r.Host)
	hdr := r.Header.Clone()
	for _, k := range []string{"Host", "Expect", "Content-Length", "Transfer-Encoding"} {
		hdr.Del(k)
	}
	chunked := len(r.TransferEncoding) > 0
	switch {
	case chunked:
		hdr.Set("Transfer-Encoding", "chunked")
	case r.ContentLength > 0:
		hdr.Set("Content-Length", fmt.Sprint(r.ContentLength))
	}
	if err := hdr.Write(bw); err != nil {
		return err
	}
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		return err
	}
	if r.Body == nil || r.Body == http.NoBody || !chunked && r.ContentLength <= 0 {
		return nil
	}
	if !chunked {
		_, err := io.Copy(w, r.Body)
		return err
	}
	cw := httputil.NewChunkedWriter(bw)
	if _, err := io.Copy(cw, r.Body); err != nil {
		return err
	}
	cw.Close()
	if err := r.Trailer.Write(bw); err != nil {
		return err
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}

// responseHead writes the head of resp (a 101) in HTTP/1.1.
func responseHead(resp *http.Response) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %s\r\n", resp.Status)
	resp.Header.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// refusedTLS makes a TLS alert from the server a connect failure: with
// TLS 1.3 the client's handshake ends before the server has checked the
// client's certificate, so a server sidecar that refuses the connection
// (its RBAC denies this workload) says so on the first read. Nothing
// reached its app.
func refusedTLS(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" {
		return &ConnectError{Err: fmt.Errorf("the server refused the connection: %w", err)}
	}
	return err
}

var errHeadTooLarge = errors.New("response head too large")

// readHead reads a response head up to its empty line, at most limit
// bytes.
func readHead(br *bufio.Reader, limit int) ([]byte, error) {
	var head []byte
	line := 0 // where the current line starts in head
	for {
		b, err := br.ReadSlice('\n')
		head = append(head, b...)
		if len(head) > limit {
			return nil, errHeadTooLarge
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(head) > 0:
			return nil, io.ErrUnexpectedEOF
		case err != nil:
			return nil, err
		}
		if l := string(head[line:]); l == "\r\n" || l == "\n" {
			return head, nil
		}
		line = len(head)
	}
}

// dropConnectionFields removes from h the fields its Connection names
// (RFC 9110 §7.6.1), all but keep ("": none kept).
func dropConnectionFields(h http.Header, keep string) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" && !strings.EqualFold(f, keep) {
				h.Del(f)
			}
		}
	}
}

// deliver writes resp, an upgrade's answer that is not a switch, to w as
// the endpoint gave it: status, end-to-end header fields, body (flushed as
// it comes) and trailers. A body cut short aborts the app's connection.
func deliver(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	h := resp.Header
	dropHopFields(h) // as the relay drops a response's (relay.go)
	out := w.Header()
	for k, vv := range h {
		out[k] = vv
	}
	for k := range resp.Trailer {
		out.Add("Trailer", k)
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(http.ErrAbortHandler)
		}
	}
	for k, vv := range resp.Trailer {
		out[http.TrailerPrefix+k] = vv
	}
}

// tunnel copies bytes both ways between the app's connection and the
// endpoint's until both directions have ended, as the L4 path's pipe
// does: a side's end of stream shuts the other side's sending half (TCP
// FIN, TLS close_notify) and the opposite direction carries on; an error
// closes both.
func tunnel(down, up net.Conn) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			down.Close()
			up.Close()
		})
	}
	half := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		if _, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, buf); err != nil || closeWrite(dst) != nil {
			closeBoth()
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { half(up, down) })
	half(down, up)
	wg.Wait()
	closeBoth()
}

// onlyWriter and onlyReader hide ReadFrom and WriteTo, so that the copy
// goes through Read and Write (a TCP connection's ReadFrom would skip the
// wrapping connections' accounting).
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

// closeWrite shuts c's sending half: c's own CloseWrite (a TLS
// connection's sends close_notify), or that of the connection it wraps
// (NetConn).
func closeWrite(c net.Conn) error {
	for {
		switch x := c.(type) {
		case interface{ CloseWrite() error }:
			return x.CloseWrite()
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return fmt.Errorf("l7: %T cannot be half-closed", c)
		}
	}
}
