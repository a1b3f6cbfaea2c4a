// Package sleep waits on an injected clock for as long as a context
// lives: the backoffs, renewals and rechecks of weft's long-running parts,
// which tests drive with a fake clock (testutil.FakeClock) instead of
// waiting.
//
// It imports k8s.io/utils/clock and the standard library only.
package sleep

import (
	"context"
	"time"

	"k8s.io/utils/clock"
)

// For waits d on clk and reports true, or false as soon as ctx ends (its
// timer stopped). When both happen it may report either.
func For(ctx context.Context, clk clock.Clock, d time.Duration) bool {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}
