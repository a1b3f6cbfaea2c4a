package l7

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"
)

// flushCounter is a ResponseWriter that counts its Flushes.
type flushCounter struct {
	*httptest.ResponseRecorder
	flushes int
}

func (f *flushCounter) Flush() { f.flushes++ }

// heldBody is a response body whose reads all return at once: what weft's
// HTTP/2 client says (Buffered) of a response that arrived whole.
type heldBody struct {
	io.Reader
	end bool // Buffered reports the body's end
}

func (b *heldBody) Buffered() (int, bool) { return 0, b.end }
func (*heldBody) Close() error            { return nil }

// A streamed response (no length: gRPC) is flushed at once and after each
// write, unless what follows has arrived (the transport's body says so):
// then its head, body and end leave together, with the handler's return.
func TestRelayFlushesOnlyWhatWaits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		arrived bool
		want    int
	}{
		{"the rest has arrived", true, 0},
		{"the rest may wait", false, 2}, // the head, then the body's one read
	} {
		p := &relay{
			rewrite: func(_, out *http.Request) { rewriteFor(out) },
			roundTrip: func(out *http.Request, _ func(int, textproto.MIMEHeader) error) (*http.Response, error) {
				return &http.Response{StatusCode: 200, ContentLength: -1, Header: http.Header{"Content-Type": {"application/grpc"}},
					Trailer: http.Header{"Grpc-Status": {"0"}}, Body: &heldBody{Reader: strings.NewReader("message"), end: tc.arrived}}, nil
			},
			fail: func(w http.ResponseWriter, _ *http.Request, err error) { t.Errorf("%s: %v", tc.name, err) },
		}
		w := &flushCounter{ResponseRecorder: httptest.NewRecorder()}
		in := httptest.NewRequest("POST", "http://app.demo/svc/Method", strings.NewReader("req"))
		in.ProtoMajor, in.ProtoMinor, in.Proto = 2, 0, "HTTP/2.0"
		p.serve(w, in)
		if w.flushes != tc.want || w.Body.String() != "message" {
			t.Errorf("%s: %d flushes, body %q; want %d, message", tc.name, w.flushes, w.Body.String(), tc.want)
		}
	}
}

// bufSrc is a request body source that says what it holds.
type bufSrc struct {
	io.Reader
	n   int
	end bool
}

func (b *bufSrc) Buffered() (int, bool) { return b.n, b.end }
func (*bufSrc) Close() error            { return nil }

// What a body holds is told through the relay's and the forwarder's
// wrappers to the transport (h2.BufferedBody), and only while true.
func TestBufferedPassesThrough(t *testing.T) {
	src := &bufSrc{Reader: strings.NewReader("hello"), n: 5, end: true}
	rb := &reqBody{src: src}
	if n, end := rb.Buffered(); n != 5 || !end {
		t.Errorf("reqBody: %d, %v; want 5, true", n, end)
	}
	rb.first = func() {}
	if n, end := rb.Buffered(); n != 0 || end {
		t.Errorf("reqBody before a first read that does something: %d, %v; want 0, false", n, end)
	}
	rb.first = nil
	rb.closed.Store(true)
	if n, end := rb.Buffered(); n != 0 || end {
		t.Errorf("reqBody after the relay returned: %d, %v; want 0, false", n, end)
	}
	if n, end := (&reqBody{src: strings.NewReader("x")}).Buffered(); n != 0 || end {
		t.Errorf("reqBody of a source that cannot tell: %d, %v", n, end)
	}

	rp := newReplayBody(src, RetryBodyLimit)
	v, _ := rp.view()
	bv := v.(*bodyView)
	if n, end := bv.Buffered(); n != 5 || !end {
		t.Errorf("a first view: %d, %v; want 5, true", n, end)
	}
	rp2 := newReplayBody(src, RetryBodyLimit)
	v1, _ := rp2.view()
	io.ReadFull(v1, make([]byte, 2))
	src.n = 3
	if n, end := v1.(*bodyView).Buffered(); n != 3 || !end {
		t.Errorf("a view part read: %d, %v; want 3, true", n, end)
	}
	v2, _ := rp2.view() // a retry: the 2 bytes recorded, then the source's 3
	if n, end := v2.(*bodyView).Buffered(); n != 5 || !end {
		t.Errorf("a retry's view: %d, %v; want 5, true", n, end)
	}
	if n, end := v1.(*bodyView).Buffered(); n != 0 || end {
		t.Errorf("a stale view: %d, %v; want 0, false", n, end)
	}
	io.ReadAll(v2)
	if n, end := v2.(*bodyView).Buffered(); n != 0 || !end {
		t.Errorf("a view read to its end: %d, %v; want 0, true", n, end)
	}

	fb := &finishBody{ReadCloser: &heldBody{Reader: strings.NewReader(""), end: true}}
	if _, end := fb.Buffered(); !end {
		t.Error("finishBody hides its body's end")
	}
	if n, end := (&finishBody{ReadCloser: io.NopCloser(strings.NewReader("x"))}).Buffered(); n != 0 || end {
		t.Errorf("finishBody of a body that cannot tell: %d, %v", n, end)
	}
}
