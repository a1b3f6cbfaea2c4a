package weftctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/api/v1alpha1"
	cpaudit "github.com/weftmesh/weft/controlplane/audit"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/internal/testutil/golden"
)

// The tests serve the control plane's own audit handler (the wire contract
// weftctl restates) per replica, so the real replicaAudit picks the
// replicas and passes the query.

// egressNow is the fixed instant of the golden output: the replicas' clocks
// and weftctl's read it.
var egressNow = testutil.Fixed

// egressEvent is a connection ago before egressNow from pod in ns running
// as service account sa; dst is "ip:port".
func egressEvent(id string, ago time.Duration, ns, pod, sa, proto, name, dst, decision, policy string) audit.Event {
	ap := netip.MustParseAddrPort(dst)
	e := audit.Event{ID: id, Time: egressNow.Add(-ago), SourceID: "spiffe://cluster.local/ns/" + ns + "/sa/" + sa,
		Pod: pod, Namespace: ns, DstIP: ap.Addr(), DstPort: ap.Port(), Protocol: proto, Decision: decision, Policy: policy,
		BytesSent: 1200, BytesReceived: 48000, Duration: 2 * time.Second}
	switch proto {
	case "tls":
		e.SNI, e.DstHost = name, name
	case "http":
		e.Host, e.DstHost = name, strings.ToLower(strings.Split(name, ":")[0])
	}
	if policy == "" {
		e.Outbound = "ALLOW_ANY"
	} else {
		e.Rule = "0"
	}
	return e
}

// egressReplicaEvents are what each control-plane replica stores.
var egressReplicaEvents = map[string][]audit.Event{
	"weft-controlplane-0": {
		egressEvent("a1", 50*time.Minute, "shop", "web-1", "web", "tls", "api.example.com", "93.184.216.34:443", "allow", "shop/web-egress"),
		egressEvent("a2", 40*time.Minute, "shop", "web-1", "web", "tls", "api.example.com", "93.184.216.34:443", "allow", "shop/web-egress"),
		egressEvent("a3", 30*time.Minute, "shop", "web-2", "web", "tls", "api.example.com", "93.184.216.34:443", "allow", "shop/web-egress"),
		egressEvent("m1", 20*time.Minute, "shop", "web-1", "web", "http", "Metrics.Example.com:8080", "93.184.216.50:8080", "allow", ""),
		egressEvent("d1", 10*time.Minute, "shop", "web-1", "web", "tls", "evil.example.net", "203.0.113.9:443", "deny", "shop/web-egress"),
		egressEvent("d2", 5*time.Minute, "shop", "worker-7", "worker", "tls", "bad.example.com", "203.0.113.10:443", "deny", "shop/lockdown"),
	},
	"weft-controlplane-1": {
		egressEvent("old", 3*time.Hour, "shop", "web-1", "web", "tls", "api.example.com", "93.184.216.34:443", "allow", "shop/web-egress"),
		egressEvent("a4", 25*time.Minute, "shop", "web-1", "web", "tls", "api.example.com", "93.184.216.34:443", "allow", "shop/web-egress"),
		egressEvent("c1", 15*time.Minute, "shop", "web-1", "web", "tls", "cdn.example.com", "93.184.216.60:443", "allow", "shop/web-egress"),
		egressEvent("h1", 12*time.Minute, "shop", "web-1", "web", "tls", "hooks.example.org", "198.51.100.4:443", "audit", "shop/web-egress"),
		egressEvent("t1", 8*time.Minute, "shop", "web-1", "web", "tcp", "", "93.184.216.40:5432", "allow", ""),
		egressEvent("v6", 6*time.Minute, "shop", "web-1", "web", "tls", "", "[2001:db8::1]:443", "allow", ""),
		egressEvent("l1", 3*time.Minute, "lab", "probe-1", "probe", "tcp", "", "198.18.100.7:9000", "audit", "lab/probes"),
	},
}

