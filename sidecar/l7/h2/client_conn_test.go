package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A connection that ends before the server's SETTINGS fails the request
// with the reason it ended: the connection error the client found (and
// sent as GOAWAY), or that the server closed it.
func TestClientSaysWhyItsNewConnectionEnded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(rs *rawConn) // after the client's preface, before any SETTINGS
		check  func(t *testing.T, err error)
	}{
		{"first frame a PING", func(rs *rawConn) {
			rs.fr.WritePing(false, [8]byte{1})
			acDrain(rs)
		}, func(t *testing.T, err error) {
			var ce connError
			if !errors.As(err, &ce) || ce.code != http2.ErrCodeProtocol {
				t.Errorf("the request failed with %v; want the connection error PROTOCOL_ERROR the client found", err)
			}
		}},
		{"a frame past the client's limit", func(rs *rawConn) {
			// A frame header announcing more than SETTINGS_MAX_FRAME_SIZE.
			rs.c.Write([]byte{0xff, 0xff, 0xff, byte(http2.FrameData), 0, 0, 0, 0, 1})
			acDrain(rs)
		}, func(t *testing.T, err error) {
			var ce connError
			if !errors.As(err, &ce) || ce.code != http2.ErrCodeFrameSize {
				t.Errorf("the request failed with %v; want the connection error FRAME_SIZE_ERROR", err)
			}
		}},
		{"closed", func(rs *rawConn) {
			// Half-closed, what the client sent read: an EOF, not a reset.
			rs.c.(*net.TCPConn).CloseWrite()
			acDrain(rs)
		}, func(t *testing.T, err error) {
			if !errors.Is(err, errServerGone) {
				t.Errorf("the request failed with %v; want %v", err, errServerGone)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := listen(t, func(c net.Conn) {
				var pre [len(ClientPreface)]byte
				if _, err := io.ReadFull(c, pre[:]); err != nil {
					return
				}
				rs := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
				rs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				tc.script(rs)
			})
			tr := newClient(t)
			ctx, cancel := context.WithTimeout(context.Background(), acGuard)
			defer cancel()
			resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
			if err == nil {
				resp.Body.Close()
				t.Fatal("a request on a connection that ended before the server's SETTINGS succeeded")
			}
			if ctx.Err() != nil {
				t.Fatalf("the request ended with its context: %v", err)
			}
			tc.check(t, err)
		})
	}
}

// Frames the server sends on a stream after it closed (its response
// ended, or it was reset) are ones in flight (RFC 9113 §5.1): the client
// ignores them and the connection goes on — the next request is served on
// it — where the same frames on a stream never opened are a connection
// error.
func TestClientIgnoresFramesOnItsClosedStreams(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame func(rs *rawConn, id uint32)
	}{
		{"WINDOW_UPDATE", func(rs *rawConn, id uint32) { rs.fr.WriteWindowUpdate(id, 1) }},
		{"RST_STREAM", func(rs *rawConn, id uint32) { rs.fr.WriteRSTStream(id, http2.ErrCodeCancel) }},
		{"DATA", func(rs *rawConn, id uint32) { rs.fr.WriteData(id, false, []byte("late")) }},
		{"HEADERS", func(rs *rawConn, id uint32) { acHeaders(rs, id, true, "x-late", "1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			goAway := make(chan http2.ErrCode, 1)
			addr, conns := acServe(t, func(rs *rawConn, _ int32) {
				for n := 0; ; n++ {
					f, err := acUntil(rs, func(f http2.Frame) bool {
						_, ga := f.(*http2.GoAwayFrame)
						return ga || isHeaders(f)
					})
					if err != nil {
						return
					}
					if g, ok := f.(*http2.GoAwayFrame); ok {
						goAway <- g.ErrCode
						return
					}
					id := f.Header().StreamID
					acHeaders(rs, id, true, ":status", "204")
					if n == 0 {
						tc.frame(rs, id)
					}
				}
			})
			tr := newClient(t)
			for i := range 2 {
				ctx, cancel := context.WithTimeout(context.Background(), acGuard)
				resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
				cancel()
				if err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
				resp.Body.Close()
				if resp.StatusCode != 204 {
					t.Fatalf("request %d: status %d", i+1, resp.StatusCode)
				}
			}
			select {
			case code := <-goAway:
				t.Errorf("the client sent GOAWAY %v", code)
			default:
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections, want the two requests on one", n)
			}
		})
	}
}

