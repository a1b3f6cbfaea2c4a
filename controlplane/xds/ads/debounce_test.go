package ads

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/controlplane/xds"
	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// debounceRig runs a debouncer on a fake clock and records the clock's time
// at every round.
type debounceRig struct {
	clock *clocktesting.FakeClock
	d     *debouncer
	t0    time.Time
	fired chan time.Time
}

func newDebounceRig(t *testing.T) *debounceRig {
	r := &debounceRig{clock: wefttest.FakeClock(t), fired: make(chan time.Time, 100)}
	r.t0 = r.clock.Now()
	r.d = newDebouncer(r.clock, 100*time.Millisecond, time.Second, func() { r.fired <- r.clock.Now() })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.d.run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

// round waits for the next round and returns its time relative to t0.
func (r *debounceRig) round(t *testing.T) time.Duration {
	t.Helper()
	select {
	case at := <-r.fired:
		return at.Sub(r.t0)
	case <-time.After(10 * time.Second):
		t.Fatal("no round")
	}
	return 0
}

func TestDebounceCoalescesABurst(t *testing.T) {
	r := newDebounceRig(t)
	for range 5 { // changes at 0, 20, ..., 80ms
		r.d.changed()
		r.clock.Step(20 * time.Millisecond)
	}
	r.clock.Step(80 * time.Millisecond) // 180ms: 100ms after the last change
	if at := r.round(t); at != 180*time.Millisecond {
		t.Fatalf("first round at %v, want 180ms (quiet time after the last change)", at)
	}
	// Nothing pending: time passes, no round; the next change makes exactly one.
	r.clock.Step(10 * time.Second)
	r.d.changed()
	r.clock.Step(100 * time.Millisecond)
	if at := r.round(t); at != 10*time.Second+280*time.Millisecond {
		t.Fatalf("second round at %v, want 10.28s: the burst made more than one round", at)
	}
}

func TestDebounceMaxDelay(t *testing.T) {
	r := newDebounceRig(t)
	for range 20 { // a change every 50ms, never 100ms of quiet
		r.d.changed()
		r.clock.Step(50 * time.Millisecond)
	}
	if at := r.round(t); at != time.Second {
		t.Fatalf("first round at %v, want 1s (MaxDelay after the first change)", at)
	}
	// Churn goes on: the next round again comes MaxDelay later.
	for range 20 {
		r.d.changed()
		r.clock.Step(50 * time.Millisecond)
	}
	if at := r.round(t); at != 2*time.Second {
		t.Fatalf("second round at %v, want 2s", at)
	}
}

func TestDebounceChangeDuringRound(t *testing.T) {
	clock := wefttest.FakeClock(t)
	inRound, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{}, 10)
	var d *debouncer
	first := true
	d = newDebouncer(clock, 100*time.Millisecond, time.Second, func() {
		if first {
			first = false
			inRound <- struct{}{}
			<-release
		}
		done <- struct{}{}
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	d.changed()
	clock.Step(100 * time.Millisecond)
	<-inRound
	d.changed() // arrives while the round runs: must cause the next one
	close(release)
	<-done
	clock.Step(100 * time.Millisecond)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a change made during a round was lost")
	}
}

// blockGen is fakeGen whose Generate, once armed, says it was entered and
// waits for gate.
type blockGen struct {
	*fakeGen
	armed   atomic.Bool
	entered chan struct{}
	gate    chan struct{}
}

func (g *blockGen) Generate(n xds.Node) (xds.Resources, error) {
	if g.armed.Load() {
		g.entered <- struct{}{}
		<-g.gate
	}
	return g.fakeGen.Generate(n)
}

// Regenerating is true from a change until the round it starts has
// regenerated every node, and only then false.
func TestRegenerating(t *testing.T) {
	g := &blockGen{fakeGen: newFakeGen(), entered: make(chan struct{}, 1), gate: make(chan struct{})}
	h := newHarness(t, harnessOpts{gen: g})
	connectSotW(h, saID("demo", "app"), "app-1.demo")
	if h.srv.Regenerating() {
		t.Fatal("regenerating with no change")
	}
	g.armed.Store(true)
	h.srv.Changed()
	if !h.srv.Regenerating() {
		t.Fatal("not regenerating with a change pending")
	}
	h.clock.Step(100 * time.Millisecond)
	<-g.entered // the round is generating the node
	if !h.srv.Regenerating() {
		t.Fatal("not regenerating during the round")
	}
	g.armed.Store(false)
	close(g.gate)
	h.waitRound()
	wefttest.Eventually(t, "not regenerating after the round", func() bool { return !h.srv.Regenerating() })
}
