package h2

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Probes that held up (they pass).
func TestProbeHeldUp(t *testing.T) {
	ended := make(chan error, 4)
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, err := w.Write([]byte(strings.Repeat("x", 1<<20)))
			ended <- err
			return
		}
		echo(w, r)
	})})
	wait := func(what string) {
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the handler did not end", what)
		}
	}
	t.Run("window 0, client resets", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		rc.headers(1, true, get("/big")...)
		rc.until("header", status(1, "200"))
		rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		wait("reset")
	})
	t.Run("window 0, connection closed", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		rc.headers(1, true, get("/big")...)
		rc.until("header", status(1, "200"))
		rc.c.Close()
		wait("close")
	})
	t.Run("window to 0 then up, mid-stream", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
		rc.headers(1, true, get("/big")...)
		got := 0
		rc.until("100 bytes", func(f http2.Frame) bool {
			if d, ok := f.(*http2.DataFrame); ok {
				got += len(d.Data())
			}
			return got >= 100
		})
		rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		rc.fr.WriteWindowUpdate(1, 50) // window -100+50 = -50: nothing may come
		rc.fr.WriteWindowUpdate(0, 1<<30)
		rc.fr.WritePing(false, [8]byte{9})
		rc.until("ping ack", func(f http2.Frame) bool {
			if d, ok := f.(*http2.DataFrame); ok && len(d.Data()) > 0 {
				t.Fatalf("DATA of %d bytes in a negative window", len(d.Data()))
			}
			p, ok := f.(*http2.PingFrame)
			return ok && p.IsAck()
		})
		rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 21})
		rc.until("the rest", func(f http2.Frame) bool {
			if d, ok := f.(*http2.DataFrame); ok {
				got += len(d.Data())
			}
			return got == 1<<20
		})
		wait("window")
	})
	t.Run("DATA after END_STREAM", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/", "content-length", "1")
		rc.fr.WriteData(1, true, []byte("a"))
		rc.fr.WriteData(1, false, []byte("b"))
		rc.until("an end", func(f http2.Frame) bool {
			d, ok := f.(*http2.DataFrame)
			return rst(1, http2.ErrCodeStreamClosed)(f) || ok && d.StreamEnded() && string(d.Data()) == "a"
		})
	})
	t.Run("content-length +5", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, true, append(get("/"), "content-length", "+5")...)
		rc.until("RST", rst(1, http2.ErrCodeProtocol))
	})
	t.Run("WINDOW_UPDATE on a closed stream", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, true, get("/")...)
		rc.until("200", status(1, "200"))
		rc.fr.WriteWindowUpdate(1, 1000)
		rc.headers(3, true, get("/")...)
		rc.until("200", status(3, "200"))
	})
}
