package h2

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sort"
	"strings"
	"sync"
	"testing"
)

// The ResponseWriter contract as net/http's HTTP/2 server keeps it: each
// handler below runs on x/net/http2's server and on weft's, each server
// asked by x/net/http2's client, and what the handler saw (the results of
// its calls, a panic) and what the client got (status, fields, body,
// trailers, or an error) must be the same.
func TestResponseWriterAsNetHTTP(t *testing.T) {
	type result struct{ handler, client string }
	type handler func(w http.ResponseWriter, r *http.Request, log func(string, ...any))
	write := func(w http.ResponseWriter, log func(string, ...any), s string) {
		n, err := w.Write([]byte(s))
		log("Write(%q) = %d, %v", s, n, err)
	}
	writeString := func(w http.ResponseWriter, log func(string, ...any), s string) {
		n, err := io.WriteString(w, s)
		log("WriteString(%q) = %d, %v", s, n, err)
	}
	writeHeader := func(w http.ResponseWriter, log func(string, ...any), code int) {
		defer func() {
			if p := recover(); p != nil {
				log("WriteHeader(%d) panicked", code)
			}
		}()
		w.WriteHeader(code)
	}
	// weft's deliberate differences: a Write past the declared
	// Content-Length fails (http.ErrContentLength, as net/http's HTTP/1
	// server's), where x/net's server takes it while the header is unsent
	// and its client then fails reading; a body short of its
	// Content-Length resets the stream (INTERNAL_ERROR) before the header
	// goes. weft: the handler's log and the client's result expected of
	// weft in those cases.
	const over = "http: wrote more than the declared Content-Length"
	cases := []struct {
		name, method string
		h            handler
		weft         *result
	}{
		{"status 99", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) { writeHeader(w, log, 99) }, nil},
		{"status 1000", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) { writeHeader(w, log, 1000) }, nil},
		{"status 999", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) { writeHeader(w, log, 999) }, nil},
		{"status 199 is interim, 200 final", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			writeHeader(w, log, 199)
			writeHeader(w, log, 200)
			write(w, log, "after")
		}, nil},
		{"status 100 is interim", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			writeHeader(w, log, 100)
			write(w, log, "after")
		}, nil},
		{"WriteString after the header, to the content-length", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Length", "0")
			writeHeader(w, log, 200)
			writeString(w, log, "x")
		}, &result{`WriteString("x") = 0, ` + over, `200 [Content-Length=["0"]] ContentLength=0 body="" trailers=[]`}},
		// weft buffers 16 KiB of a response (x/net's server 4 KiB): a
		// body of exactly that, written whole before the handler returns,
		// is sent with its length.
		{"exactly the buffer", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Type", "text/plain")
			write(w, log, strings.Repeat("a", bufferSize))
		}, &result{`Write("` + strings.Repeat("a", bufferSize) + `") = 16384, <nil>`,
			`200 [Content-Length=["16384"] Content-Type=["text/plain"]] ContentLength=16384 body="` + strings.Repeat("a", bufferSize) + `" trailers=[]`}},
		{"status 200 then 500", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			writeHeader(w, log, 200)
			writeHeader(w, log, 500)
			write(w, log, "ok")
		}, nil},
		{"a body of its content-length", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Length", "5")
			write(w, log, "hel")
			write(w, log, "lo")
			write(w, log, "!")
			writeString(w, log, "?")
		}, &result{`Write("hel") = 3, <nil>; Write("lo") = 2, <nil>; Write("!") = 0, ` + over + `; WriteString("?") = 0, ` + over,
			`200 [Content-Length=["5"] Content-Type=["text/plain; charset=utf-8"]] ContentLength=5 body="hello" trailers=[]`}},
		{"past the content-length at once", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Length", "5")
			write(w, log, "hello!")
			writeString(w, log, "hello!")
			writeString(w, log, "hello")
		}, &result{`Write("hello!") = 0, ` + over + `; WriteString("hello!") = 0, ` + over + `; WriteString("hello") = 5, <nil>`,
			`200 [Content-Length=["5"] Content-Type=["text/plain; charset=utf-8"]] ContentLength=5 body="hello" trailers=[]`}},
		{"short of the content-length", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Length", "10")
			write(w, log, "hello")
		}, &result{`Write("hello") = 5, <nil>`, "error"}},
		{"content-length 0", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Length", "0")
			writeString(w, log, "x")
			write(w, log, "")
		}, &result{`WriteString("x") = 0, ` + over + `; Write("") = 0, <nil>`, `200 [Content-Length=["0"]] ContentLength=0 body="" trailers=[]`}},
		{"a malformed content-length", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Length", "-3")
			write(w, log, "body")
		}, nil},
		{"a content-length not a number", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Length", "five")
			writeString(w, log, "body")
		}, nil},
		{"HEAD with a body written", "HEAD", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Length", "4")
			write(w, log, "body")
			writeString(w, log, "more")
		}, &result{`Write("body") = 4, <nil>; WriteString("more") = 0, ` + over, `200 [Content-Length=["4"]] ContentLength=4 body="" trailers=[]`}},
		{"204 with a body", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			writeHeader(w, log, 204)
			write(w, log, "x")
			writeString(w, log, "x")
		}, nil},
		{"304 with a body", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			writeHeader(w, log, 304)
			writeString(w, log, "x")
		}, nil},
		{"WriteString first", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			writeString(w, log, "<html>hi</html>")
		}, nil},
		{"WriteString beyond the buffer", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			writeString(w, log, strings.Repeat("a", bufferSize-1))
			writeString(w, log, "bb")
			writeString(w, log, strings.Repeat("c", bufferSize+1))
		}, nil},
		{"Write beyond the buffer", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			write(w, log, strings.Repeat("a", bufferSize))
			write(w, log, "b")
		}, nil},
		{"trailers declared and prefixed", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Trailer", "X-A, X-B")
			write(w, log, "body")
			w.Header().Set("X-A", "1")
			w.Header().Set(http.TrailerPrefix+"X-C", "3")
			w.Header().Set("X-D", "not declared")
		}, nil},
		{"flush, then the rest", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Type", "text/plain")
			write(w, log, "one")
			w.(http.Flusher).Flush()
			write(w, log, "two")
		}, nil},
		{"a 1xx's Content-Length and Trailer are not sent", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Content-Length", "5")
			w.Header().Set("Trailer", "X-T")
			w.Header().Set("X-Early", "1")
			writeHeader(w, log, 103)
			w.Header().Del("X-Early")
			w.Header().Del("Trailer")
			write(w, log, "final")
		}, nil},
		{"the handler's own Date", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header()["Date"] = nil
			write(w, log, "no date")
		}, nil},
		{"Flush first", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("X-Final", "1")
			w.(http.Flusher).Flush()
			write(w, log, "after")
		}, nil},
		// HTTP/2 field names are lowercase (RFC 9113 §8.2.1), whatever
		// the case of the header map's keys: A and Z as the only capital
		// letters, and a key not canonical (set through the map).
		{"field names in any case", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Allow", "GET")
			w.Header().Set("Zone", "z")
			w.Header()["x-lower"] = []string{"1"}
			write(w, log, "body")
		}, nil},
		{"a 1xx's fields are its own", "GET", func(w http.ResponseWriter, r *http.Request, log func(string, ...any)) {
			w.Header().Set("Link", "</a>")
			writeHeader(w, log, 103)
			w.Header().Del("Link")
			w.Header().Set("X-Final", "1")
			write(w, log, "final")
		}, nil},
	}
	results := map[string][]result{}
	for _, srv := range servers {
		var mu sync.Mutex
		logs := map[string][]string{}
		addr, _ := srv.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			name := r.URL.Query().Get("case")
			for _, tc := range cases {
				if tc.name == name {
					tc.h(w, r, func(format string, args ...any) {
						mu.Lock()
						logs[name] = append(logs[name], fmt.Sprintf(format, args...))
						mu.Unlock()
					})
				}
			}
		}), 0)
		client := h2cClient(t)
		for _, tc := range cases {
			var interim []string
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				var keys []string
				for k := range h {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				interim = append(interim, fmt.Sprint(code, keys))
				return nil
			}})
			req, _ := http.NewRequestWithContext(ctx, tc.method, "http://"+addr+"/?case="+strings.ReplaceAll(tc.name, " ", "+"), nil)
			var got string
			resp, err := client.Do(req)
			if err != nil {
				got = "error"
			} else {
				body, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				var fields []string
				for _, k := range []string{"Content-Length", "Content-Type", "X-Final", "Link", "Allow", "Zone", "X-Lower"} {
					if v, ok := resp.Header[k]; ok {
						fields = append(fields, fmt.Sprintf("%s=%q", k, v))
					}
				}
				var trailers []string
				for k, v := range resp.Trailer {
					trailers = append(trailers, fmt.Sprintf("%s=%q", k, v))
				}
				sort.Strings(trailers)
				_, date := resp.Header["Date"]
				got = fmt.Sprintf("%d %v ContentLength=%d body=%q trailers=%v", resp.StatusCode, fields, resp.ContentLength, body, trailers)
				if !date {
					got += " no Date"
				}
				if len(interim) > 0 {
					got += fmt.Sprintf(" interim=%v", interim)
				}
				if rerr != nil {
					got += " read error"
				}
			}
			mu.Lock()
			h := strings.Join(logs[tc.name], "; ")
			mu.Unlock()
			results[tc.name] = append(results[tc.name], result{h, got})
		}
	}
	for _, tc := range cases {
		r := results[tc.name]
		if len(r) != 2 {
			t.Fatalf("%s: %d results", tc.name, len(r))
		}
		if tc.weft != nil {
			if r[1] != *tc.weft {
				t.Errorf("%s (weft's own):\n  handler %s\n  client  %s\n  want\n  handler %s\n  client  %s", tc.name, r[1].handler, r[1].client, tc.weft.handler, tc.weft.client)
			}
			continue
		}
		if r[0] != r[1] {
			t.Errorf("%s:\n  x/net: handler %s\n         client  %s\n  weft:  handler %s\n         client  %s", tc.name, r[0].handler, r[0].client, r[1].handler, r[1].client)
		}
	}
}

