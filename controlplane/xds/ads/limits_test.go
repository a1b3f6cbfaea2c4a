package ads

import (
	"fmt"
	"strings"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/controlplane/xds"
)

// The message limit at its edges: what the mutation run of
// controlplane/xds/ads (docs/mutation.md) showed no test pinned.

// sentStream is a grpc.ServerStream that records what it is asked to send.
type sentStream struct {
	grpc.ServerStream
	sent []any
}

func (s *sentStream) SendMsg(m any) error {
	s.sent = append(s.sent, m)
	return nil
}

// TestLimitStreamAtTheLimit: a response of exactly the limit goes out (as
// gRPC's MaxSendMsgSize lets it); one byte over ends the stream with
// ResourceExhausted and is recorded as withheld in the node's status.
func TestLimitStreamAtTheLimit(t *testing.T) {
	h := newHarness(t, harnessOpts{maxMsg: testMaxMsg})
	c := openSotW(h, saID("demo", "app"))
	c.send(&discovery.DiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	c.next()

	resp := &discovery.DiscoveryResponse{TypeUrl: resource.RouteType, VersionInfo: "v-big"}
	resp.Nonce = strings.Repeat("n", testMaxMsg-proto.Size(resp)-4) // a tag and a 3-byte length
	if got := proto.Size(resp); got != testMaxMsg {
		t.Fatalf("test response is %d bytes, want %d", got, testMaxMsg)
	}
	under := &sentStream{}
	if err := (limitStream{ServerStream: under, s: h.srv, node: "app-1.demo"}).SendMsg(resp); err != nil || len(under.sent) != 1 {
		t.Fatalf("a response of exactly the limit: SendMsg = %v, %d sent; want it sent", err, len(under.sent))
	}
	if w := h.typeStatus("app-1.demo", resource.RouteType).Withheld; w != nil {
		t.Fatalf("a response at the limit recorded as withheld: %+v", w)
	}

	resp.Nonce += "n"
	over := &sentStream{}
	err := (limitStream{ServerStream: over, s: h.srv, node: "app-1.demo"}).SendMsg(resp)
	if status.Code(err) != codes.ResourceExhausted || len(over.sent) != 0 {
		t.Fatalf("a response one byte over: SendMsg = %v, %d sent; want ResourceExhausted, nothing sent", err, len(over.sent))
	}
	w := h.typeStatus("app-1.demo", resource.RouteType).Withheld
	if w == nil || w.Version != "v-big" || w.Size != testMaxMsg+1 || w.Limit != testMaxMsg || w.Time.IsZero() {
		t.Fatalf("route status withheld = %+v, want v-big, %d bytes, limit %d", w, testMaxMsg+1, testMaxMsg)
	}
}

// TestOversizedAtTheLimit: a snapshot whose largest response is exactly
// the limit is published; one byte less of limit withholds it.
func TestOversizedAtTheLimit(t *testing.T) {
	gen := &routesGen{}
	gen.set(t, 100)
	res, _ := gen.Generate(xds.Node{})
	snap, _, sizes, err := buildSnapshotSized(res, nil, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	largest, url := 0, ""
	for u, sz := range sizes {
		if m := max(sz.sotw, sz.delta); m > largest {
			largest, url = m, u
		}
	}
	if over := (&Server{maxMsg: largest}).oversized(snap, sizes, nil); len(over) != 0 {
		t.Fatalf("limit %d, the largest response's size: %+v withheld, want none", largest, over)
	}
	over := (&Server{maxMsg: largest - 1}).oversized(snap, sizes, nil)
	if len(over) != 1 || over[0].typeURL != url || over[0].size != largest {
		t.Fatalf("limit %d: withheld %+v, want %s at %d bytes", largest-1, over, typeName(url), largest)
	}
}

// TestOversizedCountsRemovedNames: a delta response also names what the
// stream holds that is gone, so a snapshot that fits on its own is
// withheld when the names it removes from the last published one push its
// delta response over the limit.
func TestOversizedCountsRemovedNames(t *testing.T) {
	gen := &routesGen{}
	gen.set(t, 10)
	res, _ := gen.Generate(xds.Node{})
	snap, _, sizes, err := buildSnapshotSized(res, nil, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{maxMsg: testMaxMsg}
	if over := s.oversized(snap, sizes, nil); len(over) != 0 {
		t.Fatalf("the snapshot alone: %+v withheld, want none", over)
	}
	gone := map[string]string{}
	for i := range 1000 {
		gone[fmt.Sprintf("outbound|%05d|gone.demo.svc.cluster.local", i)] = "v0"
	}
	over := s.oversized(snap, sizes, map[string]map[string]string{resource.ClusterType: gone})
	if len(over) != 1 || over[0].typeURL != resource.ClusterType || over[0].size <= testMaxMsg {
		t.Fatalf("with 1,000 clusters removed: withheld %+v, want the cluster type over %d bytes", over, testMaxMsg)
	}
}
