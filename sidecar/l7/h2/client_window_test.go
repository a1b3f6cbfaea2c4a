package h2

// The client's flow-control windows at their edges (session 31, from the
// mutants of client.go that lived): what it announces, what it takes.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestClientAnnouncesItsWindows: the client's SETTINGS and first
// WINDOW_UPDATE say the receive windows it was given — the stream's in
// SETTINGS_INITIAL_WINDOW_SIZE, the connection's as an increment over the
// 65,535 bytes every connection starts with, and no increment at all for
// a connection window of 65,535 (an increment of 0 is a PROTOCOL_ERROR).
func TestClientAnnouncesItsWindows(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		streamWin, connWin   uint32
		wantStream, wantConn uint32 // SETTINGS_INITIAL_WINDOW_SIZE, the WINDOW_UPDATE(0)s before the request
	}{
		{"defaults", 0, 0, DefaultClientStreamWindow, DefaultClientConnWindow - 65535},
		{"set", 100000, 200000, 100000, 200000 - 65535},
		{"a connection window of 65535", 65535, 65535, 65535, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type seen struct {
				stream, conn uint32
				err          error
			}
			got := make(chan seen, 1)
			addr, _ := acServe(t, func(rs *rawConn, _ int32) {
				var s seen
				f, err := acUntil(rs, func(f http2.Frame) bool {
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
							s.stream = v
						}
					case *http2.WindowUpdateFrame:
						if f.StreamID == 0 {
							s.conn += f.Increment
						}
					}
					return isHeaders(f)
				})
				s.err = err
				got <- s
				if err == nil {
					acHeaders(rs, f.Header().StreamID, true, ":status", "204")
				}
				acDrain(rs)
			})
			tr := acClient(t, nil)
			tr.StreamWindow, tr.ConnWindow = tc.streamWin, tc.connWin
			resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			s := <-got
			if s.err != nil || s.stream != tc.wantStream || s.conn != tc.wantConn {
				t.Errorf("SETTINGS_INITIAL_WINDOW_SIZE %d, WINDOW_UPDATE(0) %d (%v); want %d, %d", s.stream, s.conn, s.err, tc.wantStream, tc.wantConn)
			}
		})
	}
}

// TestClientTakesWindowsUpToTheLimit: a server may open a send window to
// exactly 2^31-1 (RFC 9113 §6.9.1: only beyond is an error) — the
// connection's and a stream's by WINDOW_UPDATE, a stream's by
// SETTINGS_INITIAL_WINDOW_SIZE (§6.9.2) — and the request goes on.
func TestClientTakesWindowsUpToTheLimit(t *testing.T) {
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			return
		}
		id := f.Header().StreamID
		rs.fr.WriteWindowUpdate(0, maxStreamID-65535)
		rs.fr.WriteWindowUpdate(id, maxStreamID-65535)
		// The same initial size again: every stream's window is
		// recomputed, and stays at 2^31-1.
		rs.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
		if _, err := acUntil(rs, func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() }); err != nil {
			return
		}
		acHeaders(rs, id, true, ":status", "204")
		acDrain(rs)
	})
	tr := acClient(t, nil)
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatalf("%v; want the response (windows of exactly 2^31-1 are allowed)", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("status %d", resp.StatusCode)
	}
}

