package proxy

import (
	"testing"
	"time"
)

// TestAttackAuditRefusalAttribution: a request refused with 400 because
// its head is ambiguous (an absolute-form authority and a Host that
// differ) or its framing could be read differently (Content-Length with
// Transfer-Encoding) is an attempt to reach a denied host. Its audit
// record must say why it was refused, and must not name the rule that
// allows api.example.com (rule 1) as the rule that denied it.
func TestAttackAuditRefusalAttribution(t *testing.T) {
	cases := []struct{ name, req string }{
		{"authority and Host differ", "GET http://api.example.com/ HTTP/1.1\r\nHost: evil.example.com\r\n\r\n"},
		{"Content-Length and Transfer-Encoding", "POST / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n" + evilReq},
	}
	for _, tc := range cases {
		for _, later := range []bool{false, true} {
			name := tc.name + "/first request"
			raw := tc.req
			if later {
				name, raw = tc.name+"/later request", get("api.example.com")+tc.req
			}
			t.Run(name, func(t *testing.T) {
				srv := startReqServer(t)
				pd, events := reqPod(t, "Enforce", false, srv)
				statuses, _ := sendRaw(t, pd, srv.app.addr(), raw, 300*time.Millisecond)
				if later {
					nextEvent(t, events)
				}
				e := nextEvent(t, events)
				t.Logf("app got %v; refused request's audit: Host=%q DstHost=%q Decision=%s Policy=%q Rule=%q Reason=%q",
					statuses, e.Host, e.DstHost, e.Decision, e.Policy, e.Rule, e.Reason)
				if e.Decision != "deny" {
					t.Fatalf("decision %q, want deny", e.Decision)
				}
				if e.Reason == "" || e.Rule == "1" {
					t.Errorf("AUDIT LIES: the refused request's record says %q was denied by %s rule %q (the rule that allows it) with no reason",
						e.Host, e.Policy, e.Rule)
				}
			})
		}
	}
}