// The request's header fields go to the server as they are, lower-cased,
// but for those HTTP/2 carries otherwise or forbids (RFC 9113 §8.2.2,
// §8.3.1): Host (the :authority), Content-Length (said from the body),
// Trailer (said from req.Trailer), the connection-specific fields, and TE
// but for "trailers".
func TestClientSendsTheRequestsFields(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header http.Header
		want   []string // the regular fields, "name: value", sorted
	}{
		{"fields", http.Header{
			"X-A":               {"1", "2"},
			"Accept":            {"*/*"},
			"Host":              {"other.example"},
			"Content-Length":    {"99"},
			"Trailer":           {"X-Sum"},
			"Connection":        {"close"},
			"Keep-Alive":        {"timeout=5"},
			"Proxy-Connection":  {"keep-alive"},
			"Transfer-Encoding": {"chunked"},
			"Upgrade":           {"websocket"},
			"Te":                {"gzip", "trailers"},
		}, []string{"accept: */*", "te: trailers", "x-a: 1", "x-a: 2"}},
		{"TE without trailers", http.Header{"Te": {"gzip"}, "X-B": {"b"}}, []string{"x-b: b"}},
		{"no fields", http.Header{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := make(chan []string, 1)
			addr, _ := acServe(t, func(rs *rawConn, _ int32) {
				f, err := acUntil(rs, isHeaders)
				if err != nil {
					seen <- nil
					return
				}
				var got []string
				for _, hf := range f.(*http2.MetaHeadersFrame).RegularFields() {
					got = append(got, hf.Name+": "+hf.Value)
				}
				seen <- got
				acHeaders(rs, f.Header().StreamID, true, ":status", "204")
				acDrain(rs)
			})
			tr := newClient(t)
			ctx, cancel := context.WithTimeout(context.Background(), acGuard)
			defer cancel()
			req := newRequest(t, ctx, "GET", "http://"+addr+"/", nil)
			req.Header = tc.header
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := <-seen
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("the server got the fields %q, want %q", got, tc.want)
			}
		})
	}
}

// A response's head as the client takes it, each from a scripted server:
// up to maxInterim interim responses before the final one, a
// content-length said twice alike, and the ContentLength of a response
// ended with its HEADERS — 0, but for HEAD's (-1, unknown: a HEAD's
// response says nothing of the body), as x/net's transport says.
func TestClientTakesResponseHeads(t *testing.T) {
	for _, tc := range []struct {
		name    string
		method  string
		script  func(rs *rawConn, id uint32)
		status  int
		length  int64
		body    string
		interim int // Got1xxResponse calls
	}{
		{"maxInterim interim responses", "GET", func(rs *rawConn, id uint32) {
			for range maxInterim {
				acHeaders(rs, id, false, ":status", "103")
			}
			acHeaders(rs, id, true, ":status", "204")
		}, 204, 0, "", maxInterim},
		{"content-length twice, alike", "GET", func(rs *rawConn, id uint32) {
			acHeaders(rs, id, false, ":status", "200", "content-length", "5", "content-length", "5")
			rs.fr.WriteData(id, true, []byte("hello"))
		}, 200, 5, "hello", 0},
		{"ended with its HEADERS", "GET", func(rs *rawConn, id uint32) {
			acHeaders(rs, id, true, ":status", "200")
		}, 200, 0, "", 0},
		{"a HEAD's, ended with its HEADERS", "HEAD", func(rs *rawConn, id uint32) {
			acHeaders(rs, id, true, ":status", "200")
		}, 200, -1, "", 0},
		{"not ended with its HEADERS", "GET", func(rs *rawConn, id uint32) {
			acHeaders(rs, id, false, ":status", "200")
			rs.fr.WriteData(id, true, []byte("body"))
		}, 200, -1, "body", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := acServe(t, func(rs *rawConn, _ int32) {
				f, err := acUntil(rs, isHeaders)
				if err != nil {
					return
				}
				tc.script(rs, f.Header().StreamID)
				acDrain(rs)
			})
			tr := newClient(t)
			interim := 0
			ctx, cancel := context.WithTimeout(context.Background(), acGuard)
			defer cancel()
			ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
				interim++
				return nil
			}})
			resp, err := roundTripGuarded(t, tr, newRequest(t, ctx, tc.method, "http://"+addr+"/", nil))
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if resp.StatusCode != tc.status || resp.ContentLength != tc.length || body != tc.body || interim != tc.interim {
				t.Errorf("status %d, ContentLength %d, body %q after %d interim responses; want %d, %d, %q after %d",
					resp.StatusCode, resp.ContentLength, body, interim, tc.status, tc.length, tc.body, tc.interim)
			}
		})
	}
}