// egressCluster is the fake cluster: three control-plane pods, two ready
// with a store each, the third ready but not answering; a fourth not ready
// (never asked); and pod shop/web-1.
func egressCluster(t *testing.T, replicas map[string][]audit.Event) (*egressEnv, *[]string) {
	t.Helper()
	handlers := map[string]http.Handler{}
	clk := testutil.FakeClock(t)
	clk.SetTime(egressNow)
	for name, events := range replicas {
		store, err := cpaudit.OpenStore(cpaudit.StoreConfig{Path: filepath.Join(t.TempDir(), name+".db"),
			Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		if _, _, err := store.Insert(events); err != nil {
			t.Fatal(err)
		}
		auth, err := streamauth.New(streamauth.Config{Authenticator: noStreams{}, Pods: noStreams{},
			Bundle: x509bundle.New(spiffeid.RequireTrustDomainFromString("cluster.local"))})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := cpaudit.NewService(cpaudit.ServiceConfig{Store: store, Authorizer: auth, Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		handlers[name] = svc.Handler()
	}
	cp := func(name string, ready bool) *corev1.Pod {
		cond := corev1.ConditionTrue
		if !ready {
			cond = corev1.ConditionFalse
		}
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: name, Labels: map[string]string{"app.kubernetes.io/name": "weft-controlplane"}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}}},
		}
	}
	kube := fake.NewClientset(
		cp("weft-controlplane-0", true), cp("weft-controlplane-1", true), cp("weft-controlplane-2", true),
		cp("weft-controlplane-3", false),
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1",
			Labels: map[string]string{"app": "web", "pod-template-hash": "7d9f8"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "batch-1",
			Labels: map[string]string{"job": "nightly", "batch.kubernetes.io/controller-uid": "u-1"}}},
	)
	var (
		mu    sync.Mutex
		asked []string
	)
	// What cpAdmin.get would fetch from each replica (cpadmin_test.go tests
	// that path itself).
	get := func(_ context.Context, pod *corev1.Pod, path string, query url.Values) ([]byte, error) {
		mu.Lock()
		asked = append(asked, pod.Name)
		mu.Unlock()
		h := handlers[pod.Name]
		if pod.Namespace != "weft-system" || h == nil {
			return nil, errors.New("dial tcp 198.18.200.3:15014: connect: connection refused")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path+"?"+query.Encode(), nil))
		if rec.Code != http.StatusOK {
			return nil, errors.New(rec.Result().Status + ": " + rec.Body.String())
		}
		return rec.Body.Bytes(), nil
	}
	e := &egressEnv{audit: &replicaAudit{kube: kube, namespace: "weft-system", get: get}, kube: kube,
		now: func() time.Time { return egressNow }, namespace: "default"}
	return e, &asked
}

// noStreams authorizes no access-log stream: these tests read the
// control plane's HTTP handler only.
type noStreams struct{}

func (noStreams) Authenticate(context.Context, string) (identity.Caller, error) {
	return identity.Caller{}, identity.ErrUnauthenticated
}

func (noStreams) Pod(context.Context, string, string) (streamauth.Pod, bool, error) {
	return streamauth.Pod{}, false, nil
}

