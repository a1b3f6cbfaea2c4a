package h2

import (
	"io"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
)

// quietUntil reads frames until match, failing on a GOAWAY or
// RST_STREAM that match does not take: nothing may end the connection or
// a stream before.
func (rc *rawConn) quietUntil(what string, match func(http2.Frame) bool) http2.Frame {
	rc.t.Helper()
	return rc.until(what, func(f http2.Frame) bool {
		if match(f) {
			return true
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			rc.t.Fatalf("waiting for %s: GOAWAY %v", what, f.ErrCode)
		case *http2.RSTStreamFrame:
			rc.t.Fatalf("waiting for %s: RST_STREAM %v on %d", what, f.ErrCode, f.StreamID)
		}
		return false
	})
}

func pingAck(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() }

// A change of SETTINGS_INITIAL_WINDOW_SIZE moves an open stream's window
// by the difference (RFC 9113 §6.9.2): from 10 to 30 lets 20 more bytes
// go, not 30 or 40.
func TestServeInitialWindowSizeChange(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 100))
	})})
	rc := dialRaw(t, addr)
	rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	rc.headers(1, true, get("/")...)
	got := 0
	data := func(want int) {
		rc.t.Helper()
		for got < want {
			f := rc.quietUntil("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
			got += len(f.(*http2.DataFrame).Data())
		}
		if got != want {
			t.Fatalf("%d bytes of DATA, the window allowing %d", got, want)
		}
	}
	data(10)
	rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 30})
	data(30)
	rc.fr.WriteWindowUpdate(1, 70)
	data(100)
}

// A stream's window may reach 2^31-1 through SETTINGS_INITIAL_WINDOW_SIZE,
// not pass it: one past is a connection error (RFC 9113 §6.9.2).
func TestServeInitialWindowSizeBound(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // the stream stays open, its response unsent
	})})
	for _, tc := range []struct {
		name string
		more uint32 // added to the stream's window first
		fail bool
	}{{"to 2^31-1", 0, false}, {"one past", 1, true}} {
		rc := dialRaw(t, addr)
		rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/", "content-length", "1")
		if tc.more > 0 {
			rc.fr.WriteWindowUpdate(1, tc.more)
		}
		rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		if tc.fail {
			rc.until("GOAWAY(FLOW_CONTROL_ERROR)", goAway(http2.ErrCodeFlowControl))
			continue
		}
		rc.fr.WritePing(false, [8]byte{1})
		rc.quietUntil("PING ACK", pingAck)
	}
}

// The connection's send window may reach 2^31-1, not pass it.
func TestServeConnectionWindowBound(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo)})
	rc := dialRaw(t, addr)
	rc.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	rc.fr.WritePing(false, [8]byte{1})
	rc.quietUntil("PING ACK", pingAck)
	rc.fr.WriteWindowUpdate(0, 1)
	rc.until("GOAWAY(FLOW_CONTROL_ERROR)", goAway(http2.ErrCodeFlowControl))
}

// A peer is sent away after max(2×MaxConcurrentStreams, 100) refusals
// since a stream last completed, not before: 120 for 60.
func TestServeRefusalBound(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	addr := serve(t, &Server{MaxConcurrentStreams: 60, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	})})
	rc := dialRaw(t, addr)
	id := uint32(1)
	for range 60 {
		rc.headers(id, true, get("/")...)
		id += 2
	}
	for range 120 {
		rc.headers(id, true, get("/")...)
		rc.quietUntil("REFUSED_STREAM", rst(id, http2.ErrCodeRefusedStream))
		id += 2
	}
	rc.headers(id, true, get("/")...)
	rc.until("GOAWAY(ENHANCE_YOUR_CALM)", goAway(http2.ErrCodeEnhanceYourCalm))
}

// The connection's receive window is given back once half of it was
// consumed, not before (RFC 9113 leaves when to the receiver; this is
// the server's rule): 65,535 bytes read of a 131,072-byte window send
// nothing, one more sends 65,536.
func TestServeGivesBackHalfTheConnectionWindow(t *testing.T) {
	addr := serve(t, &Server{ConnWindow: 1 << 17, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
	})})
	rc := dialRaw(t, addr)
	rc.quietUntil("the initial connection WINDOW_UPDATE", func(f http2.Frame) bool {
		wu, ok := f.(*http2.WindowUpdateFrame)
		return ok && wu.StreamID == 0
	})
	post := func(id uint32, n int) (inc uint32) {
		rc.headers(id, false, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/")
		for sent := 0; sent < n; {
			m := min(n-sent, 16384)
			rc.fr.WriteData(id, sent+m == n, make([]byte, m))
			sent += m
		}
		rc.quietUntil("the response", func(f http2.Frame) bool {
			if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == 0 {
				inc += wu.Increment
			}
			return status(id, "200")(f)
		})
		return inc
	}
	if inc := post(1, 65535); inc != 0 {
		t.Errorf("65,535 bytes consumed of 131,072: WINDOW_UPDATE(0, %d), want none yet", inc)
	}
	if inc := post(3, 1); inc != 65536 {
		t.Errorf("half consumed: WINDOW_UPDATE(0, %d), want 65536", inc)
	}
}
