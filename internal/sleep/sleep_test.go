package sleep_test

import (
	"context"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/sleep"
	"github.com/weftmesh/weft/internal/testutil"
)

// For returns true once the clock has moved d, and not before.
func TestForWaitsOnTheClock(t *testing.T) {
	clk := testutil.FakeClock(t)
	done := make(chan bool, 1)
	go func() { done <- sleep.For(context.Background(), clk, time.Minute) }()
	testutil.Eventually(t, "a timer on the clock", clk.HasWaiters)
	clk.Step(time.Minute - time.Nanosecond)
	if !clk.HasWaiters() {
		t.Fatal("the timer fired before d passed on the clock")
	}
	clk.Step(time.Nanosecond)
	if !testutil.Receive(t, done, "For's answer") {
		t.Error("For = false after d passed, want true")
	}
}

// For returns false when ctx ends first, and stops its timer.
func TestForEndsWithTheContext(t *testing.T) {
	clk := testutil.FakeClock(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool, 1)
	go func() { done <- sleep.For(ctx, clk, time.Hour) }()
	testutil.Eventually(t, "a timer on the clock", clk.HasWaiters)
	cancel()
	if testutil.Receive(t, done, "For's answer") {
		t.Error("For = true after ctx ended, want false")
	}
	if clk.HasWaiters() {
		t.Error("the timer was not stopped")
	}
}