// roundTripGuarded is tr.RoundTrip(req), failing the test if it does not
// return within acGuard: the hang guard for a stream nothing ends (its
// context's end included).
func roundTripGuarded(t *testing.T, tr *Transport, req *http.Request) (*http.Response, error) {
	t.Helper()
	type result struct {
		resp *http.Response
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		ch <- result{resp, err}
	}()
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-time.After(acGuard):
		t.Fatalf("RoundTrip %s %s never returned", req.Method, req.URL)
		return nil, nil
	}
}

// readAllGuarded is readAll, failing the test if the body does not end
// within acGuard (a response whose end never comes to its reader); a
// read error is appended to what was read.
func readAllGuarded(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := readGuarded(t, resp)
	if err != nil {
		b = append(b, "; error: "+err.Error()...)
	}
	return string(b)
}

// readGuarded reads the body to its end and closes it, failing the test
// if the end does not come within acGuard.
func readGuarded(t *testing.T, resp *http.Response) ([]byte, error) {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(resp.Body)
		ch <- result{b, err}
	}()
	select {
	case r := <-ch:
		resp.Body.Close()
		return r.b, r.err
	case <-time.After(acGuard):
		resp.Body.Close()
		t.Fatal("the response body never ended")
		return nil, nil
	}
}

// A response without content (a HEAD's, a 304) that is not ended with
// its HEADERS may end with an empty DATA; DATA with bytes in it is a
// malformed response (RFC 9110 §6.4.1, RFC 9113 §8.1.1): the client
// resets the stream with PROTOCOL_ERROR.
func TestClientResetsDataInAResponseWithoutContent(t *testing.T) {
	for _, tc := range []struct {
		name, method, status string
		data                 string
		want                 http2.ErrCode // the RST_STREAM, or 0 for none
	}{
		{"HEAD", "HEAD", "200", "x", http2.ErrCodeProtocol},
		{"304", "GET", "304", "x", http2.ErrCodeProtocol},
		{"304 ended by an empty DATA", "GET", "304", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan error, 1)
			addr, _ := acServe(t, func(rs *rawConn, _ int32) {
				f, err := acUntil(rs, isHeaders)
				if err != nil {
					got <- err
					return
				}
				id := f.Header().StreamID
				acHeaders(rs, id, false, ":status", tc.status)
				rs.fr.WriteData(id, true, []byte(tc.data))
				rs.fr.WritePing(false, [8]byte{9})
				f, err = acUntil(rs, func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok || isPingAck(f) })
				switch {
				case err != nil:
				case isPingAck(f) && tc.want != 0:
					err = fmt.Errorf("no RST_STREAM %v", tc.want)
				case !isPingAck(f) && f.(*http2.RSTStreamFrame).ErrCode != tc.want:
					err = fmt.Errorf("RST_STREAM %v, want %v", f.(*http2.RSTStreamFrame).ErrCode, tc.want)
				}
				got <- err
				acDrain(rs)
			})
			tr := newClient(t)
			ctx, cancel := context.WithTimeout(context.Background(), acGuard)
			defer cancel()
			resp, err := tr.RoundTrip(newRequest(t, ctx, tc.method, "http://"+addr+"/", nil))
			if err != nil {
				t.Fatal(err)
			}
			if body := readAll(t, resp); body != "" || resp.Status[:3] != tc.status {
				t.Errorf("%s, body %q; want %s, none", resp.Status, body, tc.status)
			}
			if err := <-got; err != nil {
				t.Errorf("the server: %v", err)
			}
		})
	}
}

