package l7

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// FuzzRelayAsReverseProxy: for any query, any Connection, Te and Upgrade
// values and any other field of the app's request, and any Connection and
// other field and status of the endpoint's response, the relay sends what
// httputil.ReverseProxy (Rewrite mode, as the sidecars configured it)
// sent — query, fields, Host — and answers with the same status, fields
// and body, or fails alike.
func FuzzRelayAsReverseProxy(f *testing.F) {
	f.Add("a=1;b=2", "close, X-A", "trailers", "", "X-A", "1", "X-B", "X-B", "2", 200, "ok")
	f.Add("a=%zz", "Keep-Alive, Te", "trailers, gzip", "websocket", "Forwarded", "for=x", "Keep-Alive", "Keep-Alive", "5", 503, "")
	f.Add("x=%20y&z", "upgrade", "", "h2c", "X-Forwarded-For", "198.18.0.1", "", "Content-Type", "text/event-stream", 200, "data: 1\n\n")
	f.Add("", "Upgrade, X-Forwarded-Proto", "", "w\xe9b", "X-Forwarded-Proto", "https", "Content-Length", "Content-Length", "3", 204, "abc")
	f.Add("q=1", ",, ,", "TRAILERS", "", "User-Agent", "", "connection", "Proxy-Authenticate", "Basic", 404, "nope")
	f.Fuzz(func(t *testing.T, query, conn, te, upgrade, name, value, resConn, resName, resValue string, status int, body string) {
		if status < 200 || status > 599 {
			return
		}
		// What net/http's servers and transports let through.
		for _, v := range []string{conn, te, upgrade, value, resConn, resValue} {
			if !httpguts.ValidHeaderFieldValue(v) {
				return
			}
		}
		for _, n := range []string{name, resName} {
			if n != "" && !httpguts.ValidHeaderFieldName(n) {
				return
			}
		}
		if strings.ContainsAny(query, " #\x00\r\n") {
			return
		}
		type result struct {
			Sent   string
			Code   int
			Header http.Header
			Body   string
			Failed string
		}
		run := func(mk func(rt func(*http.Request) (*http.Response, error), fail func(http.ResponseWriter, *http.Request, error)) http.Handler) result {
			var r result
			rt := func(out *http.Request) (*http.Response, error) {
				r.Sent = fmt.Sprintf("%s %s %v", out.Host, out.URL.RawQuery, out.Header)
				h := http.Header{"Content-Type": {"text/plain"}}
				if resConn != "" {
					h.Set("Connection", resConn)
				}
				if resName != "" {
					h.Add(resName, resValue)
				}
				return &http.Response{StatusCode: status, Header: h, ContentLength: int64(len(body)),
					Body: io.NopCloser(strings.NewReader(body)), Request: out}, nil
			}
			fail := func(w http.ResponseWriter, out *http.Request, err error) {
				r.Failed = err.Error()
				w.WriteHeader(http.StatusBadGateway)
			}
			in := httptest.NewRequest("GET", "http://svc.demo/p", nil)
			in.URL.RawQuery = query
			for k, v := range map[string]string{"Connection": conn, "Te": te, "Upgrade": upgrade} {
				if v != "" {
					in.Header.Set(k, v)
				}
			}
			if name != "" {
				in.Header.Add(name, value)
			}
			w := httptest.NewRecorder()
			mk(rt, fail).ServeHTTP(w, in)
			r.Code, r.Header, r.Body = w.Code, w.Header(), w.Body.String()
			return r
		}
		want, got := run(reverseProxyFor), run(relayFor)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("relay:\n%+v\nReverseProxy:\n%+v", got, want)
		}
	})
}
