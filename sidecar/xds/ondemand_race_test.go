package xds

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// hookConn wraps a connection; hook sees every request sent.
type hookConn struct {
	*grpc.ClientConn
	hook func(m any)
}

func (h hookConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := h.ClientConn.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, err
	}
	return hookStream{ClientStream: s, hook: h.hook}, nil
}

type hookStream struct {
	grpc.ClientStream
	hook func(m any)
}

func (s hookStream) SendMsg(m any) error { s.hook(m); return s.ClientStream.SendMsg(m) }

// TestDemandDuringIdleDropIsKept: a demand made while its cluster is
// being dropped for idleness subscribes to it again. Regression (an attack
// review, session 17): a connection demands a cluster in
// the window between redemand's reading of the demands (the cluster just
// expired) and the drop of the cluster. Demand sees the cluster still
// current and returns at once without waking Run; the demand (refs 1) is
// recorded but the cluster is unsubscribed and dropped. Every later
// Demand of it finds the demand already there (asked = false), so it does
// not wake Run either: nothing subscribes to the cluster again until some
// unrelated response is ACKed, and connections to the Service are refused
// after DemandTimeout for as long as the first connection stays open.
func TestDemandDuringIdleDropIsKept(t *testing.T) {
	const name = "outbound|80|server.demo"
	clk := testutil.FakeClock(t)
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	setSnapshot(t, cache, mesh{services: []string{"server.demo", "other.demo"}}, "v1")
	p := startPeer(t, "127.0.0.1:0", cache)

	var mu sync.Mutex
	var armed, unsubscribed bool
	entered, proceed, resubscribed := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var proceedOnce sync.Once
	letProceed := func() { proceedOnce.Do(func() { close(proceed) }) }
	hook := func(m any) {
		r, ok := m.(interface {
			GetTypeUrl() string
			GetResourceNamesSubscribe() []string
			GetResourceNamesUnsubscribe() []string
		})
		if !ok || r.GetTypeUrl() != model.ClusterType {
			return
		}
		mu.Lock()
		if unsubscribed && slices.Contains(r.GetResourceNamesSubscribe(), name) {
			unsubscribed = false
			close(resubscribed)
		}
		a := armed && slices.Contains(r.GetResourceNamesUnsubscribe(), name)
		if a {
			armed, unsubscribed = false, true
		}
		mu.Unlock()
		if a {
			close(entered)
			<-proceed
		}
	}
	c, err := New(ClientConfig{
		NodeID: testNode, Delta: true, OnDemand: true, OnDemandIdle: idle, Clock: clk,
		Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		Dial: func(context.Context) (grpc.ClientConnInterface, error) {
			cc, err := grpc.NewClient("passthrough:///"+p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			return hookConn{ClientConn: cc, hook: hook}, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c.Run)
	// Cleanups run last first: a test that fails while Run's send waits
	// in the hook lets it go before Run is stopped (else stopping Run
	// waits for ever, and the failure is a hang at the package's timeout).
	t.Cleanup(letProceed)
	waitReady(t, c)
	_, release := mustDemand(t, c, name)
	release()
	mu.Lock()
	armed = true
	mu.Unlock()
	for range 4 {
		for deadline := time.Now().Add(timeout); !clk.HasWaiters(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the sweep timer was not re-armed")
			}
		}
		clk.Step(idle / 4)
	}
	select {
	case <-entered:
	case <-time.After(timeout):
		t.Fatal("the idle cluster was not unsubscribed")
	}
	// In the window: a connection demands it; the cluster is still current.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, held, err := c.Demand(ctx, name)
	cancel()
	if err != nil {
		t.Fatalf("Demand in the window: %v", err)
	}
	defer held() // a long-lived connection
	letProceed()
	// The cluster is asked for again. (Whether a configuration without it
	// becomes current in between depends on how the demand and the drop
	// interleave: not asserted. Waiting for one made this test fail 1 to 3
	// times in 300 runs in one process, the cluster kept and subscribed
	// again, every later demand served.)
	select {
	case <-resubscribed:
	case <-time.After(timeout):
		t.Fatalf("the cluster demanded while it was being dropped was not subscribed again; status %+v", c.Status())
	}

	// A new connection to the Service.
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, rel, err := c.Demand(ctx, name); err != nil {
		t.Errorf("a demand of a cluster held by an open connection was lost: %v; Status.Demanded %q (but not subscribed)", err, c.Status().Demanded)
	} else {
		rel()
	}
}
