package balance

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
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
// over short windows it favours whichever endpoints were not slow lately;
// that is the cost of its latency awareness, which this measures.
//
//	go test ./sidecar/balance/ -run '^$' -bench SpreadAmongEqualEndpoints -benchtime 1x
func BenchmarkSpreadAmongEqualEndpoints(b *testing.B) {
	for _, decay := range []time.Duration{10 * time.Second, time.Second, 100 * time.Millisecond} {
		for _, spikeP := range []float64{0, 0.01} {
			b.Run(fmt.Sprintf("decay=%v/spikes=%v", decay, spikeP), func(b *testing.B) {
				for range b.N {
					minW, maxW, minAll, maxAll := simulateSpread(3, 4, 30_000, 900, decay, spikeP, 1)
					b.ReportMetric(minW, "min-window-%")
					b.ReportMetric(maxW, "max-window-%")
					b.ReportMetric(minAll, "min-run-%")
					b.ReportMetric(maxAll, "max-run-%")
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

// simulateSpread runs n requests from c clients over k alike endpoints and
// returns the extreme shares (% of even) over windows of window requests
// and over the run.
func simulateSpread(k, c, n, window int, decay time.Duration, spikeP float64, seed uint64) (minW, maxW, minAll, maxAll float64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var epoch time.Time // a simulated clock from the zero time: only differences matter
	var now time.Duration
	bal := New(Config{Decay: decay, Now: func() time.Time { return epoch.Add(now) }, Rand: rng.IntN})
	addrs := make([]netip.AddrPort, k)
	for i := range addrs {
		addrs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)}), 80)
	}
	bal.Update(addrs)
	index := map[netip.AddrPort]int{}
	for i, a := range addrs {
		index[a] = i
	}
	latency := func() time.Duration {
		d := time.Duration(float64(time.Millisecond) * math.Exp(0.25*rng.NormFloat64()))
		if rng.Float64() < spikeP {
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
		heap.Push(q, simEvent{at: now + latency(), req: r})
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
	minAll, maxAll = math.Inf(1), 0
	for _, a := range all {
		share := 100 * float64(a) * float64(k) / float64(n)
		minAll, maxAll = min(minAll, share), max(maxAll, share)
	}
	return minW, maxW, minAll, maxAll
}
