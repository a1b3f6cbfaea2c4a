//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/weftmesh/weft/api/audit"
)

// TestEgressAgainstHostileApp: the app in a meshed pod writes its own bytes
// (testapp raw) to get past an EgressPolicy that allows api.example.test
// and denies evil.example.test by name, on 80 (HTTP) and 443 (TLS), and
// lets everything else out (defaultAction Allow: only the rules by name
// matter). Under Enforce each attempt is refused: a denied request behind
// an allowed one on a keep-alive or pipelined connection gets the
// sidecar's 403 after the allowed response, and the connection closes; a
// CONNECT is refused as a tunnel to the destination port where rules by
// name apply (name_unknown), after an allowed request or first; a request
// after a leading CRLF is decided by its Host; a ClientHello without SNI,
// or one that stalls past the sniff deadline, is closed before a byte of
// the server's comes back (name_unknown). The legitimate requests still
// work. Under Audit the same attempts go through, flagged. Each attempt
// moves the sidecar's counters by exactly what it should, and the control
// plane's audit trail holds exactly its records (one per request), with
// decision and reason, in the attempt's time window.
func TestEgressAgainstHostileApp(t *testing.T) {
	externalHost(t)
	const (
		ns     = "e2e-hostile"
		name   = "hostile-egress"
		policy = ns + "/" + name
		// The sidecar's sniff deadline: the rest of a ClientHello must come
		// within proxy.Config.HandshakeTimeout (10s, not set otherwise by
		// sidecar.Run) of its first byte.
		sniffDeadline = 10 * time.Second
	)
	meshNamespace(t, ns, "client")
	ctx := context.Background()
	orig := testappPodHook
	testappPodHook = func(p *corev1.Pod) {
		p.Spec.ServiceAccountName = "client"
		p.Spec.HostAliases = []corev1.HostAlias{{IP: externalIP, Hostnames: []string{"api.example.test", "evil.example.test"}}}
	}
	client := deployTestapp(t, ns, "client", "svid")
	testappPodHook = orig
	requireSynced(t, client.Name+"."+ns)
	testapp := func(args ...string) (string, error) {
		return kubectlExec(t, ns, client.Name, "app", append([]string{"/usr/local/bin/testapp"}, args...)...)
	}
	get := func(args ...string) (string, error) { return testapp(append([]string{"get"}, args...)...) }
	raw := func(args ...string) (string, error) {
		t.Helper()
		out, err := testapp(append([]string{"raw"}, args...)...)
		shown := out
		if len(shown) > 800 {
			shown = shown[:400] + " [...] " + shown[len(shown)-400:]
		}
		t.Logf("testapp raw %s: %v\n%s", strings.Join(args, " "), err, shown)
		return out, err
	}
	waitFor(t, time.Minute, "egress to the external host", func(context.Context) (bool, error) {
		_, err := get("http://api.example.test/")
		return err == nil, nil
	})

	dyn := dynamic.NewForConfigOrDie(restConfig)
	obj := weftObject("EgressPolicy", ns, name, map[string]any{
		"selector":      appSelector("client"),
		"mode":          "Enforce",
		"defaultAction": "Allow",
		"rules": []any{
			map[string]any{"hosts": []any{"api.example.test"}, "ports": []any{egressPort(443, "TLS")}, "action": "Allow"}, // rule 0
			map[string]any{"hosts": []any{"api.example.test"}, "ports": []any{egressPort(80, "HTTP")}, "action": "Allow"}, // rule 1
			map[string]any{"hosts": []any{"evil.example.test"}, "ports": []any{egressPort(80, "HTTP")}, "action": "Deny"}, // rule 2
			map[string]any{"hosts": []any{"evil.example.test"}, "ports": []any{egressPort(443, "TLS")}, "action": "Deny"}, // rule 3
		},
	})
	if _, err := dyn.Resource(egressGVR).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The whole policy is in force: the Deny rules by name on both ports
	// (routes and listener chains can come in separate pushes).
	waitFor(t, time.Minute, "the policy in force at the client's sidecar", func(context.Context) (bool, error) {
		out, err := get("http://evil.example.test/")
		if err == nil || !strings.Contains(out, "denied by "+policy+" rule 2") {
			return false, nil
		}
		_, err = get("-k", "https://evil.example.test/")
		return err != nil, nil
	})

	// The sidecar's counters that an attempt may move. Every attempt says
	// how much each moves; the others must not move at all.
	series := map[string]struct {
		family string
		labels map[string]string
	}{
		"requests allow":       {"weft_sidecar_egress_http_requests_total", map[string]string{"decision": "allow"}},
		"requests deny":        {"weft_sidecar_egress_http_requests_total", map[string]string{"decision": "deny"}},
		"requests audit":       {"weft_sidecar_egress_http_requests_total", map[string]string{"decision": "audit"}},
		"failures http":        {"weft_sidecar_connection_failures_total", map[string]string{"direction": "outbound", "reason": "http_denied"}},
		"failures unknown":     {"weft_sidecar_connection_failures_total", map[string]string{"direction": "outbound", "reason": "name_unknown"}},
		"failures blackhole":   {"weft_sidecar_connection_failures_total", map[string]string{"direction": "outbound", "reason": "blackhole"}},
		"failures mismatch":    {"weft_sidecar_connection_failures_total", map[string]string{"direction": "outbound", "reason": "name_mismatch"}},
		"name_unknown denied":  {"weft_sidecar_egress_name_unknown_total", map[string]string{"result": "denied"}},
		"name_unknown flagged": {"weft_sidecar_egress_name_unknown_total", map[string]string{"result": "flagged"}},
	}
	counters := func() map[string]float64 {
		t.Helper()
		fams := sidecarFamilies(t, ns, client.Name)
		out := map[string]float64{}
		for key, s := range series {
			out[key] = sumSamples(fams, s.family, s.labels)
		}
		return out
	}

	// Each attempt is a step: what the app got back is checked by check,
	// the counters must move by exactly moves, and the audit trail must
	// hold exactly the records of want in the step's time window.
	type step struct {
		name     string
		from, to time.Time
		want     []expectEvent
	}
	var steps []*step
	attempt := func(what string, moves map[string]float64, want []expectEvent, do func()) {
		t.Helper()
		for key := range moves {
			if _, ok := series[key]; !ok {
				t.Fatalf("%s: no counter %q", what, key)
			}
		}
		before := counters()
		st := &step{name: what, from: time.Now()}
		do()
		st.to = time.Now()
		st.want = want
		steps = append(steps, st)
		after := counters()
		var bad []string
		for key := range series {
			if got := after[key] - before[key]; got != moves[key] {
				bad = append(bad, fmt.Sprintf("%s moved by %v, want %v", key, got, moves[key]))
			}
		}
		if len(bad) > 0 {
			t.Fatalf("%s: counters: %s", what, strings.Join(bad, "; "))
		}
	}

	const (
		getAPI  = `GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n`
		getEvil = `GET / HTTP/1.1\r\nHost: evil.example.test\r\n\r\n`
		connect = `CONNECT evil.example.test:443 HTTP/1.1\r\nHost: evil.example.test:443\r\n\r\n`
		hello   = "hello from external-http"
		deny2   = "HTTP/1.1 403 Forbidden"
	)
	apiHTTP, evilHTTP := "api.example.test:80", "evil.example.test:80"
	tlsAddr := externalIP + ":443"
	evilDenied := "weft: egress to evil.example.test denied by " + policy + " rule 2"
	connectDenied := "weft: CONNECT evil.example.test:443 denied: a tunnel is egress to " + externalIP + ":80"
	// writtenAfter is how many bytes had come back before write n.
	writtenAfter := func(out string, n int) int {
		m := regexp.MustCompile(`write ` + strconv.Itoa(n) + ` \(\d+ bytes\) after (\d+) bytes received`).FindStringSubmatch(out)
		if m == nil {
			return -1
		}
		v, _ := strconv.Atoi(m[1])
		return v
	}
	// allowedThenDenied: the allowed response, then the sidecar's 403
	// (denial), then the connection closed.
	allowedThenDenied := func(what, out string, err error, denial string) {
		t.Helper()
		i, j := strings.Index(out, hello), strings.Index(out, denial)
		if err != nil || strings.Count(out, hello) != 1 || strings.Count(out, "HTTP/1.1 ") != 2 || i < 0 || j < i ||
			!strings.Contains(out, deny2) || !strings.Contains(out, "testapp raw: closed after ") {
			t.Fatalf("%s: %v\n%s\nwant the server's 200 (%q), then the sidecar's 403 (%q), then the connection closed", what, err, out, hello, denial)
		}
	}
	deniedAlone := func(what, out string, err error, denial string) {
		t.Helper()
		if err != nil || strings.Contains(out, hello) || strings.Count(out, "HTTP/1.1 ") != 1 || !strings.Contains(out, deny2) ||
			!strings.Contains(out, denial) || !strings.Contains(out, "testapp raw: closed after ") {
			t.Fatalf("%s: %v\n%s\nwant only the sidecar's 403 (%q), then the connection closed", what, err, out, denial)
		}
	}
	closedSilent := func(what, out string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(out, "testapp raw: closed after 0 bytes") {
			t.Fatalf("%s: %v\n%s\nwant the connection closed without a byte from the server", what, err, out)
		}
	}

	// Audit records an attempt must leave.
	pod := client.Name
	// base: the client's record, to the external host, and its bytes say
	// whether it was forwarded: a refused attempt sent nothing to the
	// server and got nothing from it (the 403 is the sidecar's), a
	// forwarded one was answered.
	base := func(e audit.Event) bool {
		forwarded := e.BytesSent > 0 && e.BytesReceived > 0
		if e.Decision == "deny" {
			forwarded = !(e.BytesSent == 0 && e.BytesReceived == 0)
		}
		return e.Pod == pod && e.SourceID == "spiffe://cluster.local/ns/"+ns+"/sa/client" && e.DstIP.String() == externalIP &&
			forwarded == (e.Decision != "deny")
	}
	httpEvent := func(host, decision, rule string) expectEvent {
		return expectEvent{fmt.Sprintf("HTTP Host %s %s by rule %s", host, decision, rule) + bytesNote(decision), func(e audit.Event) bool {
			return base(e) && e.DstPort == 80 && e.Protocol == audit.ProtocolHTTP && e.Host == host && e.Decision == decision &&
				e.Policy == policy && e.Rule == rule && e.Reason == ""
		}}
	}
	connectEvent := func(decision string) expectEvent {
		return expectEvent{"CONNECT evil.example.test:443 " + decision + " by rule 2 as name_unknown" + bytesNote(decision), func(e audit.Event) bool {
			return base(e) && e.DstPort == 80 && e.Host == "evil.example.test:443" && e.Decision == decision &&
				e.Policy == policy && e.Rule == "2" && strings.HasPrefix(e.Reason, "name_unknown: CONNECT")
		}}
	}
	unknownEvent := func(decision, why string) expectEvent {
		return expectEvent{"443 without a name (" + why + ") " + decision + " by rule 3" + bytesNote(decision), func(e audit.Event) bool {
			return base(e) && e.DstPort == 443 && e.SNI == "" && e.Decision == decision && e.Policy == policy && e.Rule == "3" &&
				strings.HasPrefix(e.Reason, "name_unknown: "+why)
		}}
	}
	tlsEvent := func(sni, decision, rule string) expectEvent {
		return expectEvent{"TLS SNI " + sni + " " + decision + bytesNote(decision), func(e audit.Event) bool {
			return base(e) && e.DstPort == 443 && e.SNI == sni && e.Decision == decision && e.Policy == policy && e.Rule == rule && e.Reason == ""
		}}
	}
	const noSNI = 3 // attempts without SNI

	// ---- Enforce ----
	// a. Keep-alive: an allowed request, its response, then a denied one
	// on the same connection.
	attempt("Enforce, keep-alive: api then evil", map[string]float64{"requests allow": 1, "requests deny": 1, "failures http": 1},
		[]expectEvent{httpEvent("api.example.test", "allow", "1"), httpEvent("evil.example.test", "deny", "2")}, func() {
			out, err := raw("-connect", apiHTTP, "-send", getAPI, "-send", getEvil, "-wait", "2s")
			allowedThenDenied("keep-alive", out, err, evilDenied)
			if n := writtenAfter(out, 2); n <= 0 {
				t.Fatalf("keep-alive: the second request was not written after the first one's response (%d bytes back before it):\n%s", n, out)
			}
		})
	// b. Pipelined: both in one write.
	attempt("Enforce, pipelined: api and evil", map[string]float64{"requests allow": 1, "requests deny": 1, "failures http": 1},
		[]expectEvent{httpEvent("api.example.test", "allow", "1"), httpEvent("evil.example.test", "deny", "2")}, func() {
			out, err := raw("-connect", apiHTTP, "-send", getAPI+getEvil)
			allowedThenDenied("pipelined", out, err, evilDenied)
		})
	// c. CONNECT to evil.example.test:443 through port 80 (where rules by
	// name apply): after an allowed request, and first.
	attempt("Enforce, CONNECT after an allowed request", map[string]float64{"requests allow": 1, "requests deny": 1, "failures http": 1, "name_unknown denied": 1},
		[]expectEvent{httpEvent("api.example.test", "allow", "1"), connectEvent("deny")}, func() {
			out, err := raw("-connect", apiHTTP, "-send", getAPI, "-send", connect, "-wait", "2s")
			allowedThenDenied("CONNECT after GET", out, err, connectDenied)
		})
	attempt("Enforce, CONNECT first", map[string]float64{"requests deny": 1, "failures http": 1, "name_unknown denied": 1},
		[]expectEvent{connectEvent("deny")}, func() {
			out, err := raw("-connect", evilHTTP, "-send", connect)
			deniedAlone("CONNECT first", out, err, connectDenied)
		})
	// d. A leading CRLF: the request is decided by its Host.
	attempt("Enforce, leading CRLF", map[string]float64{"requests deny": 1, "failures http": 1},
		[]expectEvent{httpEvent("evil.example.test", "deny", "2")}, func() {
			out, err := raw("-connect", evilHTTP, "-send", `\r\n`+getEvil)
			deniedAlone("leading CRLF", out, err, evilDenied)
		})
	// e. A ClientHello without SNI to the external host's address.
	var want []expectEvent
	for range noSNI {
		want = append(want, unknownEvent("deny", "ClientHello without server_name"))
	}
	attempt("Enforce, ClientHello without SNI", map[string]float64{"failures unknown": noSNI, "name_unknown denied": noSNI}, want, func() {
		for i := range noSNI {
			out, err := raw("-connect", tlsAddr, "-no-sni")
			closedSilent(fmt.Sprintf("ClientHello without SNI, attempt %d", i+1), out, err)
		}
	})
	// f. A ClientHello for evil.example.test that stalls after 40 bytes
	// past the sniff deadline: were it forwarded, the server would answer
	// the rest.
	attempt("Enforce, ClientHello stalled past the sniff deadline", map[string]float64{"failures unknown": 1, "name_unknown denied": 1},
		[]expectEvent{unknownEvent("deny", "ClientHello incomplete after 40 bytes")}, func() {
			start := time.Now()
			out, err := raw("-connect", tlsAddr, "-hello", "evil.example.test", "-split", "40", "-gap", (sniffDeadline + 3*time.Second).String())
			closedSilent("stalled ClientHello", out, err)
			if d := time.Since(start); d < sniffDeadline {
				t.Fatalf("stalled ClientHello: closed after %v, before the sniff deadline (%v)\n%s", d, sniffDeadline, out)
			}
		})
	// g. The legitimate requests still work.
	attempt("Enforce, the legitimate requests", map[string]float64{"requests allow": 1},
		[]expectEvent{tlsEvent("api.example.test", "allow", "0"), httpEvent("api.example.test", "allow", "1")}, func() {
			if out, err := get("-k", "https://api.example.test/"); err != nil || !strings.Contains(out, "hello from external-tls") {
				t.Fatalf("TLS to api.example.test after the attempts: %v %q", err, out)
			}
			if out, err := get("http://api.example.test/"); err != nil || !strings.Contains(out, hello) {
				t.Fatalf("HTTP to api.example.test after the attempts: %v %q", err, out)
			}
		})

	// ---- Audit ----
	patch := []byte(`{"spec":{"mode":"Audit"}}`)
	if _, err := dyn.Resource(egressGVR).Namespace(ns).Patch(ctx, name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// The sidecar has the Audit policy everywhere (listener chains and
	// routes) once its /config_dump names no Enforce rule; read without
	// sending traffic, so the audit trail holds only the attempts.
	waitFor(t, time.Minute, "the Audit-mode policy at the client's sidecar", func(context.Context) (bool, error) {
		out, err := get("http://127.0.0.1:15000/config_dump")
		return err == nil && strings.Contains(out, `"Mode": "Audit"`) && !strings.Contains(out, `"Mode": "Enforce"`), nil
	})
	attempt("Audit, keep-alive: api then evil", map[string]float64{"requests allow": 1, "requests audit": 1},
		[]expectEvent{httpEvent("api.example.test", "allow", "1"), httpEvent("evil.example.test", "audit", "2")}, func() {
			out, err := raw("-connect", apiHTTP, "-send", getAPI, "-send", getEvil, "-wait", "2s")
			if err != nil || strings.Count(out, hello) != 2 || strings.Contains(out, "403") || strings.Contains(out, "weft:") {
				t.Fatalf("Audit, keep-alive: %v\n%s\nwant both requests answered by the server", err, out)
			}
		})
	attempt("Audit, CONNECT first", map[string]float64{"requests audit": 1, "name_unknown flagged": 1},
		[]expectEvent{connectEvent("audit")}, func() {
			out, err := raw("-connect", evilHTTP, "-send", connect)
			if err != nil || !strings.Contains(out, hello) || strings.Contains(out, "403") || strings.Contains(out, "weft:") {
				t.Fatalf("Audit, CONNECT first: %v\n%s\nwant the server's answer to the CONNECT", err, out)
			}
		})
	want = nil
	for range noSNI {
		want = append(want, unknownEvent("audit", "ClientHello without server_name"))
	}
	attempt("Audit, ClientHello without SNI", map[string]float64{"name_unknown flagged": noSNI}, want, func() {
		for i := range noSNI {
			out, err := raw("-connect", tlsAddr, "-no-sni", "-read", "3s")
			// A TLS handshake record (the ServerHello) from the server.
			if err != nil || !strings.Contains(out, `\x16\x03\x03`) {
				t.Fatalf("Audit, ClientHello without SNI, attempt %d: %v\n%s\nwant the TLS server's answer", i+1, err, out)
			}
		}
	})

	// ---- The audit trail at the control plane ----
	// Each step's time window holds exactly its records, each matched once.
	var events []audit.Event
	match := func(st *step) (missing []string, extra []audit.Event) {
		var in []audit.Event
		for _, e := range events {
			if !e.Time.Before(st.from) && !e.Time.After(st.to) {
				in = append(in, e)
			}
		}
		used := make([]bool, len(in))
		for _, w := range st.want {
			found := false
			for i, e := range in {
				if !used[i] && w.match(e) {
					used[i], found = true, true
					break
				}
			}
			if !found {
				missing = append(missing, w.what)
			}
		}
		for i, e := range in {
			if !used[i] {
				extra = append(extra, e)
			}
		}
		return missing, extra
	}
	var report string
	err := pollFor(2*time.Minute, func() bool {
		events = auditEvents(t, ns)
		var b strings.Builder
		for _, st := range steps {
			missing, extra := match(st)
			if len(missing) == 0 && len(extra) == 0 {
				continue
			}
			fmt.Fprintf(&b, "%s [%s, %s]:\n", st.name, st.from.Format(time.RFC3339Nano), st.to.Format(time.RFC3339Nano))
			for _, m := range missing {
				fmt.Fprintf(&b, "  missing: %s\n", m)
			}
			for _, e := range extra {
				j, _ := json.Marshal(e)
				fmt.Fprintf(&b, "  not expected: %s\n", j)
			}
		}
		report = b.String()
		return report == ""
	})
	if err != nil {
		var all strings.Builder
		for _, e := range events {
			j, _ := json.Marshal(e)
			all.Write(append(j, '\n'))
		}
		t.Fatalf("the audit trail does not hold exactly the attempts' records:\n%s\nall %d events of %s:\n%s", report, len(events), ns, all.String())
	}
	var b strings.Builder
	for _, st := range steps {
		fmt.Fprintf(&b, "%s:\n", st.name)
		for _, e := range events {
			if !e.Time.Before(st.from) && !e.Time.After(st.to) {
				fmt.Fprintf(&b, "  %s %s:%d sni=%q host=%q %s#%s sent=%d received=%d reason=%q\n",
					e.Decision, e.DstIP, e.DstPort, e.SNI, e.Host, e.Policy, e.Rule, e.BytesSent, e.BytesReceived, e.Reason)
			}
		}
	}
	t.Logf("audit trail: %d records of %s, each attempt's in its window:\n%s", len(events), ns, b.String())
}

// bytesNote says what an expected record's bytes must show.
func bytesNote(decision string) string {
	if decision == "deny" {
		return ", no byte sent or received"
	}
	return ", bytes sent and received"
}

// expectEvent is an audit record an attempt must leave.
type expectEvent struct {
	what  string
	match func(audit.Event) bool
}

// pollFor calls cond every second until it is true or timeout passes.
func pollFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", timeout)
		}
		time.Sleep(time.Second)
	}
	return nil
}
