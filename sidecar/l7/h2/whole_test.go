package h2

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// A response whose handler returned with its whole body buffered says
// its length once, as x/net's server does: a Content-Length the handler
// declared is not said again beside it (0 included); a HEAD says the
// length the handler wrote, and none when it wrote nothing (its length is
// not known). A response with no body but trailers (its length 0, as
// x/net's server says it too) ends with the
// trailers; one with neither ends with its header block.
func TestServerWholeBodyLengthAndEnd(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/declared0":
			w.Header().Set("Content-Length", "0")
		case "/written":
			io.WriteString(w, "hello")
		case "/trailers":
			w.Header().Set("Trailer", "X-T")
			w.Header().Set("X-T", "v")
		case "/nothing":
		}
	})})
	c := h2cClient(t)
	for _, tc := range []struct {
		method, path string
		clens        []string // the response's Content-Length fields
		trailer      string
	}{
		{"GET", "/declared0", []string{"0"}, ""},
		{"GET", "/nothing", []string{"0"}, ""},
		{"HEAD", "/nothing", nil, ""},
		{"HEAD", "/written", []string{"5"}, ""},
		{"GET", "/written", []string{"5"}, ""},
		{"GET", "/trailers", []string{"0"}, "v"}, // as x/net's server says it
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, err := http.NewRequestWithContext(ctx, tc.method, "http://"+addr+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		_, err = io.ReadAll(resp.Body) // ends only with the stream
		resp.Body.Close()
		cancel()
		if err != nil {
			t.Fatalf("%s %s: reading to the stream's end: %v", tc.method, tc.path, err)
		}
		got := resp.Header["Content-Length"]
		if len(got) != len(tc.clens) || (len(got) == 1 && got[0] != tc.clens[0]) {
			t.Errorf("%s %s: Content-Length fields %q, want %q", tc.method, tc.path, got, tc.clens)
		}
		if v := resp.Trailer.Get("X-T"); v != tc.trailer {
			t.Errorf("%s %s: trailer X-T %q, want %q", tc.method, tc.path, v, tc.trailer)
		}
	}
}

// A Content-Length the handler declared is sent once: not said again
// beside it when the handler returned with the whole body (0 included).
// Read from the frames themselves: x/net's client collapses repeated
// identical values into one.
func TestServerDeclaredLengthSentOnce(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		io.WriteString(w, strings.Repeat("x", n))
	})})
	rc := dialRaw(t, addr)
	for i, n := range []string{"0", "1", "10"} {
		id := uint32(2*i + 1)
		rc.headers(id, true, get("/?n="+n)...)
		f := rc.until("the response's HEADERS", func(f http2.Frame) bool {
			_, ok := f.(*http2.MetaHeadersFrame)
			return ok && f.Header().StreamID == id
		}).(*http2.MetaHeadersFrame)
		var got []string
		for _, hf := range f.Fields {
			if hf.Name == "content-length" {
				got = append(got, hf.Value)
			}
		}
		if len(got) != 1 || got[0] != n {
			t.Errorf("declared Content-Length %s: the HEADERS carry content-length %q, want it once", n, got)
		}
	}
}
