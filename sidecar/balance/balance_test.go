package balance

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/internal/testutil"
)

func addrs(n int) []netip.AddrPort {
	out := make([]netip.AddrPort, n)
	for i := range out {
		out[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}), 8080)
	}
	return out
}

func seeded(seed uint64) func(int) int { return rand.New(rand.NewPCG(seed, seed^0x9e3779b9)).IntN }

func pick(t *testing.T, b *Balancer, avoid ...netip.AddrPort) *Request {
	t.Helper()
	r, err := b.Pick(avoid...)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	return r
}

// newBalancer is the set-up of most tests here: a balancer on a fake clock
// drawing from seeded(seed), updated with the n endpoints addrs(n).
func newBalancer(t *testing.T, seed uint64, n int) (*Balancer, *clocktesting.FakeClock, []netip.AddrPort) {
	t.Helper()
	c := testutil.FakeClock(t)
	b := New(Config{Clock: c, Rand: seeded(seed)})
	eps := addrs(n)
	b.Update(eps)
	return b, c, eps
}

// Equal endpoints share the load evenly: ±10 % of a third each over
// 30,000 requests answered in the same time.
func TestEqualEndpointsShareEvenly(t *testing.T) {
	b, c, eps := newBalancer(t, 1, 3)
	count := map[netip.AddrPort]int{}
	const n = 30000
	for range n {
		r := pick(t, b)
		count[r.Addr]++
		c.Step(5 * time.Millisecond)
		r.Done(Success)
	}
	for _, a := range eps {
		if got := count[a]; got < n/3*9/10 || got > n/3*11/10 {
			t.Errorf("%v got %d of %d requests, want %d ±10%%", a, got, n, n/3)
		}
	}
}

// A slow endpoint loses most of its traffic at once, and is still tried
// now and then (its estimate decays), so it wins traffic back when it
// recovers.
func TestSlowEndpointLosesTrafficAndWinsItBack(t *testing.T) {
	b, c, eps := newBalancer(t, 2, 3)
	slow := eps[0]
	latency := func(a netip.AddrPort, slowNow bool) time.Duration {
		if a == slow && slowNow {
			return 200 * time.Millisecond
		}
		return 10 * time.Millisecond
	}
	run := func(n int, slowNow bool) map[netip.AddrPort]int {
		count := map[netip.AddrPort]int{}
		for range n {
			r := pick(t, b)
			count[r.Addr]++
			c.Step(latency(r.Addr, slowNow))
			r.Done(Success)
		}
		return count
	}
	count := run(3000, true)
	if got := count[slow]; got == 0 || got > 3000/20 {
		t.Errorf("slow endpoint got %d of 3000 requests, want some but under 5%%", got)
	}
	// Recovered: its 200 ms estimate decays to within the tolerance of
	// the others' 10 ms in Decay × ln 16 ≈ 28 s after its last slow
	// answer, which may have come at the end of the slow phase; after
	// 60 s (6,000 requests) it is back to its share.
	run(6000, false)
	count = run(6000, false)
	if got := count[slow]; got < 6000/3*9/10 {
		t.Errorf("recovered endpoint got %d of 6000 requests, want at least 90%% of a third", got)
	}
}

// Requests in flight count: of endpoints answering in the same time, the
// one with requests pending loses every draw against an idle one.
func TestPendingRequestsCount(t *testing.T) {
	b, _, eps := newBalancer(t, 3, 3)
	var busy []*Request
	for range 4 {
		busy = append(busy, pick(t, b, eps[1], eps[2]))
	}
	for _, r := range busy {
		if r.Addr != eps[0] {
			t.Fatalf("Pick avoiding %v and %v gave %v", eps[1], eps[2], r.Addr)
		}
	}
	for range 100 {
		r := pick(t, b)
		if r.Addr == eps[0] {
			t.Fatalf("picked %v with 4 requests pending over two idle endpoints", r.Addr)
		}
		r.Done(Cancelled)
	}
	for _, r := range busy {
		r.Done(Success)
	}
	for _, s := range b.State() {
		if s.Pending != 0 {
			t.Errorf("%v: %d pending after every Done", s.Addr, s.Pending)
		}
	}
}