// The header map changed after WriteHeader, or after the first Write,
// changes nothing in the header sent (net/http's ResponseWriter contract:
// "Changing the header map after a call to WriteHeader (or Write) has no
// effect unless the HTTP status code was of the 1xx class or the modified
// headers are trailers"; x/net's server keeps a copy taken then): a field
// set after is not sent, and a declared trailer set after the body goes
// as a trailer only, not in the header block too.
func TestResponseHeaderFixedAtWriteHeader(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-T")
		switch r.URL.Path {
		case "/after-writeheader":
			w.WriteHeader(200)
			w.Header().Set("X-Late", "1")
			io.WriteString(w, "body")
		case "/after-write":
			io.WriteString(w, "body")
			w.Header().Set("X-Late", "1")
		}
		w.Header().Set("X-T", "trailer")
	})
	for _, srv := range servers {
		addr, _ := srv.serve(t, h, 0)
		client := h2cClient(t)
		for _, path := range []string{"/after-writeheader", "/after-write"} {
			res, err := client.Get("http://" + addr + path)
			if err != nil {
				t.Fatalf("%s %s: %v", srv.name, path, err)
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			_, late := res.Header["X-Late"]
			_, t1 := res.Header["X-T"]
			if err != nil || string(body) != "body" || late || t1 || res.Trailer.Get("X-T") != "trailer" {
				t.Errorf("%s %s: body %q (%v), header %v, trailers %v; want no X-Late, X-T a trailer only", srv.name, path, body, err, res.Header, res.Trailer)
			}
		}
	}
}
