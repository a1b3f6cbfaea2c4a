package h1

import (
	"fmt"
	"io"
	"net/http"
	"testing"
)

// TestAttackExpectContinueWithoutBody: a request that expects 100
// Continue but has no body (Content-Length: 0, as some clients send every
// POST), or comes as HTTP/1.0, is served by net/http's server (nothing to
// continue); weft's must not refuse it with 417 and close.
func TestAttackExpectContinueWithoutBody(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%q %v", b, err)
	})
	std := serveStd(t, h)
	weft, _ := serveH1(t, h, nil)
	for _, raw := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
		"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
	} {
		sr, sb, sclosed := exchange(t, std, raw, 1, "POST")
		wr, wb, wclosed := exchange(t, weft, raw, 1, "POST")
		if s, w := describe(sr[0], sb[0]), describe(wr[0], wb[0]); s != w || sclosed != wclosed {
			t.Errorf("%q:\nnet/http %s (closed %v)\nweft     %s (closed %v)", raw, s, sclosed, w, wclosed)
		}
	}
}
