package balance

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// BenchmarkSpreadAmongEqualEndpoints measures how evenly the balancer
// spreads requests over endpoints that are all alike: a discrete-event
// simulation on a simulated clock (no sleeping, no wall time), C clients
// each sending its next request when the last is answered, every answer
// taking a median of 1 ms (log-normal, σ 0.25) and, with probability
// spikeP, 10 ms more (a collector pause, a descheduled thread). Reported:
// the smallest and largest share of the requests, as % of an even share,
// over windows of window requests (as one e2e burst sees them) and over
// the whole run. Peak-EWMA remembers a slow answer for about Decay, so
// without a tolerance (tol=-1: only equal costs tie) it favours over short
// windows whichever endpoints were not slow lately; a tolerance makes
// alike endpoints tie and share like round robin.
//
//	go test ./sidecar/balance/ -run '^$' -bench SpreadAmongEqualEndpoints -benchtime 1x
func BenchmarkSpreadAmongEqualEndpoints(b *testing.B) {
	for _, tol := range []float64{-1, 0.25, DefaultTolerance} {
		for _, decay := range []time.Duration{DefaultDecay, time.Second} {
			for _, spikeP := range []float64{0, 0.01} {
				b.Run(fmt.Sprintf("tol=%v/decay=%v/spikes=%v", tol, decay, spikeP), func(b *testing.B) {
					for range b.N {
						s := simulate(b, simSetup{k: 3, c: 4, n: 30_000, window: 900, decay: decay, tolerance: tol, spikeP: spikeP, seed: 1})
						b.ReportMetric(s.minWindow, "min-window-%")
						b.ReportMetric(s.maxWindow, "max-window-%")
						b.ReportMetric(s.minRun, "min-run-%")
						b.ReportMetric(s.maxRun, "max-run-%")
					}
				})
			}
		}
	}
}

// BenchmarkSlowEndpointShare is the other side of the tolerance: the share
// of requests (% of an even share) that one endpoint gets when its answers
// take slow× as long as the others' (same simulation, no spikes). A
// latency-aware balancer gives a 2× slower endpoint well under its share.
//
//	go test ./sidecar/balance/ -run '^$' -bench SlowEndpointShare -benchtime 1x
func BenchmarkSlowEndpointShare(b *testing.B) {
	for _, tol := range []float64{-1, 0.25, DefaultTolerance} {
		for _, slow := range []float64{1.25, 1.5, 2, 5} {
			b.Run(fmt.Sprintf("tol=%v/slow=%v", tol, slow), func(b *testing.B) {
				for range b.N {
					s := simulate(b, simSetup{k: 3, c: 4, n: 30_000, window: 900, decay: DefaultDecay, tolerance: tol, slow: slow, seed: 1})
					b.ReportMetric(s.slowShare, "slow-share-%")
				}
			})
		}
	}
}

type simEvent struct {
	at  time.Duration
	req *Request
}

type simQueue []simEvent

func (q simQueue) Len() int           { return len(q) }
func (q simQueue) Less(i, j int) bool { return q[i].at < q[j].at }
func (q simQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)        { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// simSetup is one simulation: n requests from c clients over k endpoints,
// shares counted over windows of window requests; endpoint 0 answers
// slow× slower when slow > 0.
type simSetup struct {
	k, c, n, window int
	decay           time.Duration
	tolerance       float64
	spikeP          float64
	slow            float64
	seed            uint64
}

// simResult holds the extreme shares (% of even) over the windows and over
// the run, and endpoint 0's share of the run.
type simResult struct {
	minWindow, maxWindow, minRun, maxRun, slowShare float64
}

func simulate(tb testing.TB, s simSetup) simResult {
	k, c, n, window := s.k, s.c, s.n, s.window
	rng := rand.New(rand.NewPCG(s.seed, 7))
	clk := testutil.FakeClock(tb)
	start := clk.Now()
	var now time.Duration
	bal := New(Config{Decay: s.decay, Tolerance: s.tolerance, Clock: clk, Rand: rng.IntN})
	addrs := make([]netip.AddrPort, k)
	for i := range addrs {
		addrs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)}), 80)
	}
	bal.Update(addrs)
	index := map[netip.AddrPort]int{}
	for i, a := range addrs {
		index[a] = i
	}
	latency := func(a netip.AddrPort) time.Duration {
		d := time.Duration(float64(time.Millisecond) * math.Exp(0.25*rng.NormFloat64()))
		if s.slow > 0 && a == addrs[0] {
			d = time.Duration(float64(d) * s.slow)
		}
		if rng.Float64() < s.spikeP {
			d += 10 * time.Millisecond
		}
		return d
	}
	q := &simQueue{}
	sent := 0
	send := func() {
		r, err := bal.Pick()
		if err != nil {
			panic(err)
		}
		r.Sent()
		sent++
		heap.Push(q, simEvent{at: now + latency(r.Addr), req: r})
	}
	for range c {
		send()
	}
	all := make([]int, k)
	win := make([]int, k)
	minW, maxW, done := math.Inf(1), 0.0, 0
	for q.Len() > 0 {
		ev := heap.Pop(q).(simEvent)
		now = ev.at
		clk.SetTime(start.Add(now))
		ev.req.Done(Success)
		i := index[ev.req.Addr]
		all[i]++
		win[i]++
		done++
		if done%window == 0 {
			for _, w := range win {
				share := 100 * float64(w) * float64(k) / float64(window)
				minW, maxW = min(minW, share), max(maxW, share)
			}
			clear(win)
		}
		if sent < n {
			send()
		}
	}
	r := simResult{minWindow: minW, maxWindow: maxW, minRun: math.Inf(1)}
	for i, a := range all {
		share := 100 * float64(a) * float64(k) / float64(n)
		r.minRun, r.maxRun = min(r.minRun, share), max(r.maxRun, share)
		if i == 0 {
			r.slowShare = share
		}
	}
	return r
}
