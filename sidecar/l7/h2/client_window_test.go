package h2

// The client's flow-control windows at their edges (session 31, from the
// mutants of client.go that lived): what it announces, what it takes.

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
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
