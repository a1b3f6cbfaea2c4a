package ads

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/controlplane/xds"
)

// withRoutes adds to testResources(rev) an outbound listener whose HTTP
// connection manager takes route configuration rds (over ADS), and the
// route configurations named in routes.
func withRoutes(t *testing.T, rev int, rds string, routes ...string) xds.Resources {
	t.Helper()
	res := testResources(rev, false)
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "egress", RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
		RouteConfigName: rds,
		ConfigSource:    &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	out := res[resource.ListenerType][1].(*listenerv3.Listener)
	out.DefaultFilterChain = &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}
	for _, r := range routes {
		res[resource.RouteType] = append(res[resource.RouteType], &routev3.RouteConfiguration{Name: r})
	}
	return res
}

// manyClusters is withRoutes(0, "80", "80") with n more static clusters:
// a list longer than its type URL has bytes per 8 (the cache's key holds
// the URL and 8 bytes per entry).
func manyClusters(t *testing.T, n int) xds.Resources {
	res := withRoutes(t, 0, "80", "80")
	for i := range n {
		c := proto.Clone(res[resource.ClusterType][0]).(*clusterv3.Cluster)
		c.Name = fmt.Sprintf("inbound|%d", 9000+i)
		c.LoadAssignment.ClusterName = c.Name
		res[resource.ClusterType] = append(res[resource.ClusterType], c)
	}
	return res
}

// TestCachedSnapshotsAgree: a snapshot built through the server's cache is
// the one built without it (versions, or the refusal), over rounds that
// repeat content in new pointers, change it, and come back to it; a list
// seen in the round before is reused, not rebuilt, so nodes with the same
// list share it. A listener's route configuration (RDS) counts as a
// reference: a missing one is an inconsistent snapshot, with or without
// the cache.
func TestCachedSnapshotsAgree(t *testing.T) {
	c := newResCache()
	listeners := func(s *cachev3.Snapshot) uintptr {
		return reflect.ValueOf(s.GetResourcesAndTTL(resource.ListenerType)).Pointer()
	}
	var prev *cachev3.Snapshot // kept: its lists stay allocated while compared
	for i, round := range []struct {
		res  xds.Resources
		err  string // "" for none
		same bool   // the listeners list is the previous round's
	}{
		{res: withRoutes(t, 0, "80", "80")},
		{res: withRoutes(t, 0, "80", "80"), same: true}, // equal content, new pointers
		{res: withRoutes(t, 1, "80", "80")},
		{res: withRoutes(t, 1, "80", "80"), same: true},
		{res: withRoutes(t, 1, "90"), err: "inconsistent snapshot"}, // the listener's route configuration is missing
		{res: withRoutes(t, 1, "80", "80", "90"), err: "inconsistent snapshot"},
		{res: withRoutes(t, 1, "90", "90")},
		{res: manyClusters(t, 10)},
		{res: manyClusters(t, 10), same: true},
		{res: testResources(1, true), err: `listener "inbound" is invalid`},
	} {
		want, wantV, wantErr := buildSnapshot(round.res)
		got, gotV, gotErr := buildSnapshotCached(round.res, c, nil)
		c.rotate()
		if round.err != "" {
			if wantErr == nil || gotErr == nil || !strings.Contains(wantErr.Error(), round.err) || gotErr.Error() != wantErr.Error() {
				t.Fatalf("round %d: without cache %v, with %v; want both %q", i, wantErr, gotErr, round.err)
			}
			continue
		}
		if wantErr != nil || gotErr != nil {
			t.Fatalf("round %d: without cache %v, with %v", i, wantErr, gotErr)
		}
		if fmt.Sprint(wantV) != fmt.Sprint(gotV) || fmt.Sprint(want.VersionMap) != fmt.Sprint(got.VersionMap) {
			t.Fatalf("round %d: versions %v with the cache, %v without", i, gotV, wantV)
		}
		if reused := prev != nil && listeners(got) == listeners(prev); reused != round.same {
			t.Errorf("round %d: listeners list reused %t, want %t", i, reused, round.same)
		}
		prev = got
	}
}
