package ads

import (
	"context"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// debouncer coalesces change notifications: a round fires quiet after the
// last change, but no later than max after the first change of the round.
// Changes are recorded with the clock's time when they are reported, and
// the loop re-derives the deadline from those times every time it wakes, so
// a test that steps a fake clock cannot race it.
type debouncer struct {
	clock clock.Clock
	quiet time.Duration
	max   time.Duration
	fire  func() // runs on the loop's goroutine; changes meanwhile start the next round

	kick chan struct{} // capacity 1: "look at the state again"

	mu          sync.Mutex
	pending     bool
	running     bool // a round is running
	first, last time.Time
}

func newDebouncer(c clock.Clock, quiet, max time.Duration, fire func()) *debouncer {
	return &debouncer{clock: c, quiet: quiet, max: max, fire: fire, kick: make(chan struct{}, 1)}
}

// changed records a change; it never blocks.
func (d *debouncer) changed() {
	now := d.clock.Now()
	d.mu.Lock()
	if !d.pending {
		d.pending, d.first = true, now
	}
	d.last = now
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// take reports whether a round is due at now and, if so, starts it (clears
// pending). Otherwise it returns how long until one is due; ok is false
// when nothing is pending.
func (d *debouncer) take(now time.Time) (due bool, wait time.Duration, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.pending {
		return false, 0, false
	}
	at := d.last.Add(d.quiet)
	if limit := d.first.Add(d.max); limit.Before(at) {
		at = limit
	}
	if wait := at.Sub(now); wait > 0 {
		return false, wait, true
	}
	d.pending, d.running = false, true
	return true, 0, true
}

// busy reports whether a change awaits its round or a round is running.
func (d *debouncer) busy() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending || d.running
}

// armSlack: if the clock moved more than this while a timer was being
// armed (a fake clock stepped by a test), the timer may be late by that
// much, so it is re-armed from the new time.
const armSlack = time.Millisecond

// run fires rounds until ctx ends.
func (d *debouncer) run(ctx context.Context) {
	for {
		now := d.clock.Now()
		due, wait, ok := d.take(now)
		switch {
		case due:
			d.fire()
			d.mu.Lock()
			d.running = false
			d.mu.Unlock()
			continue
		case !ok:
			select {
			case <-ctx.Done():
				return
			case <-d.kick:
			}
			continue
		}
		t := d.clock.NewTimer(wait)
		if d.clock.Since(now) > armSlack {
			t.Stop()
			continue
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.kick:
			t.Stop()
		case <-t.C():
		}
	}
}