// TestClientGivesWindowBackAtHalf: the client gives back what the caller
// read once half a window is — a stream's WINDOW_UPDATE when half the
// stream's window was read, the connection's when half the connection's
// was — not later: a server that sends a window's worth and waits must
// not wait for more reads than that.
func TestClientGivesWindowBackAtHalf(t *testing.T) {
	const streamWin, connWin = 65536, 131070
	got := make(chan error, 1)
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			got <- err
			return
		}
		id := f.Header().StreamID
		acHeaders(rs, id, false, ":status", "200")
		body := bytes.Repeat([]byte("w"), connWin/2) // half the connection's window, more than half the stream's
		for off := 0; off < len(body); off += 16384 {
			rs.fr.WriteData(id, false, body[off:min(off+16384, len(body))])
		}
		var stream, conn bool
		_, err = acUntil(rs, func(f http2.Frame) bool {
			if w, ok := f.(*http2.WindowUpdateFrame); ok {
				stream = stream || w.StreamID == id && w.Increment == streamWin/2
				conn = conn || w.StreamID == 0 && w.Increment == connWin/2
			}
			return stream && conn
		})
		got <- err
		rs.fr.WriteData(id, true, nil)
		acDrain(rs)
	})
	tr := acClient(t, nil)
	tr.StreamWindow, tr.ConnWindow = streamWin, connWin
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Exactly half the stream's window, then the rest: half the
	// connection's.
	for _, n := range []int{streamWin / 2, connWin/2 - streamWin/2} {
		if _, err := io.ReadFull(resp.Body, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-got; err != nil {
		t.Fatalf("the server waited for WINDOW_UPDATE(%d, %d) and WINDOW_UPDATE(0, %d): %v", 1, streamWin/2, connWin/2, err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Error(err)
	}
}

// TestClientWaitsForTheWindow: a request body that used the server's
// window, the stream's or the connection's (down to exactly 0), waits for
// a WINDOW_UPDATE — its writer parked until one comes, not spinning — and
// then the rest is sent; a body's end that comes once the window is used
// up goes at once (an empty DATA with END_STREAM takes no window).
func TestClientWaitsForTheWindow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		initial uint32 // the server's SETTINGS_INITIAL_WINDOW_SIZE
		size    int    // the request's body
		first   int    // what the windows let through
		body    string // "read": sent as it is read, its end a read of its own; "eof": its last bytes read with io.EOF; "whole": of a declared length (read whole first when it fits bufferSize)
	}{
		{"the stream's window", 10, 100, 10, "read"},
		{"the connection's window", 1 << 20, 65535 + 100, 65535, "read"},
		{"the end after the window is used", 10, 10, 10, "read"},
		{"the stream's window, the end with the last bytes", 10, 100, 10, "eof"},
		{"the stream's window, a body read whole", 10, 100, 10, "whole"},
		{"the connection's window, a body of a declared length", 1 << 20, 65535 + 100, 65535, "whole"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			firstPart := make(chan int, 1)
			more := make(chan struct{})
			done := make(chan error, 1)
			var once sync.Once
			letGo := func() { once.Do(func() { close(more) }) }
			addr, _ := listen(t, func(c net.Conn) {
				var pre [len(ClientPreface)]byte
				if _, err := io.ReadFull(c, pre[:]); err != nil {
					done <- err
					return
				}
				rs := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
				rs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				rs.he = hpack.NewEncoder(&rs.hb)
				rs.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: tc.initial})
				h, err := acUntil(rs, isHeaders)
				if err != nil {
					done <- err
					return
				}
				id := h.Header().StreamID
				got, ended := 0, false
				data := func() error {
					f, err := acUntil(rs, func(f http2.Frame) bool { d, ok := f.(*http2.DataFrame); return ok && d.StreamID == id })
					if err != nil {
						return err
					}
					got += len(f.(*http2.DataFrame).Data())
					ended = f.(*http2.DataFrame).StreamEnded()
					return nil
				}
				for got < tc.first {
					if err := data(); err != nil {
						done <- err
						return
					}
				}
				firstPart <- got
				if got < tc.size {
					<-more
					rs.fr.WriteWindowUpdate(0, uint32(tc.size))
					rs.fr.WriteWindowUpdate(id, uint32(tc.size))
				}
				for !ended {
					if err := data(); err != nil {
						done <- fmt.Errorf("after %d bytes, waiting for the rest and END_STREAM: %w", got, err)
						return
					}
				}
				if got != tc.size {
					done <- fmt.Errorf("%d bytes of DATA, want %d", got, tc.size)
				} else {
					done <- nil
				}
				acHeaders(rs, id, true, ":status", "204")
				acDrain(rs)
			})
			t.Cleanup(letGo)
			tr := newClient(t)
			ctx, cancel := context.WithTimeout(context.Background(), acGuard)
			defer cancel()
			var body io.Reader = strings.NewReader(strings.Repeat("x", tc.size))
			if tc.body == "eof" {
				body = iotest.DataErrReader(body)
			}
			req := newRequest(t, ctx, "POST", "http://"+addr+"/", body)
			if tc.body != "whole" {
				req.ContentLength = -1 // sent as it is read
			}
			type result struct {
				resp *http.Response
				err  error
			}
			rt := make(chan result, 1)
			go func() {
				resp, err := tr.RoundTrip(req)
				rt <- result{resp, err}
			}()
			select {
			case got := <-firstPart:
				if got != tc.first {
					t.Fatalf("%d bytes of DATA, the windows allowing %d", got, tc.first)
				}
			case err := <-done:
				t.Fatalf("the server: %v", err)
			}
			if tc.first < tc.size {
				deadline := time.Now().Add(acGuard)
				for !parkedIn("(*clientStream).sendData") {
					if time.Now().After(deadline) {
						t.Fatal("the request body's writer is not parked waiting for the window")
					}
					time.Sleep(10 * time.Millisecond)
				}
				letGo()
			}
			if err := <-done; err != nil {
				t.Errorf("the server: %v", err)
			}
			r := <-rt
			if r.err != nil {
				t.Fatal(r.err)
			}
			r.resp.Body.Close()
		})
	}
}

