package proxy

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestAttackAuditHeldBack: under an Audit-mode policy a request for
// evil.example.com is forwarded and must be flagged on its own audit
// record. A colluding upstream sends one response more than it was asked
// for; from then on the sidecar passes the server's bytes through
// unparsed and keeps the records of the requests it forwards (decided,
// counted, sent) until the connection ends. The app holds the connection
// open: the flagged request must still be in the audit trail promptly.
// (Today the sidecar ends the connection at the unasked-for bytes, so the
// request never reaches the server; the control's does.)
func TestAttackAuditHeldBack(t *testing.T) {
	t.Parallel()
	for _, unsolicited := range []bool{false, true} {
		name := "control"
		if unsolicited {
			name = "one unsolicited response"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			first := okResponse
			if unsolicited {
				first += okResponse
			}
			srv := startHostRecorder(t, func(i int) string {
				if i == 0 {
					return first
				}
				return okResponse
			})
			pd, events := reqPod(t, "Audit", false, srv.asReq())
			c := pd.dialOutbound(srv.addr())
			defer c.Close()
			back := readFromSidecar(c)
			_, _ = io.WriteString(c, get("api.example.com"))
			// The answer, with the unsolicited response, has reached the
			// app: the sidecar has read it all before the next request.
			back.waitFor(t, len(first))
			_, _ = io.WriteString(c, evilReq)
			// Audit mode: forwarded, unless the sidecar ends the connection
			// (as it does at unasked-for bytes).
			testutil.Eventually(t, "the request for evil.example.com served, or the connection ended", func() bool {
				select {
				case <-back.done:
					return true
				default:
					return len(srv.seen()) == 2
				}
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
			seen := srv.seen()
			t.Logf("server served %q; audit trail after 2s, connection open: %q", seen, trail)
			if !unsolicited && !sawHost(seen, "evil.example.com") {
				t.Fatalf("control: the server served %q, not the request for evil.example.com (Audit mode: forwarded)", seen)
			}
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