// The two draws are distinct endpoints: with a source that always says 0
// the second draw is shifted past the first, so the cheaper of the two
// endpoints wins rather than the first one every time.
func TestTwoDistinctChoices(t *testing.T) {
	c := testutil.FakeClock(t)
	b := New(Config{Clock: c, Rand: func(int) int { return 0 }})
	eps := addrs(2)
	b.Update(eps)
	r := pick(t, b) // eps[0] and eps[1] tie; eps[0] kept
	if r.Addr != eps[0] {
		t.Fatalf("first pick %v, want %v (ties keep the first draw)", r.Addr, eps[0])
	}
	if r2 := pick(t, b); r2.Addr != eps[1] {
		t.Fatalf("second pick %v, want %v: eps[0] has a request pending", r2.Addr, eps[1])
	}
}

func TestNoEndpoints(t *testing.T) {
	b := New(Config{})
	if _, err := b.Pick(); !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("Pick on an empty balancer: %v, want ErrNoEndpoints", err)
	}
	b.Update(addrs(1))
	b.Update(nil)
	if _, err := b.Pick(); !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("Pick after the set emptied: %v, want ErrNoEndpoints", err)
	}
}

// A retry avoids the endpoints it tried, unless nothing else is left.
func TestAvoid(t *testing.T) {
	b, _, eps := newBalancer(t, 4, 3)
	for range 200 {
		r := pick(t, b, eps[0], eps[2])
		if r.Addr != eps[1] {
			t.Fatalf("picked %v avoiding %v and %v", r.Addr, eps[0], eps[2])
		}
		r.Done(Cancelled)
	}
	r := pick(t, b, eps...)
	r.Done(Cancelled)
}

// A failure never makes an endpoint look faster: an endpoint that fails
// at once does not draw traffic for its speed.
func TestFastFailuresDoNotAttract(t *testing.T) {
	b, c, eps := newBalancer(t, 5, 2)
	count := map[netip.AddrPort]int{}
	for range 2000 {
		r := pick(t, b)
		count[r.Addr]++
		if r.Addr == eps[0] {
			c.Step(time.Millisecond)
			r.Done(Failure)
		} else {
			c.Step(20 * time.Millisecond)
			r.Done(Success)
		}
	}
	if count[eps[0]] > count[eps[1]] {
		t.Errorf("the endpoint failing in 1 ms got %d requests, the one answering in 20 ms %d", count[eps[0]], count[eps[1]])
	}
	if st := b.State(); st[0].RTT < DefaultRTT/2 {
		t.Errorf("failing endpoint's estimate %v, want it never below what failures imply", st[0].RTT)
	}
}

func outlierBalancer(c *clocktesting.FakeClock, n int) (*Balancer, []netip.AddrPort) {
	b := New(Config{Clock: c, Rand: seeded(6), Outlier: Outlier{
		Consecutive: 3, BaseEjection: 30 * time.Second, MaxEjection: 100 * time.Second,
		MaxEjectionPercent: 50, Interval: 10 * time.Second,
	}})
	eps := addrs(n)
	b.Update(eps)
	return b, eps
}

// others is every endpoint of b but a.
func others(b *Balancer, a netip.AddrPort) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range b.State() {
		if s.Addr != a {
			out = append(out, s.Addr)
		}
	}
	return out
}

// fail sends n requests to a (the others avoided, as a retry would) that
// fail.
func fail(t *testing.T, b *Balancer, a netip.AddrPort, n int) {
	t.Helper()
	for range n {
		r := pick(t, b, others(b, a)...)
		if r.Addr != a {
			t.Fatalf("Pick avoiding all but %v gave %v", a, r.Addr)
		}
		r.Done(Failure)
	}
}

func ejected(b *Balancer, a netip.AddrPort) bool {
	for _, s := range b.State() {
		if s.Addr == a {
			return s.Ejected
		}
	}
	return false
}

