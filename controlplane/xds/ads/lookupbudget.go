package ads

import (
	"context"
	"time"
)

// Defaults of Config.LookupBudget and Config.LookupBurst.
const (
	DefaultLookupBudget = 0.05
	DefaultLookupBurst  = 500 * time.Millisecond
)

// lookupBudget is a node's allowance of generation time for its own
// lookups (listenersAsked): a token bucket of time, refilled at
// Config.LookupBudget seconds a second up to Config.LookupBurst, spent by
// each regeneration a lookup makes (its duration on the Server's clock).
// It can go negative, the regeneration that overdraws it having run; the
// next lookup then waits until it is not. So a sidecar asking for new
// destinations as fast as its app can open connections (each one a
// regeneration of its node, up to a few ms with 4,096 held) costs the
// control plane at most that fraction of a core over time, and a burst of
// lookups at a pod's start (within LookupBurst) waits for nothing.
// Guarded by Server.mu.
type lookupBudget struct {
	left time.Duration
	at   time.Time // when left was last brought up to date; zero: never (full)
}

// refill brings b up to now. Called with Server.mu held.
func (b *lookupBudget) refill(now time.Time, rate float64, burst time.Duration) {
	if b.at.IsZero() {
		b.left = burst
	} else if d := now.Sub(b.at); d > 0 {
		b.left = min(burst, b.left+time.Duration(float64(d)*rate))
	}
	b.at = now
}

// lookupWait waits until n's lookup budget is not overdrawn, or ctx ends
// (false). A wait is counted (weft_xds_lookup_waits_total).
func (s *Server) lookupWait(ctx context.Context, n *nodeState) bool {
	s.mu.Lock()
	n.lookups.refill(s.clock.Now(), s.lookupRate, s.lookupBurst)
	left := n.lookups.left
	s.mu.Unlock()
	if left >= 0 {
		return true
	}
	s.metrics.lookupWaits.Inc()
	t := s.clock.NewTimer(time.Duration(float64(-left) / s.lookupRate))
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// lookupSpent charges n's lookup budget with a regeneration that took d.
func (s *Server) lookupSpent(n *nodeState, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n.lookups.refill(s.clock.Now(), s.lookupRate, s.lookupBurst)
	n.lookups.left -= d
	s.metrics.lookupSeconds.Add(d.Seconds())
}
