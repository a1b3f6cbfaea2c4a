package proxy

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// chunkDesyncCases are chunked request bodies that the sidecar's
// copyChunked accepts and forwards, and that net/http's chunked reader
// refuses after consuming the offending line: a server that carries on
// reading requests after a body error (reqServer does, as any loop of
// http.ReadRequest that ignores the body's error does) then reads the
// chunk data, a request for evil.example.com, as the next request.
func chunkDesyncCases() []struct{ name, body string } {
	size := strconv.FormatInt(int64(len(evilReq)), 16)
	rest := evilReq + "\r\n0\r\n\r\n"
	return []struct{ name, body string }{
		{"chunk-size line ending in bare LF", size + "\n" + rest},
		{"chunk-size line ending in CR CR LF", size + "\r\r\n" + rest},
		{"white space before a chunk extension", size + " ;x\r\n" + rest},
		{"chunk size of 17 hex digits", strings.Repeat("0", 17-len(size)) + size + "\r\n" + rest},
		{"trailer section with a line that is not a field", "0\r\nX\r\n" + evilReq},
	}
}

func chunkedPost(body string) string {
	return "POST / HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n" + body
}

// TestAttackChunkedLineDesync: against the suite's reference upstream
// (reqServer: http.ReadRequest in a loop), a request for evil.example.com
// hidden in a malformed chunked body of an allowed request.
func TestAttackChunkedLineDesync(t *testing.T) {
	t.Parallel()
	for _, tc := range chunkDesyncCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := startReqServer(t)
			pd, events := reqPod(t, "Enforce", false, srv)
			statuses, bodies := sendRaw(t, pd, srv.app.addr(), chunkedPost(tc.body), 500*time.Millisecond)
			settle(time.Second, func() bool { return sawHost(srv.requests(), "evil.example.com") })
			seen := srv.requests()
			var trail []string
			for settle(time.Second, func() bool { return len(events) > 0 }) {
				e := <-events
				trail = append(trail, e.Host+" "+e.Decision+" rule="+e.Rule)
			}
			t.Logf("app got %v %q; server saw %q; audit %q", statuses, bodies, seen, trail)
			if sawHost(seen, "evil.example.com") {
				t.Errorf("BYPASS: the server read a request for evil.example.com (%q); the app got %q; the audit trail has %q", seen, bodies, trail)
			}
		})
	}
}
