package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/net/http2/hpack"
)

// TestAttackH2CUpgradeSmuggling: the upstream is an honest virtual-hosting
// server (net/http with golang.org/x/net/http2/h2c, which serves the
// HTTP/1.1 "Upgrade: h2c" of RFC 7540 section 3.2) that routes by Host.
// The app asks an allowed host for the upgrade; after the 101 the sidecar
// tunnels the rest of the connection as opaque bytes that belong to that
// request. The app then opens an HTTP/2 stream with :authority
// evil.example.com on the same connection. No request for the denied host
// may reach the server.
func TestAttackH2CUpgradeSmuggling(t *testing.T) {
	for _, mode := range []string{"Enforce", "Audit"} {
		t.Run(mode, func(t *testing.T) {
			hs := startHostServer(t, func(h http.Handler) http.Handler { return h2c.NewHandler(h, &http2.Server{}) })
			pd, events := reqPod(t, mode, false, hs.asReq())
			c := pd.dialOutbound(hs.addr())
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			// SETTINGS_MAX_CONCURRENT_STREAMS = 100, base64url.
			upgrade := "GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n"
			if _, err := io.WriteString(c, upgrade); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("upgrade response: %v", err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Logf("the sidecar or server refused the upgrade: %d (no tunnel, no bypass)", resp.StatusCode)
				return
			}
			// HTTP/2 from here: preface, SETTINGS, then stream 3 for the
			// denied host (stream 1 is the upgraded request).
			if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
				t.Fatal(err)
			}
			fr := http2.NewFramer(c, br)
			if err := fr.WriteSettings(); err != nil {
				t.Fatal(err)
			}
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "evil.example.com"}, {":path", "/"}} {
				_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
				t.Fatal(err)
			}
			var evilBody string
			for evilBody == "" {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Logf("reading HTTP/2 frames: %v", err)
					break
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if !f.IsAck() {
						_ = fr.WriteSettingsAck()
					}
				case *http2.DataFrame:
					if f.StreamID == 3 {
						evilBody = string(f.Data())
					}
				}
			}
			seen := hs.requests()
			t.Logf("server served %q; stream 3 answered %q", seen, evilBody)
			_ = c.Close()
			// The connection's audit trail.
			var trail []string
			for settle(2*time.Second, func() bool { return len(events) > 0 }) {
				e := <-events
				trail = append(trail, e.Host+" "+e.Decision+" rule="+e.Rule+" reason="+e.Reason)
				if !settle(300*time.Millisecond, func() bool { return len(events) > 0 }) {
					break
				}
			}
			t.Logf("audit trail: %q", trail)
			if sawHost(seen, "evil.example.com") {
				t.Errorf("BYPASS (%s): the server served a request for evil.example.com over the h2c tunnel (%q); the audit trail has %q",
					mode, seen, trail)
			}
			if mode == "Audit" && !strings.Contains(strings.Join(trail, "\n"), "evil.example.com") {
				t.Errorf("UNAUDITED (Audit): the request for evil.example.com is not in the audit trail %q", trail)
			}
		})
	}
}
