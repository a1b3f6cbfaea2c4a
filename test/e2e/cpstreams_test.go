//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestAppCannotUseItsSidecarsStreams: the app of a meshed pod holds its
// pod's SVID (the Workload API gives it), so the control plane's ADS and
// audit streams also require the pod's projected token, which only
// weft-proxy mounts. On the real cluster:
//
//   - the app, with what the Workload API gave it as client certificate,
//     is refused on ADS and on the audit stream (Unauthenticated: no token),
//     while the sidecars of the same pods are SYNCED over ADS and their
//     audit events are stored;
//   - a pod of the same ServiceAccount with its own SVID and its own
//     pod-bound weft-ca token (what its sidecar holds; asked of the API
//     server here, since the app cannot read it) cannot claim its
//     sibling's node ID on either stream (PermissionDenied), while the
//     same credential as its own node is accepted: the refusal is the
//     claim's;
//   - nothing is stored as the sibling.
func TestAppCannotUseItsSidecarsStreams(t *testing.T) {
	externalHost(t)
	const ns = "e2e-cpstreams"
	meshNamespace(t, ns, "app")
	victim := deployTestappAs(t, ns, "victim", "app", "svid")
	attacker := deployTestappAs(t, ns, "attacker", "app", "svid")
	victimNode, attackerNode := victim.Name+"."+ns, attacker.Name+"."+ns
	// The sidecars (SVID and token) are accepted on ADS.
	requireSynced(t, victimNode)
	requireSynced(t, attackerNode)

	cpStream := func(args ...string) (string, error) {
		return kubectlExec(t, ns, attacker.Name, "app", append([]string{"/usr/local/bin/testapp", "cp-stream"}, args...)...)
	}
	expect := func(what string, out string, err error, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q (err %v):\n%s", what, w, err, out)
			}
		}
		if strings.HasPrefix(want[0], "refused") != (err != nil) {
			t.Errorf("%s: exit error %v, want refused=%v", what, err, strings.HasPrefix(want[0], "refused"))
		}
	}

	// The app with only what the Workload API gave it.
	for _, kind := range []string{"ads", "als"} {
		out, err := cpStream("-kind", kind, "-node", attackerNode)
		expect("the app's own node, "+kind, out, err, "refused: Unauthenticated", "needs the pod's ServiceAccount token (audience weft-ca)")
	}

	// A sibling of the same ServiceAccount with its own SVID and its own
	// bound token claims the victim's node.
	token := podToken(t, attacker, "weft-ca")
	for _, kind := range []string{"ads", "als"} {
		out, err := cpStream("-kind", kind, "-node", victimNode, "-token", token)
		expect("the sibling's node, "+kind, out, err, "refused: PermissionDenied", "the stream's token is pod "+ns+"/"+attacker.Name+"'s")
		out, err = cpStream("-kind", kind, "-node", attackerNode, "-token", token)
		expect("its own node with its token, "+kind, out, err, "accepted: ")
	}

	// The victim's sidecar still writes its audit events: an egress
	// connection of its app (to the external host: the API server's
	// Service is in the cluster, not egress) is stored under its pod, and
	// nothing forged is stored under it.
	waitFor(t, 2*time.Minute, "an audit event of the victim's sidecar", func(context.Context) (bool, error) {
		_, _ = kubectlExec(t, ns, victim.Name, "app", "/usr/local/bin/testapp", "get", "http://"+externalIP+"/")
		for _, e := range auditEvents(t, ns) {
			if e.Pod == victim.Name && !strings.HasPrefix(e.ID, "forged-") {
				return true, nil
			}
		}
		return false, nil
	})
	for _, e := range auditEvents(t, ns) {
		if e.Pod == victim.Name && strings.HasPrefix(e.ID, "forged-") {
			t.Errorf("a forged event was stored as the victim: %+v", e)
		}
	}
}
