package ads

import (
	"context"
	"math"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults and bounds of Config.LookupBudget and Config.LookupBurst.
const (
	DefaultLookupBudget = 0.05
	DefaultLookupBurst  = 500 * time.Millisecond
	// MinLookupBudget: below it (a thousandth of a core) a node past its
	// burst could wait for days, which is a refusal in disguise.
	MinLookupBudget = 0.001
	// MaxLookupBurst: more is no bound at all.
	MaxLookupBurst = time.Minute
	// maxLookupWait caps one wait, whatever the debt: a sidecar's lookup
	// gives up after 5 s anyway.
	maxLookupWait = time.Minute
	// maxKeptBudgets: past it, the kept budgets of gone nodes that are
	// full again are forgotten (a full budget remembers nothing).
	maxKeptBudgets = 1024
)

// lookupBudget is a node's allowance of time for what its lookups cost
// the control plane: a token bucket of time, refilled at
// Config.LookupBudget seconds a second up to Config.LookupBurst. It is
// charged, by their duration on the Server's clock, with each
// regeneration a lookup makes (listenersAsked, timed once it holds the
// node's generation lock), with the watch each of the node's requests
// opens (absentCache, whose cost grows with the names it subscribes to),
// and with each of its streams' first generation. It can go negative,
// the work that overdraws it having run; a request that subscribes to a
// new destination then waits until it is not. So a sidecar asking for
// new destinations, existing or not, as fast as its app can open
// connections costs the control plane at most that fraction of a core
// over time, and the lookups of a pod's start, within the burst, wait
// for nothing. A node's budget outlives it while not full
// (Server.budgets): reconnecting does not refill it. Guarded by
// Server.mu.
type lookupBudget struct {
	left time.Duration
	at   time.Time // when left was last brought up to date; zero: never (full)
}

// refill brings b up to now; a clock that went back refills nothing.
// Called with Server.mu held.
func (b *lookupBudget) refill(now time.Time, rate float64, burst time.Duration) {
	if b.at.IsZero() {
		b.left, b.at = burst, now
		return
	}
	d := now.Sub(b.at)
	if d <= 0 {
		return
	}
	b.at = now
	// In float64: burst − left may not fit a Duration's int64 when left
	// is deeply negative, nor d × rate added to left.
	if add := float64(d) * rate; add >= float64(burst)-float64(b.left) {
		b.left = burst
	} else {
		b.left += time.Duration(add)
	}
}

// spend charges d (never less than nothing). Called with Server.mu held.
func (b *lookupBudget) spend(d time.Duration) {
	if d <= 0 {
		return
	}
	if float64(b.left)-float64(d) < math.MinInt64/2 {
		b.left = math.MinInt64 / 2
		return
	}
	b.left -= d
}

// full says whether b holds the whole burst at now. Called with
// Server.mu held.
func (b *lookupBudget) full(now time.Time, rate float64, burst time.Duration) bool {
	c := *b
	c.refill(now, rate, burst)
	return c.left >= burst
}

// lookupWait waits until n's lookup budget is not overdrawn. A wait is
// counted (weft_xds_lookup_waits_total). The control plane stopping, or
// the stream ending, first is an error: the request must then not be
// answered from the node's snapshot as it stands, which would say a
// destination it lacks for now does not exist.
func (s *Server) lookupWait(ctx context.Context, n *nodeState) error {
	s.mu.Lock()
	n.lookups.refill(s.clock.Now(), s.lookupRate, s.lookupBurst)
	left := n.lookups.left
	s.mu.Unlock()
	if left >= 0 {
		return nil
	}
	s.metrics.lookupWaits.Inc()
	wait := maxLookupWait
	if w := float64(-left) / s.lookupRate; w < float64(maxLookupWait) {
		wait = time.Duration(w)
	}
	t := s.clock.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-s.ctx.Done():
		return status.Error(codes.Unavailable, "xds: the control plane is stopping")
	}
}

// lookupSpent charges n's lookup budget with d.
func (s *Server) lookupSpent(n *nodeState, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spendLocked(n, d)
}

// watchSpent charges the node named id, if it looks destinations up,
// with a watch that took d to open.
func (s *Server) watchSpent(id string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.nodes[id]; n != nil && n.node.DestinationListeners {
		s.spendLocked(n, d)
	}
}

// spendLocked charges n's lookup budget with d. Called with s.mu held.
func (s *Server) spendLocked(n *nodeState, d time.Duration) {
	n.lookups.refill(s.clock.Now(), s.lookupRate, s.lookupBurst)
	n.lookups.spend(d)
	s.metrics.lookupSeconds.Add(max(d, 0).Seconds())
}

// keepLookupBudget keeps the budget of n, gone, if it is not full; past
// maxKeptBudgets the full ones are forgotten first. Called with s.mu held.
func (s *Server) keepLookupBudget(n *nodeState) {
	now := s.clock.Now()
	if n.lookups.at.IsZero() || n.lookups.full(now, s.lookupRate, s.lookupBurst) {
		return
	}
	if len(s.budgets) >= maxKeptBudgets {
		for id, b := range s.budgets {
			if b.full(now, s.lookupRate, s.lookupBurst) {
				delete(s.budgets, id)
			}
		}
	}
	s.budgets[n.id] = n.lookups
}

// takeLookupBudget is the kept budget of node id (the zero budget, full,
// if none). Called with s.mu held.
func (s *Server) takeLookupBudget(id string) lookupBudget {
	b := s.budgets[id]
	delete(s.budgets, id)
	return b
}
