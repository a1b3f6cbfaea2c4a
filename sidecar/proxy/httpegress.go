package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/sidecar/egress"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Plaintext HTTP/1 egress is decided request by request (README, "Egress
// against a hostile app"): on an HTTP chain every request of a keep-alive
// or pipelined connection is routed by its own Host, checked against the
// destination address like the first, and audited on its own. A denied
// request gets its 403 after the responses to the requests before it, and
// the connection closes. A CONNECT request is decided as opaque TCP to the
// connection's original destination (egress.DecideConn with Connect), never
// by its authority and never by an earlier request's decision; an
// allowed CONNECT, like a 101 to an Upgrade request, turns the rest of the
// connection into a tunnel that belongs to that request.
//
// The audit trail has one record per request (Envoy's HTTP access log has
// the same grain): each request is its own decision, with its own Host,
// rule and reason, and "who talked to what" must list every host a
// connection reached. BytesSent is the request (head and body),
// BytesReceived the bytes of its responses (1xx included); a tunnel's bytes
// belong to the request that opened it.

// reasonHTTPDenied is the refusal label of a request denied by its route.
const reasonHTTPDenied = "http_denied"

// httpDenial is the response a refused request gets before the
// connection closes.
type httpDenial struct {
	status int
	body   string
	reason string // the refusal label (weft_sidecar_connection_failures_total)
	err    error
}

// httpExchange is one request on an HTTP egress connection.
type httpExchange struct {
	start   time.Time
	method  string
	host    string // the request's Host (or CONNECT authority)
	connect bool   // a CONNECT request: decided as TCP
	upgrade bool   // asks to switch protocols
	deny    *httpDenial
	// reason and override are what the connection-wide audit path keeps
	// on conn (egressReason, nameUnknown), here per request.
	reason   string
	override *egress.Decision
	cluster  string // where an allowed request goes
	// sent is written by the request side, also while a tunnel it opened
	// is up; received by the response side.
	sent     atomic.Int64
	received int64
	// forwarded is closed once the request (head and body) has been
	// written to the server, or failed to be: its record waits for it.
	forwarded chan struct{}
}

// httpEgress is the state of one HTTP egress connection.
type httpEgress struct {
	p       *Proxy
	cfg     *model.Config
	fc      *model.FilterChain
	dst     netip.AddrPort
	sn      sniffed
	cn      *conn
	cluster string // the cluster the connection was dialled for
	down    *prefixConn
	in      *headReader
}

// headReader reads HTTP/1 request heads and bodies off a connection,
// holding what it read past the end of the last one.
type headReader struct {
	r   io.Reader
	buf []byte
}

