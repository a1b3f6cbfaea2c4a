package testutil

import (
	"testing"
	"time"
)

// EventuallyTimeout bounds [Eventually]'s wait. It is generous on purpose:
// it only decides how long a failing test takes to say so, never whether a
// passing one passes, so a loaded machine cannot turn it into a failure.
const EventuallyTimeout = 15 * time.Second

// Eventually polls cond until it holds and fails t (naming what) if it
// does not within [EventuallyTimeout]. It is for another goroutine (a
// server, a sender, a watcher) to reach a state, in real time; it is not a
// sleep, and it never stands for a timer firing: timers on a fake clock
// fire only when the test steps the clock.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(EventuallyTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