// A stream error ends the response's reads at once: the body's next Read
// fails with it, the DATA received before and not yet read dropped (a
// response that ended whole is read to its end).
func TestClientStreamErrorEndsReadsAtOnce(t *testing.T) {
	reset := make(chan error, 1)
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			reset <- err
			return
		}
		id := f.Header().StreamID
		acHeaders(rs, id, false, ":status", "200", "content-length", "5")
		rs.fr.WriteData(id, false, []byte("abc"))
		rs.fr.WriteData(id, true, []byte("defgh")) // past the content-length
		_, err = acUntil(rs, func(f http2.Frame) bool { r, ok := f.(*http2.RSTStreamFrame); return ok && r.StreamID == id })
		reset <- err
		acDrain(rs)
	})
	tr := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), acGuard)
	defer cancel()
	resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := <-reset; err != nil {
		t.Fatalf("the server saw no RST_STREAM: %v", err)
	}
	n, err := resp.Body.Read(make([]byte, 10))
	if n != 0 || err == nil || err == io.EOF {
		t.Errorf("the first Read after the stream's error: %d bytes, %v; want 0 and the error", n, err)
	}
}

// Trailers the response did not declare (no Trailer field) are the
// response's too, in resp.Trailer once the body is read to its end, as
// x/net's transport gives them.
func TestClientTakesUndeclaredTrailers(t *testing.T) {
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			return
		}
		id := f.Header().StreamID
		acHeaders(rs, id, false, ":status", "200")
		rs.fr.WriteData(id, false, []byte("body"))
		acHeaders(rs, id, true, "x-t", "1")
		acDrain(rs)
	})
	tr := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), acGuard)
	defer cancel()
	resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if body := readAllGuarded(t, resp); body != "body" || resp.Trailer.Get("X-T") != "1" {
		t.Errorf("body %q, trailers %v; want body, X-T: 1", body, resp.Trailer)
	}
}

// A response body's Read with nothing received waits, parked, for DATA
// (or the end): it does not return 0 bytes and no error.
func TestClientBodyReadWaits(t *testing.T) {
	send := make(chan struct{})
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			return
		}
		id := f.Header().StreamID
		acHeaders(rs, id, false, ":status", "200")
		<-send
		rs.fr.WriteData(id, true, []byte("x"))
		acDrain(rs)
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(send) }) })
	tr := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), acGuard)
	defer cancel()
	resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	type result struct {
		n   int
		err error
	}
	read := make(chan result, 1)
	p := make([]byte, 10)
	go func() {
		n, err := resp.Body.Read(p)
		read <- result{n, err}
	}()
	deadline := time.Now().Add(acGuard)
	for !parkedIn("clientBody.Read") {
		select {
		case r := <-read:
			t.Fatalf("Read with nothing received returned %d bytes, %v; want it to wait", r.n, r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the body's Read is not parked waiting for DATA")
		}
		time.Sleep(10 * time.Millisecond)
	}
	once.Do(func() { close(send) })
	if r := <-read; r.n != 1 || p[0] != 'x' || (r.err != nil && r.err != io.EOF) {
		t.Errorf("Read %d bytes %q, %v; want x", r.n, p[:r.n], r.err)
	}
}