// fill reads at least one more byte into buf.
func (h *headReader) fill() error {
	var b [4096]byte
	n, err := h.r.Read(b[:])
	h.buf = append(h.buf, b[:n]...)
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// head returns the next request head: its bytes and what they say. At a
// clean end of the connection (no byte of a next request) it returns
// io.EOF.
func (h *headReader) head() ([]byte, requestHead, *httpDenial) {
	for {
		if n := headEnd(h.buf); n >= 0 {
			raw := h.buf[:n:n]
			h.buf = h.buf[n:]
			rh, err := parseRequestHead(raw)
			if err != nil {
				return raw, rh, &httpDenial{http.StatusBadRequest, "weft: malformed request head\n", "bad_request", fmt.Errorf("proxy: request head: %w", err)}
			}
			return raw, rh, nil
		}
		if len(h.buf) >= maxRequestHead {
			return nil, requestHead{}, &httpDenial{http.StatusRequestHeaderFieldsTooLarge, "weft: request head too large\n", "bad_request",
				fmt.Errorf("proxy: request head over %d bytes", maxRequestHead)}
		}
		if err := h.fill(); err != nil {
			if len(bytes.Trim(h.buf, "\r\n")) == 0 && errors.Is(err, io.EOF) {
				return nil, requestHead{}, &httpDenial{err: io.EOF}
			}
			return nil, requestHead{}, &httpDenial{err: fmt.Errorf("proxy: reading request head: %w", err)}
		}
	}
}

// nextHead waits, without a deadline and holding no buffer, for the
// first byte of the next request head, then reads the head with timeout
// for the rest of it.
func (h *headReader) nextHead(c deadliner, timeout time.Duration) ([]byte, requestHead, *httpDenial) {
	if len(h.buf) == 0 {
		h.buf = nil // what held the last request goes
		var one [1]byte
		n, err := h.r.Read(one[:])
		if n == 0 {
			switch {
			case errors.Is(err, io.EOF):
				return nil, requestHead{}, &httpDenial{err: io.EOF}
			case err == nil:
				err = io.ErrNoProgress
			}
			return nil, requestHead{}, &httpDenial{err: fmt.Errorf("proxy: reading request head: %w", err)}
		}
		h.buf = append(h.buf, one[0])
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	return h.head()
}

// copyN copies n bytes of body to w.
func (h *headReader) copyN(w io.Writer, n int64) (int64, error) {
	var done int64
	for done < n {
		if len(h.buf) == 0 {
			if err := h.fill(); err != nil {
				return done, err
			}
		}
		k := int(min(int64(len(h.buf)), n-done))
		m, err := w.Write(h.buf[:k])
		done += int64(m)
		h.buf = h.buf[m:]
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// line returns the next line, up to and including its LF, at most max
// bytes (the LF included); nothing is written anywhere.
func (h *headReader) line(max int) ([]byte, error) {
	for {
		if i := bytes.IndexByte(h.buf, '\n'); i >= 0 {
			if i+1 > max {
				return nil, fmt.Errorf("proxy: chunked body: line over %d bytes", max)
			}
			l := h.buf[: i+1 : i+1]
			h.buf = h.buf[i+1:]
			return l, nil
		}
		if len(h.buf) >= max {
			return nil, fmt.Errorf("proxy: chunked body: line over %d bytes", max)
		}
		if err := h.fill(); err != nil {
			return nil, err
		}
	}
}

// crlfLine returns the next line of a chunked body, l (at most
// maxChunkLine bytes), and body, l without its CRLF: l must end in CRLF
// and hold no other CR.
func (h *headReader) crlfLine() (l, body []byte, err error) {
	if l, err = h.line(maxChunkLine); err != nil {
		return nil, nil, err
	}
	body, ok := bytes.CutSuffix(l, []byte("\r\n"))
	if !ok || bytes.IndexByte(body, '\r') >= 0 {
		return nil, nil, fmt.Errorf("proxy: chunked body: line %q does not end in CRLF alone", truncate(l))
	}
	return l, body, nil
}

// Bounds of a chunked body's lines: a chunk-size line, and all trailer
// lines together.
const (
	maxChunkLine = 4096
	maxTrailers  = 8192
)

// copyChunked copies a chunked body (RFC 9112 section 7.1) to w as it is,
// trailers included. Each line is checked before it is written, as
// strictly as Go's net/http reads it (1 to 16 hex digits, then only a
// chunk extension; CRLF line ends and no other CR; trailer lines that are
// header fields): a body that one server could end where another does
// not is cut off there, never forwarded.
func (h *headReader) copyChunked(w io.Writer) (int64, error) {
	var n int64
	write := func(b []byte) error {
		m, err := w.Write(b)
		n += int64(m)
		return err
	}
	for {
		l, body, err := h.crlfLine()
		if err != nil {
			return n, err
		}
		// No white space around the size (RFC 9112 allows some before a
		// ";", net/http does not): stricter than both.
		size, _, _ := bytes.Cut(body, []byte(";"))
		if len(size) == 0 || len(size) > 16 || !isHex(size) {
			return n, fmt.Errorf("proxy: chunked body: bad chunk size %q", truncate(body))
		}
		sz, err := strconv.ParseUint(string(size), 16, 64)
		if err != nil || sz > 1<<62 {
			return n, fmt.Errorf("proxy: chunked body: bad chunk size %q", truncate(body))
		}
		if err := write(l); err != nil {
			return n, err
		}
		if sz == 0 {
			total := 0
			for { // trailers, then the empty line
				l, body, err := h.crlfLine()
				if err != nil {
					return n, err
				}
				if total += len(l); total > maxTrailers {
					return n, fmt.Errorf("proxy: chunked body: trailers over %d bytes", maxTrailers)
				}
				if len(body) > 0 {
					k, _, ok := bytes.Cut(body, []byte(":"))
					if _, spaced, valid := headerKey(k); !ok || spaced || !valid {
						return n, fmt.Errorf("proxy: chunked body: trailer %q is not a header field", truncate(body))
					}
				}
				if err := write(l); err != nil {
					return n, err
				}
				if len(body) == 0 {
					return n, nil
				}
			}
		}
		k, err := h.copyN(w, int64(sz))
		n += k
		if err != nil {
			return n, err
		}
		for len(h.buf) < 2 {
			if err := h.fill(); err != nil {
				return n, err
			}
		}
		if !bytes.HasPrefix(h.buf, []byte("\r\n")) {
			return n, errors.New("proxy: chunked body: chunk data not followed by CRLF")
		}
		h.buf = h.buf[2:]
		if err := write([]byte("\r\n")); err != nil {
			return n, err
		}
	}
}

func isHex(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// decide decides one request (the first too): route by Host, then bind
// the name to the destination address; a CONNECT as TCP to dst.
func (st *httpEgress) decide(ctx context.Context, rh requestHead) *httpExchange {
	p, cfg := st.p, st.cfg
	ex := &httpExchange{start: p.cfg.Clock.Now(), method: rh.method, host: rh.host, upgrade: rh.upgrade}
	switch {
	case rh.suspect != "":
		ex.deny = &httpDenial{http.StatusBadRequest, "weft: ambiguous request head: " + rh.suspect + "\n", "bad_request",
			fmt.Errorf("proxy: request head: %s", rh.suspect)}
		return ex
	case rh.framing != "":
		ex.deny = &httpDenial{http.StatusBadRequest, "weft: request body framing refused: " + rh.framing + "\n", "bad_request",
			fmt.Errorf("proxy: request head: %s", rh.framing)}
		return ex
	case rh.h2 || rh.upgrade && !strings.EqualFold(rh.upgradeTo, "websocket"):
		// After a 101 the bytes would be another protocol's — h2c's
		// streams each name their own :authority — which the sidecar
		// does not read: it would forward them on this request's decision.
		ex.deny = &httpDenial{http.StatusBadRequest, fmt.Sprintf("weft: Upgrade to %q is not forwarded (only websocket is): its requests could not be decided\n", rh.upgradeTo),
			"bad_request", fmt.Errorf("proxy: request asks to upgrade to %q (HTTP2-Settings %v)", rh.upgradeTo, rh.h2)}
		return ex
	case rh.method == http.MethodConnect:
		ex.connect = true
		d := egress.DecideConn(cfg, egress.Conn{Dst: st.dst, Connect: true})
		ex.override = &d
		if fc := cfg.OutboundFor(st.dst).Match(st.dst, "raw_buffer", "", nil); fc != nil {
			ex.cluster = fc.Target.Cluster
		}
		if d.NameUnknown {
			ex.reason = reasonNameUnknown + ": CONNECT tunnel (" + d.Reason + ")"
			if d.Action == egress.Audit {
				p.m.nameUnknown.With(unknownFlagged).Inc()
			} else {
				p.m.nameUnknown.With(unknownDenied).Inc()
			}
		}
		if d.Action == egress.Deny {
			ex.deny = &httpDenial{http.StatusForbidden, fmt.Sprintf("weft: CONNECT %s denied: a tunnel is egress to %s (%s)\n", rh.host, st.dst, d.Reason),
				reasonHTTPDenied, fmt.Errorf("proxy: CONNECT %s through %s denied: %s", rh.host, st.dst, d.Reason)}
		}
		return ex
	case rh.host == "":
		ex.deny = &httpDenial{http.StatusBadRequest, "weft: request without Host\n", "bad_request", errors.New("proxy: request without Host")}
		return ex
	}
	rc := cfg.Routes[st.fc.Target.RouteConfig]
	if rc == nil {
		ex.deny = &httpDenial{http.StatusForbidden, "weft: no route configuration\n", "no_cluster", fmt.Errorf("proxy: no route configuration %q", st.fc.Target.RouteConfig)}
		return ex
	}
	// Virtual hosts are matched on the normalised name, as the audit
	// decision is: lower case, no trailing dot, and — when the connection
	// manager says strip_any_host_port — no ":port".
	host := egress.Name(rh.host)
	if st.fc.Target.StripAnyHostPort {
		host = egress.HostName(rh.host)
	}
	vh := rc.Match(host)
	switch {
	case vh == nil:
		ex.deny = &httpDenial{http.StatusNotFound, fmt.Sprintf("weft: no route to %s\n", host), reasonHTTPDenied,
			fmt.Errorf("proxy: route configuration %s has no virtual host for %q", rc.Name, host)}
		return ex
	case vh.Deny != nil:
		ex.deny = &httpDenial{vh.Deny.Status, vh.Deny.Body, reasonHTTPDenied,
			fmt.Errorf("proxy: host %q denied by virtual host %s (%d)", host, vh.Name, vh.Deny.Status)}
		return ex
	case st.cluster != "" && vh.Cluster != st.cluster:
		ex.deny = &httpDenial{http.StatusMisdirectedRequest, fmt.Sprintf("weft: %s goes to another upstream than this connection; open a new connection\n", host),
			"cluster_mismatch", fmt.Errorf("proxy: host %q routes to cluster %s, the connection goes to %s", host, vh.Cluster, st.cluster)}
		return ex
	}
	ex.cluster = vh.Cluster
	name := egress.HostName(host)
	why, meta := p.bindCheck(ctx, cfg, st.fc, vh, name, st.dst, vh.Cluster)
	if why == "" {
		return ex
	}
	ex.reason = reasonNameMismatch + ": " + why
	if meta.Mode == "Audit" {
		p.m.bindings.With(bindMismatchFlagged).Inc()
		p.log.Warn("egress name does not match the destination (Audit: forwarded)", "src", st.cn.src, "dst", st.cn.dst, "name", name, "policy", meta.Policy, "reason", why)
		return ex
	}
	p.m.bindings.With(bindMismatchDenied).Inc()
	ex.deny = &httpDenial{http.StatusForbidden, "weft: egress to " + name + " denied: " + why + "\n", reasonNameMismatch,
		fmt.Errorf("proxy: egress allowed for %s by %s rule %s, but %s", name, meta.Policy, meta.Rule, why)}
	return ex
}

// emit writes ex's audit event.
func (st *httpEgress) emit(ex *httpExchange) {
	if st.p.cfg.Audit == nil || st.fc.Egress == nil {
		return
	}
	if d := ex.deny; d != nil && d.reason != reasonHTTPDenied && d.reason != reasonNameMismatch && ex.override == nil {
		// Refused before any rule decided (a malformed or ambiguous head,
		// unsafe framing, an upgrade): no rule is credited with it.
		ex.override = &egress.Decision{Action: egress.Deny}
		if ex.reason == "" && d.err != nil {
			ex.reason = d.reason + ": " + d.err.Error()
		}
	}
	f := egressFacts{start: ex.start, reason: ex.reason, override: ex.override, sent: ex.sent.Load(), received: ex.received}
	host := ex.host
	if ex.connect {
		host = "" // the authority names no rule: the tunnel is TCP to the destination
	}
	e := egressEvent(st.cfg, st.fc, st.dst, st.sn, host, f, st.p.cfg.Clock.Since(ex.start))
	if ex.connect {
		e.Host = ex.host
	}
	if ex.deny != nil {
		e.Decision = egress.Deny.String()
	}
	st.p.cfg.Audit(e)
}

// refuseFirst answers and audits a first request that is refused, before
// any upstream is dialled.
func (st *httpEgress) refuseFirst(ex *httpExchange) *refusal {
	st.p.m.httpRequests.With("deny").Inc()
	writeHTTPError(st.down, ex.deny.status, ex.deny.body)
	st.emit(ex)
	return &refusal{reason: ex.deny.reason, err: ex.deny.err}
}

// serve forwards the connection request by request once the first
// request (first, allowed; its head still to be sent) has its upstream.
// It returns at once; done runs when both directions have finished.
func (st *httpEgress) serve(first *httpExchange, firstHead []byte, firstRH requestHead, up net.Conn, done func()) {
	p, cn := st.p, st.cn
	in, out := p.m.bytesIn[dirIndex(outbound)], p.m.bytesOut[dirIndex(outbound)]
	queue := make(chan *httpExchange, 16)
	tunnel := make(chan bool, 1) // the response side's answer to a CONNECT or Upgrade
	var closeOnce sync.Once
	closeBoth := func() {
		closeOnce.Do(func() {
			st.down.Close()
			up.Close()
		})
	}
	var left atomic.Int32
	left.Store(2)
	end := func() {
		if left.Add(-1) == 0 {
			closeBoth()
			done()
		}
	}
	// Every write to either side is bounded by WriteTimeout and counts as
	// progress against IdleTimeout (cn.watch), as a pipe's are.
	wt := max(p.cfg.WriteTimeout, 0)
	timedOut := func() { p.m.timeouts.With(outbound, timeoutWrite).Inc() }
	cn.mu.Lock()
	watch := cn.watch
	cn.mu.Unlock()
	upW := boundedConn{Conn: up, d: wt, w: watch, timedOut: timedOut}
	downW := boundedConn{Conn: st.down, d: wt, w: watch, timedOut: timedOut}
	toUp := &countWriter{w: upW, onWrite: func(n int) { cn.toUp.Add(int64(n)); in.Add(uint64(n)) }}

	// Requests: read, decide, forward, one by one.
	respDone := make(chan struct{})
	var outstanding atomic.Int64 // requests forwarded whose response has not ended
	go func() {
		defer end()
		defer close(queue)
		ex, head, rh := first, firstHead, firstRH
		for {
			if ex.deny != nil {
				_ = p.refuse(outbound, cn, &refusal{reason: ex.deny.reason, err: ex.deny.err})
				p.m.httpRequests.With("deny").Inc()
				// The responses to the requests before it come first; a
				// server that keeps them back is not waited for long, and
				// with none outstanding the response side stops waiting
				// for the server at once. (Socket deadlines: wall time.)
				queue <- ex
				if outstanding.Load() == 0 {
					_ = up.SetReadDeadline(time.Now())
				} else {
					_ = up.SetReadDeadline(time.Now().Add(deniedDrain))
				}
				return
			}
			p.m.httpRequests.With(st.decisionLabel(ex)).Inc()
			outstanding.Add(1)
			ex.forwarded = make(chan struct{})
			queue <- ex // before the server can answer it
			// The head and what is read of a Content-Length body go in
			// one write (writev): a small request costs the server one
			// segment and the sidecar one syscall, as a copied one does.
			bodyRead := int64(0)
			if rh.contentLength > 0 {
				bodyRead = min(int64(len(st.in.buf)), rh.contentLength)
			}
			bufs := net.Buffers{head, st.in.buf[:bodyRead]}
			if wt > 0 {
				_ = up.SetWriteDeadline(time.Now().Add(wt))
			}
			n, err := bufs.WriteTo(up)
			if n > 0 {
				watch.touch()
			}
			if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				timedOut()
			}
			toUp.onWrite(int(n))
			ex.sent.Add(n)
			st.in.buf = st.in.buf[bodyRead:]
			if err == nil {
				var k int64
				switch {
				case rh.chunked:
					k, err = st.in.copyChunked(toUp)
				case rh.contentLength > bodyRead:
					k, err = st.in.copyN(toUp, rh.contentLength-bodyRead)
				}
				ex.sent.Add(k)
			}
			close(ex.forwarded)
			if err != nil {
				closeBoth()
				return
			}
			if ex.connect || ex.upgrade {
				var tunnelled bool
				select {
				case tunnelled = <-tunnel:
				case <-respDone:
					return
				}
				if tunnelled {
					// The rest is the tunnel's: bytes, not requests.
					rest := &countWriter{w: toUp, onWrite: func(n int) { ex.sent.Add(int64(n)) }}
					if _, err := rest.Write(st.in.buf); err == nil {
						st.in.buf = nil
						_, _ = io.Copy(rest, st.down)
					}
					if cw, ok := up.(closeWriter); ok {
						_ = cw.CloseWrite()
					}
					return
				}
			}
			// The next request may be long in coming (IdleTimeout bounds
			// the wait); once its first byte is here, its head has
			// HandshakeTimeout to arrive whole.
			var d *httpDenial
			head, rh, d = st.in.nextHead(st.down, p.cfg.HandshakeTimeout)
			switch {
			case d == nil:
				ex = st.decide(context.Background(), rh)
			case errors.Is(d.err, io.EOF): // the client is done
				if cw, ok := up.(closeWriter); ok {
					_ = cw.CloseWrite()
				}
				return
			case d.status == 0: // the client went away mid-head
				closeBoth()
				return
			default:
				ex = &httpExchange{start: p.cfg.Clock.Now(), host: rh.host, deny: d}
			}
		}
	}()

	// Responses: to the client as they come, each attributed to its
	// request; a denied request's 403 after the ones before it.
	go func() {
		defer end()
		defer close(respDone)
		var got atomic.Int64
		tee := &teeReader{r: up, w: downW, onWrite: func(n int) { got.Add(int64(n)); cn.toDown.Add(int64(n)); out.Add(uint64(n)) }}
		budget := &budgetReader{r: tee, left: -1}
		br := bufio.NewReader(budget)
		var mark int64
		// account emits ex with the bytes the parser consumed since the
		// last one (read from the server, less what is read ahead).
		account := func(ex *httpExchange) {
			if ex.forwarded != nil {
				<-ex.forwarded
			}
			now := got.Load() - int64(br.Buffered())
			ex.received, mark = now-mark, now
			st.emit(ex)
		}
		// rest emits what is still queued once nothing more is forwarded.
		rest := func() {
			for ex := range queue {
				if ex.connect || ex.upgrade {
					select {
					case tunnel <- false:
					default:
					}
				}
				account(ex)
			}
		}
		for {
			var ex *httpExchange
			var ok bool
			select {
			case ex, ok = <-queue:
			default:
				// Idle: wait for the server. Requests are queued before
				// they are sent, so bytes with nothing queued were not
				// asked for; a queued denial cuts the wait short.
				if _, err := br.Peek(1); err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						if ex, ok = <-queue; ok && ex.deny != nil {
							break
						}
					}
					// The server closed (or failed) between responses.
					closeBoth()
					if ex != nil {
						account(ex)
					}
					rest()
					return
				}
				select {
				case ex, ok = <-queue:
				default:
					ok = false
				}
				if !ok || ex == nil {
					// Unasked-for bytes: the responses can no longer be
					// told apart, so the connection ends here (what was
					// read went to the app) and every request still
					// queued is recorded now.
					closeBoth()
					rest()
					return
				}
			}
			if !ok {
				// The client sent its last request and every response
				// came: what the server still sends goes to it, then the
				// write side closes.
				_, _ = io.Copy(io.Discard, br)
				_ = st.down.CloseWrite()
				return
			}
			if ex.deny != nil {
				writeHTTPError(st.down, ex.deny.status, ex.deny.body)
				account(ex)
				closeBoth()
				rest()
				return
			}
			tunnelled, raw := false, false
			for {
				budget.left = maxResponseHead // a response head is bounded, as a request head is
				resp, err := http.ReadResponse(br, &http.Request{Method: ex.method})
				budget.left = -1
				if err != nil {
					raw = true
					break
				}
				code := resp.StatusCode
				if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
					continue
				}
				if ex.connect && code >= 200 && code < 300 || ex.upgrade && code == http.StatusSwitchingProtocols {
					tunnelled = true
					break
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				raw = err != nil
				break
			}
			outstanding.Add(-1)
			if ex.connect || ex.upgrade {
				tunnel <- tunnelled
			}
			if !tunnelled && !raw {
				account(ex)
				continue
			}
			if raw {
				// A response that could not be delimited (or a head over
				// its bound): the connection ends here, and every request
				// still queued is recorded now, not when the app lets go.
				closeBoth()
				account(ex)
				rest()
				return
			}
			// A tunnel: the rest of what the server sends is copied as it
			// comes, and belongs to this request.
			_, _ = io.Copy(io.Discard, br)
			account(ex)
			_ = st.down.CloseWrite()
			rest()
			return
		}
	}()
}

// deniedDrain bounds how long a denied request waits for the responses to
// the requests before it.
const deniedDrain = 30 * time.Second

// decisionLabel is the decision label of a forwarded request: "audit"
// when its rule (or the name check) only flags it.
func (st *httpEgress) decisionLabel(ex *httpExchange) string {
	d := egress.ForChain(st.cfg, st.fc, ex.host)
	if ex.override != nil {
		d = *ex.override
	}
	if ex.reason != "" || d.Action == egress.Audit {
		return "audit"
	}
	return "allow"
}

// maxResponseHead bounds a response head the sidecar parses (as
// net/http's Transport bounds MaxResponseHeaderBytes).
const maxResponseHead = 64 << 10

var errResponseHeadTooLarge = errors.New("proxy: response head over 64 KiB")

// budgetReader reads at most left bytes (unbounded while left < 0).
type budgetReader struct {
	r    io.Reader
	left int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, errResponseHeadTooLarge
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
	}
	return n, err
}

// countWriter counts what it writes.
type countWriter struct {
	w       io.Writer
	onWrite func(int)
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	if n > 0 {
		c.onWrite(n)
	}
	return n, err
}

// teeReader writes what it reads to w before handing it on.
type teeReader struct {
	r       io.Reader
	w       io.Writer
	onWrite func(int)
}

func (t *teeReader) Read(b []byte) (int, error) {
	n, err := t.r.Read(b)
	if n > 0 {
		m, werr := t.w.Write(b[:n])
		if m > 0 {
			t.onWrite(m)
		}
		if werr != nil {
			return n, werr
		}
	}
	return n, err
}
