package h2

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

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
