package proxy

import (
	"slices"
	"testing"
	"time"
)

// TestAttackHostMultiColon: egress.HostName strips a ":port" only when the
// Host has exactly one colon, so "evil.example.com:80:80" matches no
// virtual host by name and takes the catch-all (ALLOW_ANY) under Enforce,
// unchecked against the denied name. net/http's server accepts that Host
// (httpguts.ValidHostHeader) and hands it on as is; a virtual-hosting
// server that takes the name before the first colon (nginx's
// ngx_http_validate_host does: host_len is set at the first ':') routes
// it to evil.example.com.
func TestAttackHostMultiColon(t *testing.T) {
	for _, host := range []string{"evil.example.com:80:80", "evil.example.com::", "evil.example.com.:1:2", "EVIL.example.com:x:y"} {
		t.Run(host, func(t *testing.T) {
			srv := startReqServer(t)
			pd, events := reqPod(t, "Enforce", false, srv)
			statuses, bodies := sendRaw(t, pd, srv.app.addr(), "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n", 300*time.Millisecond)
			e := nextEvent(t, events)
			seen := srv.requests()
			t.Logf("app got %v %q; server saw %q; audit Host=%q DstHost=%q Decision=%s Policy=%q Rule=%q Outbound=%q",
				statuses, bodies, seen, e.Host, e.DstHost, e.Decision, e.Policy, e.Rule, e.Outbound)
			if sawHost(seen, "evil.example.com") || slices.Contains(statuses, 200) {
				t.Errorf("BYPASS: Host %q was forwarded under Enforce (server saw %q, audit decision %s by %q rule %q); a server that routes by the name before the first colon serves evil.example.com",
					host, seen, e.Decision, e.Policy, e.Rule)
			}
		})
	}
}
