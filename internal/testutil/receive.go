package testutil

import (
	"testing"
	"time"
)

// Receive returns the next value sent on ch, and fails t, naming what it
// waited for, if none comes within [EventuallyTimeout] or ch is closed.
// Like Eventually, the bound only decides how long a failing test takes to
// say so.
func Receive[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(EventuallyTimeout)
	defer timer.Stop()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("waiting for %s: the channel was closed", what)
		}
		return v
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}