// TestClientStopsSending: a request body's writer waiting for the window
// when the server resets the stream, or ends its response (the client
// then resets the stream: the rest of the request is not wanted), stops —
// its goroutine ends, sending nothing more — and RoundTrip fails with the
// reset, or returns the response.
func TestClientStopsSending(t *testing.T) {
	for _, tc := range []struct {
		name   string
		end    func(rs *rawConn, id uint32)
		status int // the response RoundTrip returns, 0: it fails
	}{
		{"RST_STREAM", func(rs *rawConn, id uint32) { rs.fr.WriteRSTStream(id, http2.ErrCodeInternal) }, 0},
		{"the response's end", func(rs *rawConn, id uint32) { acHeaders(rs, id, true, ":status", "200") }, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after := make(chan error, 1)
			addr, _ := listen(t, func(c net.Conn) {
				var pre [len(ClientPreface)]byte
				if _, err := io.ReadFull(c, pre[:]); err != nil {
					after <- err
					return
				}
				rs := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
				rs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				rs.he = hpack.NewEncoder(&rs.hb)
				rs.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
				h, err := acUntil(rs, isHeaders)
				if err != nil {
					after <- err
					return
				}
				id := h.Header().StreamID
				for got := 0; got < 10; {
					f, err := acUntil(rs, func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
					if err != nil {
						after <- err
						return
					}
					got += len(f.(*http2.DataFrame).Data())
				}
				tc.end(rs, id)
				// The window opens: a writer that went on would send now.
				rs.fr.WriteWindowUpdate(0, 1000)
				rs.fr.WriteWindowUpdate(id, 1000)
				rs.fr.WritePing(false, [8]byte{7})
				f, err := acUntil(rs, func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok || isPingAck(f) })
				if err == nil {
					if d, ok := f.(*http2.DataFrame); ok {
						err = fmt.Errorf("DATA of %d bytes after the stream's end", len(d.Data()))
					}
				}
				after <- err
				acDrain(rs)
			})
			tr := newClient(t)
			ctx, cancel := context.WithTimeout(context.Background(), acGuard)
			defer cancel()
			req := newRequest(t, ctx, "POST", "http://"+addr+"/", strings.NewReader(strings.Repeat("x", 100)))
			req.ContentLength = -1
			resp, err := tr.RoundTrip(req)
			switch {
			case err == nil && (tc.status == 0 || resp.StatusCode != tc.status):
				resp.Body.Close()
				t.Fatalf("the request: %s, want %d", resp.Status, tc.status)
			case err == nil:
				resp.Body.Close()
			case tc.status != 0 || ctx.Err() != nil:
				t.Fatalf("the request: %v", err)
			}
			if err := <-after; err != nil {
				t.Errorf("the server: %v", err)
			}
			deadline := time.Now().Add(acGuard)
			for running("(*clientStream).writeBody") {
				if time.Now().After(deadline) {
					t.Fatal("the request body's writer goes on after the stream's end")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// running says whether a goroutine of this process is inside the h2
// function fn.
func running(fn string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return bytes.Contains(buf, []byte("/sidecar/l7/h2."+fn+"("))
}

// TestClientGivesPaddingBack: a response's DATA padding is never read, so
// it goes back to the windows as it arrives: padding beyond the
// connection's window, with a byte of data in each frame, is taken
// without a flow-control error, though the server never waits for a
// WINDOW_UPDATE.
func TestClientGivesPaddingBack(t *testing.T) {
	const frames = 300 // 300 × (1 + 1 + 255) bytes of window: more than 65,535
	served := make(chan error, 1)
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			served <- err
			return
		}
		id := f.Header().StreamID
		acHeaders(rs, id, false, ":status", "200")
		for range frames {
			rs.fr.WriteDataPadded(id, false, []byte("x"), make([]byte, 255))
		}
		rs.fr.WriteData(id, true, nil)
		rs.fr.WritePing(false, [8]byte{3})
		f, err = acUntil(rs, func(f http2.Frame) bool { _, ga := f.(*http2.GoAwayFrame); return ga || isPingAck(f) })
		if err == nil && !isPingAck(f) {
			err = fmt.Errorf("GOAWAY %v", f.(*http2.GoAwayFrame).ErrCode)
		}
		served <- err
		acDrain(rs)
	})
	tr := newClient(t)
	tr.ConnWindow, tr.StreamWindow = 65535, 1<<20
	ctx, cancel := context.WithTimeout(context.Background(), acGuard)
	defer cancel()
	resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if body := readAllGuarded(t, resp); body != strings.Repeat("x", frames) {
		t.Errorf("a body of %d bytes (%.40q), want %d", len(body), body, frames)
	}
	if err := <-served; err != nil {
		t.Errorf("the server: %v", err)
	}
}

// TestClientGivesBackWhatAnAbortDropped: DATA a stream received and its
// caller never read, dropped when the stream fails or the caller closes
// the body, goes back to the connection's window: the next response on
// the connection may use the whole window again without a flow-control
// error.
func TestClientGivesBackWhatAnAbortDropped(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close bool // the caller closes the body, else the stream fails
	}{{"a stream error", false}, {"the body closed", true}} {
		t.Run(tc.name, func(t *testing.T) {
			served := make(chan error, 1)
			addr, conns := acServe(t, func(rs *rawConn, _ int32) {
				f, err := acUntil(rs, isHeaders)
				if err != nil {
					served <- err
					return
				}
				id := f.Header().StreamID
				acHeaders(rs, id, false, ":status", "200", "content-length", "40001")
				rs.fr.WriteData(id, false, make([]byte, 40000))
				if !tc.close {
					rs.fr.WriteData(id, false, make([]byte, 2)) // past the content-length: the stream fails
				}
				// The RST_STREAM and the second request, in either order.
				var next uint32
				for reset := false; !reset || next == 0; {
					f, err := acUntil(rs, func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok || isHeaders(f) })
					if err != nil {
						served <- err
						return
					}
					if isHeaders(f) {
						next = f.Header().StreamID
					} else {
						reset = reset || f.Header().StreamID == id
					}
				}
				acHeaders(rs, next, false, ":status", "200")
				rs.fr.WriteData(next, true, make([]byte, 40000))
				served <- nil
				acDrain(rs)
			})
			tr := newClient(t)
			tr.ConnWindow, tr.StreamWindow = 65535, 1<<20
			ctx, cancel := context.WithTimeout(context.Background(), acGuard)
			defer cancel()
			resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close() // never read: its DATA is dropped
			if tc.close {
				if !acWaitFor(func() bool { n, _ := resp.Body.(BufferedBody).Buffered(); return n == 40000 }) {
					t.Fatal("the first response's DATA never arrived")
				}
				resp.Body.Close()
			}
			resp2, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/2", nil))
			if err != nil {
				t.Fatal(err)
			}
			if b, err := readGuarded(t, resp2); len(b) != 40000 || err != nil {
				t.Errorf("the second response: %d bytes, %v; want 40000", len(b), err)
			}
			if err := <-served; err != nil {
				t.Errorf("the server: %v", err)
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}