func TestConsecutiveFailuresEject(t *testing.T) {
	c := testutil.FakeClock(t)
	b, eps := outlierBalancer(c, 4)
	fail(t, b, eps[0], 2)
	pick(t, b, others(b, eps[0])...).Done(Success) // a success in between resets the count
	fail(t, b, eps[0], 2)
	if ejected(b, eps[0]) {
		t.Fatal("ejected after 2 failures, a success, 2 failures: the count must restart at a success")
	}
	fail(t, b, eps[0], 1)
	if !ejected(b, eps[0]) {
		t.Fatal("not ejected after 3 consecutive failures")
	}
	for range 500 {
		r := pick(t, b)
		if r.Addr == eps[0] {
			t.Fatal("an ejected endpoint was picked while others are in rotation")
		}
		r.Done(Success)
	}
	c.Step(30*time.Second - time.Nanosecond)
	if !ejected(b, eps[0]) {
		t.Fatal("ejection ended before BaseEjection")
	}
	c.Step(time.Nanosecond)
	if ejected(b, eps[0]) {
		t.Fatal("still ejected after BaseEjection")
	}
	// Ejected again right away: twice as long.
	fail(t, b, eps[0], 3)
	c.Step(60*time.Second - time.Nanosecond)
	if !ejected(b, eps[0]) {
		t.Fatal("the second ejection ended before 2 × BaseEjection")
	}
	c.Step(time.Nanosecond)
	// Third: 90 s; fourth would be 120 s, capped at MaxEjection 100 s.
	fail(t, b, eps[0], 3)
	c.Step(90 * time.Second)
	fail(t, b, eps[0], 3)
	c.Step(100*time.Second - time.Nanosecond)
	if !ejected(b, eps[0]) {
		t.Fatal("the fourth ejection ended before MaxEjection")
	}
	c.Step(time.Nanosecond)
	if ejected(b, eps[0]) {
		t.Fatal("an ejection outlasted MaxEjection")
	}
	// 25 s in rotation (two Intervals) takes the multiplier from 4 to 2:
	// the next ejection lasts 3 × 30 s.
	c.Step(25 * time.Second)
	fail(t, b, eps[0], 3)
	c.Step(90*time.Second - time.Nanosecond)
	if !ejected(b, eps[0]) {
		t.Fatal("ejection after two quiet intervals ended before 3 × BaseEjection")
	}
	c.Step(time.Nanosecond)
	if ejected(b, eps[0]) {
		t.Fatal("ejection after two quiet intervals lasted past 3 × BaseEjection")
	}
}

// No more than MaxEjectionPercent of the endpoints are out at once (at
// least one may be), and when every endpoint is out, requests still go
// somewhere.
func TestEjectionLimitAndPanic(t *testing.T) {
	c := testutil.FakeClock(t)
	b, eps := outlierBalancer(c, 4) // 50 %: two of four
	fail(t, b, eps[0], 3)
	fail(t, b, eps[1], 3)
	fail(t, b, eps[2], 3)
	n := 0
	for _, s := range b.State() {
		if s.Ejected {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d of 4 endpoints ejected, want 2 (MaxEjectionPercent 50)", n)
	}

	one, only := outlierBalancer(c, 1)
	fail(t, one, only[0], 3)
	if !ejected(one, only[0]) {
		t.Fatal("a single endpoint was not ejected: at least one may always be")
	}
	r := pick(t, one)
	if r.Addr != only[0] {
		t.Fatalf("panic mode picked %v", r.Addr)
	}
	r.Done(Success)
}

// Update keeps what was learned of the endpoints that stay; a request to
// a removed endpoint may still finish.
func TestUpdateKeepsState(t *testing.T) {
	c := testutil.FakeClock(t)
	b, eps := outlierBalancer(c, 4)
	fail(t, b, eps[0], 3)
	inflight := pick(t, b, others(b, eps[3])...)
	b.Update([]netip.AddrPort{eps[0], eps[1], eps[1], eps[2]})
	if !ejected(b, eps[0]) {
		t.Fatal("Update forgot an ejection")
	}
	if st := b.State(); len(st) != 3 {
		t.Fatalf("state after Update with a duplicate: %+v", st)
	}
	inflight.Done(Failure)
	inflight.Done(Failure)
	for range 100 {
		r := pick(t, b)
		if r.Addr == eps[3] {
			t.Fatal("picked a removed endpoint")
		}
		r.Done(Success)
	}
}

// Done twice counts once; Cancelled learns nothing.
func TestDoneOnce(t *testing.T) {
	b, c, _ := newBalancer(t, 7, 1)
	r := pick(t, b)
	c.Step(time.Second)
	r.Done(Cancelled)
	r.Done(Success)
	st := b.State()[0]
	if st.Pending != 0 {
		t.Fatalf("pending %d after Done twice", st.Pending)
	}
	if st.RTT >= DefaultRTT {
		t.Fatalf("a cancelled request of 1 s moved the estimate to %v", st.RTT)
	}
}

// Sent restarts the response time: a slow connection set-up before it
// is not the endpoint's response time.
func TestSentExcludesConnectionSetup(t *testing.T) {
	b, c, _ := newBalancer(t, 8, 1)
	r := pick(t, b)
	c.Step(time.Second) // the handshake
	r.Sent()
	c.Step(5 * time.Millisecond)
	r.Done(Success)
	if st := b.State()[0]; st.RTT > DefaultRTT {
		t.Fatalf("estimate %v after a 5 ms answer on a connection that took 1 s to set up", st.RTT)
	}
	r = pick(t, b)
	c.Step(time.Second)
	r.Done(Success)
	if st := b.State()[0]; st.RTT < time.Second {
		t.Fatalf("estimate %v after a 1 s answer without Sent", st.RTT)
	}
}

// Many goroutines picking and reporting at once (go test -race).
func TestConcurrentUse(t *testing.T) {
	b := New(Config{Outlier: Outlier{Consecutive: 5}})
	eps := addrs(5)
	b.Update(eps)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				r, err := b.Pick()
				if err != nil {
					t.Error(err)
					return
				}
				res := Success
				if (g+i)%7 == 0 {
					res = Failure
				}
				r.Done(res)
				if i%100 == 0 {
					b.Update(eps[:3+(i/100)%3])
				}
			}
		})
	}
	wg.Wait()
	for _, s := range b.State() {
		if s.Pending != 0 {
			t.Errorf("%v: %d pending after every request finished", s.Addr, s.Pending)
		}
	}
}

