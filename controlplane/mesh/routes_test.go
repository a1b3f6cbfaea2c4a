package mesh

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

func entryNames(es []RouteEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s/%s#%d.%d", e.Route.Namespace, e.Route.Name, e.Rule.Index, e.MatchIndex))
	}
	return out
}

// TestRoutesForPrecedence: the Gateway API's order of matches across the
// routes of one Service port: exact path, longest prefix, method, most
// headers, most query parameters, oldest route, namespace/name, rule and
// match position.
func TestRoutesForPrecedence(t *testing.T) {
	svc := Key{"prod", "api"}
	t0 := testutil.Fixed
	prefix := func(p string) RouteMatch { return RouteMatch{PathType: PathPrefix, Path: p} }
	older := &Route{Kind: KindHTTPRoute, Namespace: "prod", Name: "z-old", Created: t0,
		Parents: []RouteParent{{Service: svc}},
		Rules: []RouteRule{
			{Index: 0, Matches: []RouteMatch{prefix("/")}},
			{Index: 1, Matches: []RouteMatch{{PathType: PathPrefix, Path: "/", Method: "GET"}, {PathType: PathPrefix, Path: "/", QueryParams: []NameValue{{"a", "1"}}}}},
		}}
	newer := &Route{Kind: KindHTTPRoute, Namespace: "prod", Name: "a-new", Created: t0.Add(time.Hour),
		Parents: []RouteParent{{Service: svc, Port: 80}},
		Rules: []RouteRule{
			{Index: 0, Matches: []RouteMatch{prefix("/"), prefix("/api/v1"), {PathType: PathExact, Path: "/api"}}},
			{Index: 2, Matches: []RouteMatch{{PathType: PathPrefix, Path: "/", Headers: []NameValue{{"x", "1"}, {"y", "2"}}}}},
		}}
	otherPort := &Route{Kind: KindHTTPRoute, Namespace: "prod", Name: "p8080", Parents: []RouteParent{{Service: svc, Port: 8080}},
		Rules: []RouteRule{{Matches: []RouteMatch{prefix("/")}}}}
	s := NewSnapshot(1, Contents{Routes: []*Route{newer, older, otherPort}})
	got := entryNames(s.RoutesFor(svc, 80, "client"))
	want := []string{
		"prod/a-new#0.2", // exact /api
		"prod/a-new#0.1", // prefix /api/v1
		"prod/z-old#1.0", // / with a method
		"prod/a-new#2.0", // / with two headers
		"prod/z-old#1.1", // / with a query parameter
		"prod/z-old#0.0", // / of the older route
		"prod/a-new#0.0", // / of the newer
	}
	if !slices.Equal(got, want) {
		t.Errorf("RoutesFor(api:80) =\n%q\nwant\n%q", got, want)
	}
	// p8080 (port 8080 only) has the zero creation time: the oldest.
	want = []string{"prod/z-old#1.0", "prod/z-old#1.1", "prod/p8080#0.0", "prod/z-old#0.0"}
	if got := entryNames(s.RoutesFor(svc, 8080, "client")); !slices.Equal(got, want) {
		t.Errorf("RoutesFor(api:8080) = %q, want %q", got, want)
	}
	if s.RoutesFor(svc, 81, "client") == nil || !s.HasRoutes(svc, 81) {
		t.Error("a route without a port attaches to every port")
	}
	if s.HasRoutes(Key{"prod", "other"}, 80) || s.RoutesFor(Key{"prod", "other"}, 80, "prod") != nil {
		t.Error("routes of another Service")
	}
}

// TestRoutesForConsumer: a consumer route applies to its namespace's
// clients only and replaces the producer routes for them.
func TestRoutesForConsumer(t *testing.T) {
	svc := Key{"prod", "api"}
	producer := &Route{Kind: KindHTTPRoute, Namespace: "prod", Name: "p", Parents: []RouteParent{{Service: svc}},
		Rules: []RouteRule{{Matches: []RouteMatch{{PathType: PathExact, Path: "/x"}}}}}
	consumer := &Route{Kind: KindHTTPRoute, Namespace: "team", Name: "c", Parents: []RouteParent{{Service: svc, Port: 80}},
		Rules: []RouteRule{{Matches: []RouteMatch{{PathType: PathPrefix, Path: "/"}}}}}
	s := NewSnapshot(1, Contents{Routes: []*Route{producer, consumer}})
	if got := entryNames(s.RoutesFor(svc, 80, "team")); !slices.Equal(got, []string{"team/c#0.0"}) {
		t.Errorf("team's client: %q", got)
	}
	if got := entryNames(s.RoutesFor(svc, 80, "other")); !slices.Equal(got, []string{"prod/p#0.0"}) {
		t.Errorf("other client: %q", got)
	}
	if got := entryNames(s.RoutesFor(svc, 81, "team")); !slices.Equal(got, []string{"prod/p#0.0"}) {
		t.Errorf("team's client on a port the consumer route does not name: %q", got)
	}
	if got := s.ConsumerParents("team"); !slices.Equal(got, []RouteParent{{Service: svc, Port: 80}}) {
		t.Errorf("ConsumerParents(team) = %v", got)
	}
	if got := s.ConsumerParents("prod"); got != nil {
		t.Errorf("ConsumerParents(prod) = %v: a producer route is no consumer's", got)
	}
}
