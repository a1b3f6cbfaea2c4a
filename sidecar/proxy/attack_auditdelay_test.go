package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAttackAuditHeldBack: under an Audit-mode policy a request for
// evil.example.com is forwarded and must be flagged on its own audit
// record. A colluding upstream sends one response more than it was asked
// for; from then on the sidecar passes the server's bytes through
// unparsed and keeps the records of the requests it forwards (decided,
// counted, sent) until the connection ends. The app holds the connection
// open: the flagged request must still be in the audit trail promptly.
func TestAttackAuditHeldBack(t *testing.T) {
	for _, unsolicited := range []bool{false, true} {
		name := "control"
		if unsolicited {
			name = "one unsolicited response"
		}
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			var hosts []string
			srv := startApp(t, func(c *net.TCPConn, a *app) {
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					mu.Lock()
					hosts = append(hosts, req.Method+" "+req.Host)
					mu.Unlock()
					n := 1
					if i == 0 && unsolicited {
						n = 2
					}
					_, _ = io.WriteString(c, strings.Repeat("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", n))
				}
			})
			pd, events := reqPod(t, "Audit", false, &reqServer{app: srv})
			c := pd.dialOutbound(srv.addr())
			defer c.Close()
			go func() { _, _ = io.Copy(io.Discard, c) }()
			_, _ = io.WriteString(c, get("api.example.com"))
			time.Sleep(200 * time.Millisecond)
			_, _ = io.WriteString(c, evilReq)
			settle(2*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(hosts) == 2
			})
			var trail []string
			window := time.After(2 * time.Second)
		collect:
			for {
				select {
				case e := <-events:
					trail = append(trail, e.Host+" "+e.Decision+" rule="+e.Rule)
				case <-window:
					break collect
				}
			}
			mu.Lock()
			seen := slices.Clone(hosts)
			mu.Unlock()
			t.Logf("server served %q; audit trail after 2s, connection open: %q", seen, trail)
			if sawHost(seen, "evil.example.com") && !slices.ContainsFunc(trail, func(s string) bool { return strings.HasPrefix(s, "evil.example.com audit") }) {
				t.Errorf("UNAUDITED: the server served a request for evil.example.com (Audit mode: forwarded) but its flagged record is not in the audit trail %q while the app holds the connection",
					trail)
				// Held back, or lost? The app goes away.
				_ = c.Close()
				late := ""
				select {
				case e := <-events:
					late = e.Host + " " + e.Decision + " rule=" + e.Rule
				case <-time.After(3 * time.Second):
				}
				t.Logf("after the app closed the connection, the next record: %q", late)
			}
		})
	}
}