// runEgress runs weftctl with args against e and returns stdout and stderr.
func runEgress(e *egressEnv, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	root := NewRoot(&out, &errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(withEgressEnv(context.Background(), e))
	return out.String(), errOut.String(), err
}

func TestEgressAuditTable(t *testing.T) {
	e, asked := egressCluster(t, egressReplicaEvents)
	out, errOut, err := runEgress(e, "egress", "audit")
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/egress-audit.golden", out)
	if want := "weftctl egress: control-plane replica weft-controlplane-2 did not answer, the events it stores are missing: GET /audit/summary: dial tcp 198.18.200.3:15014: connect: connection refused\n"; errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
	slices.Sort(*asked)
	if want := []string{"weft-controlplane-0", "weft-controlplane-1", "weft-controlplane-2"}; !slices.Equal(*asked, want) {
		t.Errorf("asked %v, want the ready replicas %v", *asked, want)
	}
}

func TestEgressAuditJSON(t *testing.T) {
	e, _ := egressCluster(t, egressReplicaEvents)
	out, _, err := runEgress(e, "egress", "audit", "-n", "shop", "--since", "2h", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/egress-audit.golden.json", out)
	var r struct {
		Destinations []audit.DestinationSummary `json:"destinations"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	api := r.Destinations[0]
	if api.Destination != "api.example.com:443" || api.Connections != 4 || !api.FirstSeen.Equal(egressNow.Add(-50*time.Minute)) ||
		!api.LastSeen.Equal(egressNow.Add(-25*time.Minute)) || len(api.Workloads) != 1 {
		t.Errorf("api.example.com:443 merged from both replicas = %+v", api)
	}
}

func TestEgressAuditEvents(t *testing.T) {
	e, _ := egressCluster(t, egressReplicaEvents)
	out, _, err := runEgress(e, "egress", "audit", "--events", "--workload", "web-1", "--limit", "4")
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/egress-audit-events.golden", out)
	out, _, err = runEgress(e, "egress", "audit", "--events", "--decision", "deny", "--destination", "*.example.net", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var r egressEventsReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Events) != 1 || r.Events[0].ID != "d1" || r.Truncated || r.Events[0].Duration != 2*time.Second {
		t.Errorf("events %+v, truncated %v", r.Events, r.Truncated)
	}
}

func TestEgressAuditRefusesBadFlags(t *testing.T) {
	e, _ := egressCluster(t, egressReplicaEvents)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"egress", "audit", "--decision", "block"}, `weftctl egress: --decision "block": want allow, deny or audit`},
		{[]string{"egress", "audit", "--since=-1h"}, "weftctl egress: --since -1h0m0s: want a positive duration such as 1h"},
		{[]string{"egress", "audit", "--events", "--limit", "0"}, "weftctl egress audit: --limit 0: want 1 to 10000"},
		{[]string{"egress", "audit", "-o", "xml"}, `weftctl: -o "xml": want table, json or yaml`},
		{[]string{"egress", "suggest", "-n", "empty"}, "weftctl egress suggest: no allowed or audited egress recorded from namespace empty since 2001-09-08T01:46:40Z; nothing to suggest"},
		{[]string{"egress", "suggest", "-n", "shop", "--workload", "ghost"}, "weftctl egress suggest: no allowed or audited egress recorded from namespace shop by workload ghost since 2001-09-08T01:46:40Z; nothing to suggest"},
		{[]string{"egress", "suggest", "-n", "shop", "--name", "Web_Egress"}, `weftctl egress suggest: --name "Web_Egress" is not a lowercase DNS subdomain name`},
	} {
		_, _, err := runEgress(e, tc.args...)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
	if _, _, err := runEgress(e, "egress", "audit", "--since", "1h"); err != nil {
		t.Errorf("a replica down is a warning, not an error: %v", err)
	}
	down, _ := egressCluster(t, nil)
	if _, _, err := runEgress(down, "egress", "audit"); err == nil || !strings.HasPrefix(err.Error(), "weftctl egress: no control-plane replica answered: weft-controlplane-0: GET /audit/summary: dial tcp") {
		t.Errorf("every replica down: err = %v", err)
	}
}

func TestEgressSuggest(t *testing.T) {
	e, _ := egressCluster(t, egressReplicaEvents)
	out, errOut, err := runEgress(e, "egress", "suggest", "-n", "shop", "--workload", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/egress-suggest.golden.yaml", out)
	if !strings.Contains(errOut, "weft-controlplane-2 did not answer") {
		t.Errorf("stderr %q", errOut)
	}
	p := decodeEgressPolicy(t, out)
	want := v1alpha1.EgressPolicySpec{
		Selector:      &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Mode:          v1alpha1.EgressAudit,
		DefaultAction: v1alpha1.EgressDeny,
		Rules: []v1alpha1.EgressRule{
			{Hosts: []string{"api.example.com", "cdn.example.com", "hooks.example.org"}, Ports: []v1alpha1.EgressPort{{Number: 443, Protocol: v1alpha1.EgressTLS}}, Action: v1alpha1.EgressAllow},
			{Hosts: []string{"metrics.example.com"}, Ports: []v1alpha1.EgressPort{{Number: 8080, Protocol: v1alpha1.EgressHTTP}}, Action: v1alpha1.EgressAllow},
			{CIDRs: []string{"2001:db8::1/128"}, Ports: []v1alpha1.EgressPort{{Number: 443, Protocol: v1alpha1.EgressTCP}}, Action: v1alpha1.EgressAllow},
			{CIDRs: []string{"93.184.216.40/32"}, Ports: []v1alpha1.EgressPort{{Number: 5432, Protocol: v1alpha1.EgressTCP}}, Action: v1alpha1.EgressAllow},
		},
	}
	if got, _ := json.Marshal(p.Spec); string(got) != string(must(json.Marshal(want))) {
		t.Errorf("spec\n got %s\nwant %s", got, must(json.Marshal(want)))
	}
	if p.Name != "web-egress" || p.Namespace != "shop" || p.Kind != "EgressPolicy" || p.APIVersion != "weft.dev/v1alpha1" {
		t.Errorf("object %s %s %s/%s", p.APIVersion, p.Kind, p.Namespace, p.Name)
	}
}

func TestEgressSuggestSelection(t *testing.T) {
	e, _ := egressCluster(t, map[string][]audit.Event{"weft-controlplane-0": {
		egressEvent("b1", time.Hour, "shop", "batch-1", "nightly", "tls", "dumps.example.com", "93.184.216.70:443", "allow", ""),
		egressEvent("s1", time.Hour, "shop", "gone-1", "reporter", "tls", "reports.example.com", "93.184.216.71:443", "allow", ""),
	}})
	for _, tc := range []struct {
		args []string
		sel  *metav1.LabelSelector
		sas  []string
		name string
	}{
		{[]string{"--workload", "batch-1"}, &metav1.LabelSelector{MatchLabels: map[string]string{"job": "nightly"}}, nil, "batch-1-egress"},
		{[]string{"--workload", "reporter", "--enforce"}, nil, []string{"reporter"}, "reporter-egress"},
		{[]string{"--workload", "spiffe://cluster.local/ns/shop/sa/reporter"}, nil, []string{"reporter"}, "reporter-egress"},
		{[]string{"--name", "shop-out"}, nil, nil, "shop-out"},
	} {
		out, _, err := runEgress(e, append([]string{"egress", "suggest", "-n", "shop"}, tc.args...)...)
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		p := decodeEgressPolicy(t, out)
		mode := v1alpha1.EgressAudit
		if slices.Contains(tc.args, "--enforce") {
			mode = v1alpha1.EgressEnforce
		}
		if string(must(json.Marshal(p.Spec.Selector))) != string(must(json.Marshal(tc.sel))) || !slices.Equal(p.Spec.ServiceAccounts, tc.sas) ||
			p.Name != tc.name || p.Spec.Mode != mode {
			t.Errorf("%v: selector %v, serviceAccounts %v, name %s, mode %s", tc.args, p.Spec.Selector, p.Spec.ServiceAccounts, p.Name, p.Spec.Mode)
		}
	}
	out, _, err := runEgress(e, "egress", "suggest", "-n", "shop", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if p := decodeEgressPolicy(t, out); len(p.Spec.Rules) != 1 || len(p.Spec.Rules[0].Hosts) != 2 {
		t.Errorf("-o json: %s", out)
	}
}

// decodeEgressPolicy decodes what suggest printed strictly into the API
// type and validates it with the CRD's schema, as the API server would.
func decodeEgressPolicy(t *testing.T, doc string) *v1alpha1.EgressPolicy {
	t.Helper()
	var p v1alpha1.EgressPolicy
	if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
		t.Fatalf("decoding into v1alpha1.EgressPolicy: %v\n%s", err, doc)
	}
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../api/v1alpha1/crds/weft.dev_egresspolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(b, &crd); err != nil {
		t.Fatal(err)
	}
	var props apiextensionsinternal.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(crd.Spec.Versions[0].Schema.OpenAPIV3Schema, &props, nil); err != nil {
		t.Fatal(err)
	}
	s, err := structuralschema.NewStructural(&props)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := validation.NewSchemaValidator(&props)
	if err != nil {
		t.Fatal(err)
	}
	errs := validation.ValidateCustomResource(nil, obj, v)
	celErrs, _ := cel.NewValidator(s, true, celconfig.PerCallLimit).Validate(context.Background(), nil, s, obj, nil, celconfig.RuntimeCELCostBudget)
	if errs = append(errs, celErrs...); len(errs) > 0 {
		t.Fatalf("the CRD's schema refuses the suggestion: %v\n%s", errs.ToAggregate(), doc)
	}
	return &p
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestSpan(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Hour: "1h", 24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 5 * time.Minute: "5m", 90 * time.Second: "1m30s"} {
		if got := span(d); got != want {
			t.Errorf("span(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestBytesOf(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1.0KiB", 1536: "1.5KiB", 48000: "46.9KiB", 5 << 30: "5.0GiB"} {
		if got := bytesOf(n); got != want {
			t.Errorf("bytesOf(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestEventHost(t *testing.T) {
	for _, tc := range []struct {
		ev    audit.Event
		name  string
		proto v1alpha1.EgressProtocol
	}{
		{audit.Event{Protocol: "tls", SNI: "API.Example.com."}, "api.example.com", v1alpha1.EgressTLS},
		{audit.Event{Protocol: "http", Host: "example.org:8080"}, "example.org", v1alpha1.EgressHTTP},
		{audit.Event{Protocol: "http", Host: "[2001:db8::1]:80"}, "", ""},
		{audit.Event{Protocol: "http", Host: "198.18.200.1"}, "", ""},
		{audit.Event{Protocol: "tls", SNI: "under_score.example"}, "", ""},
		{audit.Event{Protocol: "tls"}, "", ""},
		{audit.Event{Protocol: "tcp", Host: "ignored.example"}, "", ""},
	} {
		if name, proto := eventHost(tc.ev); name != tc.name || proto != tc.proto {
			t.Errorf("eventHost(%+v) = %q, %q; want %q, %q", tc.ev, name, proto, tc.name, tc.proto)
		}
	}
}
