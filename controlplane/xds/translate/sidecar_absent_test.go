package translate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	sxds "github.com/weftmesh/weft/sidecar/xds"
)

// TestDemandOfAMissingServiceFailsAtOnce, against weft's own ADS server:
// an on-demand sidecar asking for the cluster of a Service the control
// plane does not have (deleted since the listener naming it was sent) is
// told so (removed_resources) and refuses at once, well before its 5 s
// wait would run out; the demand is forgotten, so once the Service exists
// again the next demand asks afresh and gets it. A Service that exists is
// unaffected.
func TestDemandOfAMissingServiceFailsAtOnce(t *testing.T) {
	const (
		kept    = "outbound|80|svc-0000.ns-00"
		deleted = "outbound|80|svc-0001.ns-01"
	)
	od := newAgreeMeshWith(t, true, onDemand)
	contents := func(services int) mesh.Contents {
		c := bigContents(v1alpha1.OutboundAllowAny, services, 2)
		for _, s := range c.Services {
			s.Ports[0].AppProtocol = "" // TCP: its cluster is learnt on demand
		}
		return c
	}
	if _, _, err := od.push(contents(1)); err != nil {
		t.Fatal(err)
	}
	c := od.nodes[agreeClientNode]
	demand := func(name string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cfg, release, err := c.Demand(ctx, name)
		if err == nil {
			defer release()
			if cfg.Clusters[name] == nil || cfg.Endpoints[name] == nil {
				return errors.New("returned without the cluster and its endpoints")
			}
		}
		return err
	}
	if err := demand(kept); err != nil {
		t.Fatalf("Demand(%s), a Service that exists: %v", kept, err)
	}
	for _, name := range []string{deleted, "outbound|80|never.ns-00"} {
		if err := demand(name); !errors.Is(err, sxds.ErrNoSuchCluster) {
			t.Errorf("Demand(%s), a Service the control plane does not have: %v, want %v (at once, not the deadline)", name, err, sxds.ErrNoSuchCluster)
		}
	}
	if got := c.Status().Demanded; !slices.Equal(got, []string{kept}) {
		t.Errorf("Status.Demanded = %q, want only %s: the absent ones are forgotten", got, kept)
	}
	// The Service is created: the next demand asks again and gets it.
	if _, _, err := od.push(contents(2)); err != nil {
		t.Fatal(err)
	}
	if err := demand(deleted); err != nil {
		t.Errorf("Demand(%s) once it exists: %v", deleted, err)
	}
}

// TestAbsentAnswerNotLostToARacingDemand: connections to a Service the
// control plane does not have keep coming (a client retrying), from
// several goroutines; every one is refused at once (ErrNoSuchCluster),
// none waits out its deadline, and no demand is left behind. Regression
// (an attack review, session 19): a demand made between forgetAbsent and
// the re-subscription left the client's subscription as it was, so the
// control plane, which answers an absent name once, never answered again,
// and every later connection waited its whole deadline.
func TestAbsentAnswerNotLostToARacingDemand(t *testing.T) {
	const name = "outbound|80|never.ns-00"
	od := newAgreeMeshWith(t, true, onDemand)
	if _, _, err := od.push(bigContents(v1alpha1.OutboundAllowAny, 1, 2)); err != nil {
		t.Fatal(err)
	}
	c := od.nodes[agreeClientNode]
	var (
		mu   sync.Mutex
		errs = map[string]int{}
	)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 2000 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, release, err := c.Demand(ctx, name)
				cancel()
				if err == nil {
					release()
				}
				if !errors.Is(err, sxds.ErrNoSuchCluster) {
					mu.Lock()
					errs[fmt.Sprint(err)]++
					mu.Unlock()
					return // one is enough; the rest would wait as long
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Errorf("of up to 8,000 demands of a cluster the control plane does not have, some were not refused at once: %v", errs)
	}
	if got := c.Status().Demanded; len(got) != 0 {
		t.Errorf("Status.Demanded = %q after every demand was refused, want none", got)
	}
}
