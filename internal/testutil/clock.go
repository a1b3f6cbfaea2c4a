package testutil

import (
	"hash/fnv"
	"os"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// Time in tests. Every fake clock and every fixed instant in weft's tests
// comes from here, and TestNoTimeBombs (clock_test.go) fails on any other.
//
// The rule: a test never mixes its own time with the wall clock. Code under
// test that reads time.Now (directly, or through a library default such as
// x509svid.Verify without WithTime) while the test's certificates, records
// and deadlines were made on a fake clock is a bug, and these helpers make it
// fail the day it is written rather than the day the fake date goes by:
//
//   - [Epoch] and [FakeClock] start decades away from the wall clock, ahead
//     for some tests and behind for others, so a certificate signed on the
//     fake clock is "not yet valid" or "expired" to the wall clock at once,
//     and a record stamped on it is ancient or from the future to retention.
//   - [Fixed] is the one constant instant, for output that must not change
//     between runs (golden files). It lies far in the past, so output that
//     leaks the wall clock shows decades instead of minutes.

// EpochOffset is how far [Epoch] lies from the wall clock.
const EpochOffset = 20 * 365 * 24 * time.Hour

// Fixed is 2001-09-09T01:46:40Z (Unix 1e9): the instant tests use where
// their output must be the same on every run.
var Fixed = time.Unix(1_000_000_000, 0).UTC()

// EpochEnv forces the direction of every [Epoch]: "ahead" or "behind"
// (`WEFT_TEST_EPOCH=behind make test`). Unset, each test's direction comes
// from a hash of its name, so both run across the tree on every run and a
// given test always runs the same way.
const EpochEnv = "WEFT_TEST_EPOCH"

// Epoch is where t's fake time starts: the wall clock, to the second, moved
// [EpochOffset] ahead or behind.
func Epoch(t testing.TB) time.Time {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	if Ahead(t) {
		return now.Add(EpochOffset)
	}
	return now.Add(-EpochOffset)
}

// Ahead reports whether t's [Epoch] lies ahead of the wall clock.
func Ahead(t testing.TB) bool {
	t.Helper()
	switch v := os.Getenv(EpochEnv); v {
	case "ahead":
		return true
	case "behind":
		return false
	case "":
		h := fnv.New32a()
		h.Write([]byte(t.Name()))
		return h.Sum32()&1 == 0
	default:
		t.Fatalf("%s=%q: want ahead, behind or unset", EpochEnv, v)
		return false
	}
}

// FakeClock is a clock that t moves by hand, started at [Epoch](t). It
// satisfies k8s.io/utils/clock.WithTicker and certs.Clock.
func FakeClock(t testing.TB) *clocktesting.FakeClock {
	t.Helper()
	return clocktesting.NewFakeClock(Epoch(t))
}
