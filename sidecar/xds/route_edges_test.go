package xds

import (
	"slices"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/structpb"

	subroute "github.com/weftmesh/weft/sidecar/internal/envoy/config/route/v3"
	submatcher "github.com/weftmesh/weft/sidecar/internal/envoy/type/matcher/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Edges of route validation that the mutation run of sidecar/xds
// (docs/mutation.md) showed no test checked.

// egressVH returns virtual host name of the HTTP egress route
// configuration egress|80 of mesh{httpEgress: true}.
func egressVH(r envoySet, name string) *routev3.VirtualHost {
	rc := r[model.RouteType]["egress|80"].(*routev3.RouteConfiguration)
	for _, vh := range rc.VirtualHosts {
		if vh.Name == name {
			return vh
		}
	}
	return nil
}

// An egress route's direct response keeps its body (what the app reads as
// the reason it was refused), and the rule that decided, from the route's
// filter_metadata, reaches the model (what the sidecar's audit records).
func TestEgressRouteKeepsDenyBodyAndRule(t *testing.T) {
	r := mesh{httpEgress: true}.envoy(t)
	egressVH(r, "denied").Routes[0].Metadata = egressMetadata("deny")
	cfg, err := buildEnvoy(r)
	if err != nil {
		t.Fatal(err)
	}
	var denied *model.VirtualHost
	for _, vh := range cfg.Routes["egress|80"].VirtualHosts {
		if vh.Name == "denied" {
			denied = vh
		}
	}
	if denied == nil {
		t.Fatal(`virtual host "denied" missing from the model`)
	}
	if denied.Deny == nil || denied.Deny.Status != 403 || denied.Deny.Body != "weft: egress to evil.example.com denied by demo/egress" {
		t.Errorf("Deny = %+v, want status 403 and the route's body", denied.Deny)
	}
	if want := (model.EgressMeta{Policy: "demo/egress", Rule: "0", Decision: "deny"}); denied.Egress == nil || *denied.Egress != want {
		t.Errorf("Egress = %+v, want %+v", denied.Egress, want)
	}
}

// A route's filter_metadata under any key but weft.egress is refused, not
// ignored: the sidecar honours what it accepts.
func TestEgressRouteOtherMetadataRefused(t *testing.T) {
	r := mesh{httpEgress: true}.envoy(t)
	md := egressMetadata("deny")
	s, _ := structpb.NewStruct(map[string]any{"a": "b"})
	md.FilterMetadata["other"] = s
	delete(md.FilterMetadata, "weft.egress")
	egressVH(r, "denied").Routes[0].Metadata = md
	_, err := buildEnvoy(r)
	if err == nil || !strings.Contains(err.Error(), `route.metadata: filter_metadata "other" is not supported`) {
		t.Fatalf("Build() error = %v, want the route's filter_metadata \"other\" refused", err)
	}
}

// A virtual host of an egress route configuration that sends to the
// control plane's cluster is refused, like a tcp_proxy chain that does.
func TestEgressRouteToTheControlPlaneRefused(t *testing.T) {
	r := mesh{httpEgress: true}.envoy(t)
	egressVH(r, "*").Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "weft-controlplane"}
	_, err := buildEnvoy(r)
	if err == nil || !strings.Contains(err.Error(), `virtual host "*": cluster "weft-controlplane" is the control plane`) {
		t.Fatalf("Build() error = %v, want the route to the control plane refused", err)
	}
}

// Retriable status codes are HTTP statuses, 100 and 599 included.
func TestRetriableStatusCodesBounds(t *testing.T) {
	r := l7Set(t)
	meshRouteAction(r).RetryPolicy.RetriableStatusCodes = []uint32{100, 599}
	cfg, err := buildEnvoy(r)
	if err != nil {
		t.Fatalf("Build() with retriable_status_codes 100 and 599: %v", err)
	}
	if got := meshRoute0(cfg).Retry.StatusCodes; !slices.Equal(got, []int{100, 599}) {
		t.Errorf("StatusCodes = %v, want [100 599]", got)
	}
	for _, c := range []uint32{99, 600} {
		r := l7Set(t)
		meshRouteAction(r).RetryPolicy.RetriableStatusCodes = []uint32{c}
		if _, err := buildEnvoy(r); err == nil || !strings.Contains(err.Error(), "is not an HTTP status") {
			t.Errorf("retriable_status_codes %d: Build() error = %v, want it refused", c, err)
		}
	}
}

// headerMatch and queryMatch refuse a string match without a pattern
// themselves: the schema (validate.required on match_pattern) refuses it
// first today, and the matchers must not come to rely on that. (The
// subset's StringMatcher has only exact and prefix, so no other pattern
// reaches them: TestL7Rejects shows suffix, regex and ignore_case refused
// as fields the subset does not have.)
func TestMatchersRefuseAnEmptyStringMatch(t *testing.T) {
	if _, err := headerMatch(&subroute.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &subroute.HeaderMatcher_StringMatch{StringMatch: &submatcher.StringMatcher{}}}); err == nil ||
		!strings.Contains(err.Error(), "string_match: exact or prefix is required") {
		t.Errorf("headerMatch with an empty string match: error = %v, want it refused", err)
	}
	if _, err := queryMatch(&subroute.QueryParameterMatcher{Name: "q", QueryParameterMatchSpecifier: &subroute.QueryParameterMatcher_StringMatch{StringMatch: &submatcher.StringMatcher{}}}); err == nil ||
		!strings.Contains(err.Error(), "string_match: exact or prefix is required") {
		t.Errorf("queryMatch with an empty string match: error = %v, want it refused", err)
	}
	h, err := headerMatch(&subroute.HeaderMatcher{Name: "X-A", HeaderMatchSpecifier: &subroute.HeaderMatcher_StringMatch{
		StringMatch: &submatcher.StringMatcher{MatchPattern: &submatcher.StringMatcher_Exact{Exact: "v"}}}})
	if err != nil || h != (model.HeaderMatch{Name: "x-a", Exact: "v"}) {
		t.Errorf("headerMatch exact = %+v, %v; want x-a exact v", h, err)
	}
	q, err := queryMatch(&subroute.QueryParameterMatcher{Name: "q", QueryParameterMatchSpecifier: &subroute.QueryParameterMatcher_StringMatch{
		StringMatch: &submatcher.StringMatcher{MatchPattern: &submatcher.StringMatcher_Prefix{Prefix: "p"}}}})
	if err != nil || q != (model.QueryMatch{Name: "q", Prefix: "p"}) {
		t.Errorf("queryMatch prefix = %+v, %v; want q prefix p", q, err)
	}
}

// isToken is RFC 9110's tchar set, its range ends included.
func TestIsTokenBounds(t *testing.T) {
	for _, s := range []string{"a", "z", "A", "Z", "0", "9", "azAZ09", "!#$%&'*+-.^_`|~"} {
		if !isToken(s) {
			t.Errorf("isToken(%q) = false, want true", s)
		}
	}
	// The bytes just outside each range, and separators.
	for _, s := range []string{"", "@", "[", "{", "/", ":", "x y", "x\"", "(", "\x7f", "é"} {
		if isToken(s) {
			t.Errorf("isToken(%q) = true, want false", s)
		}
	}
}