// OnEject is told of every ejection, with its length, and of nothing
// else: not of failures short of the threshold, nor of ejections the
// limit prevents.
func TestOnEject(t *testing.T) {
	c := testutil.FakeClock(t)
	type ejection struct {
		addr netip.AddrPort
		d    time.Duration
	}
	var mu sync.Mutex
	var got []ejection
	b := New(Config{Clock: c, Rand: seeded(7), Outlier: Outlier{
		Consecutive: 3, BaseEjection: 30 * time.Second, MaxEjection: 100 * time.Second,
		MaxEjectionPercent: 50, Interval: 10 * time.Second,
	}, OnEject: func(a netip.AddrPort, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ejection{a, d})
	}})
	eps := addrs(4)
	b.Update(eps)
	fail(t, b, eps[0], 2)
	if len(got) != 0 {
		t.Fatalf("OnEject after 2 failures of 3: %v", got)
	}
	fail(t, b, eps[0], 1)
	fail(t, b, eps[1], 3)
	fail(t, b, eps[2], 3) // over the 50 % limit: not ejected
	want := []ejection{{eps[0], 30 * time.Second}, {eps[1], 30 * time.Second}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("OnEject calls %v, want %v", got, want)
	}
	// Ejected again once back: twice as long.
	c.Step(30 * time.Second)
	fail(t, b, eps[0], 3)
	if last := got[len(got)-1]; len(got) != 3 || last != (ejection{eps[0], 60 * time.Second}) {
		t.Fatalf("OnEject calls %v, want a third of %v for 1m0s", got, eps[0])
	}
}

// Observe learns a long-lived request's outcome at its response head
// and keeps it in flight until Done; Done then learns nothing more.
func TestObserveKeepsRequestInFlight(t *testing.T) {
	c := testutil.FakeClock(t)
	b := New(Config{Clock: c, Rand: seeded(8), Outlier: Outlier{Consecutive: 2}})
	eps := addrs(1)
	b.Update(eps)
	r := pick(t, b)
	c.Step(10 * time.Millisecond)
	r.Observe(Success)
	st := b.State()[0]
	if st.Pending != 1 || st.RTT >= DefaultRTT {
		t.Fatalf("after Observe: %+v, want 1 pending, an RTT below the default (a 10ms answer learned)", st)
	}
	c.Step(time.Hour) // the tunnel's life is not a response time
	r.Done(Failure)   // nor is its end an outcome
	r.Done(Failure)
	st = b.State()[0]
	if st.Pending != 0 || st.Failures != 0 || st.RTT >= DefaultRTT {
		t.Fatalf("after Done: %+v, want nothing pending, no failure, no hour-long response time", st)
	}
	// Observe's failures count toward ejection as Done's do.
	for range 2 {
		r := pick(t, b)
		r.Observe(Failure)
		r.Done(Success)
	}
	if !ejected(b, eps[0]) {
		t.Fatal("two observed failures did not eject")
	}
}
