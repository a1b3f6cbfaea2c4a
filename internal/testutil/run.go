package testutil

import (
	"context"
	"sync"
	"testing"
)

// Run runs run in a goroutine of its own until stop is called or t ends,
// whichever is first; then it cancels run's context and waits for it to
// return. An error run returns fails the test. Calling stop again does
// nothing.
func Run(t testing.TB, run func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
