package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/controlplane/adminauth"
	"github.com/weftmesh/weft/internal/testutil"
)

// Tokens of the admin port's callers in start's fake API server.
const (
	auditReaderToken  = "audit-reader-token"  // alice: get auditevents.weft.dev in weft-system
	statusReaderToken = "status-reader-token" // bob: get debug.weft.dev in weft-system
	noRBACToken       = "no-rbac-token"       // a pod's ServiceAccount of another namespace: nothing
)

var adminGrants = []testutil.Grant{
	{Subject: "alice", Verb: "get", Group: adminauth.Group, Resource: adminauth.ResourceAuditEvents, Namespace: "weft-system"},
	{Subject: "bob", Verb: "get", Group: adminauth.Group, Resource: adminauth.ResourceDebug, Namespace: "weft-system"},
}

// adminClient speaks HTTPS to the admin port, trusting weft's published
// bundle for the control plane's Service name, as weftctl does.
func adminClient(t *testing.T, cp running) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	for _, c := range bundleFromConfigMap(t, cp.kube, "weft-system").X509Authorities() {
		roots.AddCert(c)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "weft-controlplane.weft-system.svc", MinVersion: tls.VersionTLS12}}}
}

// adminGet GETs path from the admin port over scheme "http" or "https"
// with token ("" for none).
func adminGet(t *testing.T, cp running, scheme, path, token string) (int, string) {
	t.Helper()
	client := http.DefaultClient
	if scheme == "https" {
		client = adminClient(t, cp)
	}
	req, err := http.NewRequest(http.MethodGet, scheme+"://"+cp.httpAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, b := testutil.Do(t, client, req)
	return resp.StatusCode, b
}

func adminJSON[T any](t *testing.T, cp running, path, token string) T {
	t.Helper()
	code, body := adminGet(t, cp, "https", path, token)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestAdminPortGuardsAuditAndDebug: on 15014, /metrics and /healthz answer
// anyone over plain HTTP and TLS; /audit/* and /debug/* answer only over
// TLS, to a caller the API server vouches for and RBAC allows.
func TestAdminPortGuardsAuditAndDebug(t *testing.T) {
	cp := start(t)
	defer cp.stop()
	for _, tc := range []struct {
		scheme, path, token string
		want                int
		body                string
	}{
		{"http", "/metrics", "", 200, "weft_ca_"},
		{"http", "/healthz", "", 200, "ok"},
		// Plain HTTP never serves them, whatever it carries.
		{"http", "/audit/events", "", 403, "served over TLS only"},
		{"http", "/audit/events", auditReaderToken, 403, "served over TLS only"},
		{"http", "/audit/summary", "", 403, "served over TLS only"},
		{"http", "/audit/store", "", 403, "served over TLS only"},
		{"http", "/debug/status", statusReaderToken, 403, "served over TLS only"},
		{"https", "/metrics", "", 200, "weft_ca_"},
		{"https", "/healthz", "", 200, "ok"},
		// TLS: no or a bad credential is 401, no RBAC 403.
		{"https", "/audit/events", "", 401, "no credentials"},
		{"https", "/debug/status", "", 401, "no credentials"},
		{"https", "/audit/events", "not-a-token", 401, "token refused"},
		{"https", "/audit/events", "app-token", 401, "token refused"}, // a sidecar's weft-ca token
		{"https", "/audit/events", noRBACToken, 403, "cannot get auditevents.weft.dev in namespace weft-system"},
		{"https", "/audit/summary", noRBACToken, 403, "cannot get auditevents.weft.dev"},
		{"https", "/audit/store", noRBACToken, 403, "cannot get auditevents.weft.dev"},
		{"https", "/debug/status", noRBACToken, 403, "cannot get debug.weft.dev"},
		{"https", "/debug/status", auditReaderToken, 403, "cannot get debug.weft.dev"},
		{"https", "/audit/events", statusReaderToken, 403, "cannot get auditevents.weft.dev"},
		{"https", "/audit/events", auditReaderToken, 200, `"events": []`},
		{"https", "/audit/summary", auditReaderToken, 200, `"destinations"`},
		{"https", "/audit/store", auditReaderToken, 200, `"capacity": 500000`},
		{"https", "/debug/status", statusReaderToken, 200, `"trustDomain":"cluster.local"`},
	} {
		code, body := adminGet(t, cp, tc.scheme, tc.path, tc.token)
		if code != tc.want || !strings.Contains(body, tc.body) {
			t.Errorf("%s %s with %q: %d %q, want %d containing %q", tc.scheme, tc.path, tc.token, code, trim(body), tc.want, tc.body)
		}
	}
}

func trim(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// TestAdminPortSilentClientHoldsNoOne: a connection that never sends its
// first byte does not keep the next client from being served.
func TestAdminPortSilentClientHoldsNoOne(t *testing.T) {
	cp := start(t)
	defer cp.stop()
	silent, err := net.Dial("tcp", cp.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	done := make(chan int, 1)
	go func() {
		code, _ := adminGet(t, cp, "http", "/healthz", "")
		done <- code
	}()
	select {
	case code := <-done:
		if code != 200 {
			t.Fatalf("/healthz: %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a silent connection held up the next client")
	}
}
