package keyedrate

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/weftmesh/weft/internal/testutil"
)

const idle = 10 * time.Minute

func TestAllowSpendsPerKey(t *testing.T) {
	l := New(Config{Limit: 1, Burst: 5})
	now := testutil.Epoch(t)
	if !l.Allow("a", now, 5) {
		t.Fatal("a's burst refused")
	}
	if l.Allow("a", now, 1) {
		t.Fatal("a past its burst allowed")
	}
	if !l.Allow("b", now, 5) {
		t.Fatal("b refused: a's spending is not b's")
	}
	if !l.Allow("a", now.Add(2*time.Second), 2) {
		t.Fatal("a refused 2 tokens after 2s at 1/s")
	}
	if l.Allow("a", now.Add(2*time.Second), 1) {
		t.Fatal("a allowed more than it earned")
	}
	if l.Allow("c", now, 6) {
		t.Fatal("more than the burst at once allowed")
	}
}

func TestInfKeepsNoBuckets(t *testing.T) {
	l := New(Config{Limit: rate.Inf, Burst: 1, MaxKeys: 1})
	now := testutil.Epoch(t)
	for i := range 10 {
		if !l.Allow(fmt.Sprint(i), now, 100) {
			t.Fatal("rate.Inf refused")
		}
	}
	if l.Len() != 0 {
		t.Fatalf("Len %d, want 0", l.Len())
	}
}

func TestSweepsIdleBuckets(t *testing.T) {
	l := New(Config{Limit: 1, Burst: 1, IdleAfter: idle})
	now := testutil.Epoch(t)
	for i := range 100 {
		l.Allow(string(rune('a'+i%26))+strings.Repeat("x", i), now, 1)
	}
	if l.Len() != 100 {
		t.Fatalf("Len %d, want 100", l.Len())
	}
	l.Allow("fresh", now.Add(idle+time.Second), 1)
	if l.Len() != 1 {
		t.Fatalf("after sweep Len %d, want 1", l.Len())
	}
}

// A bucket is swept once it has been idle for longer than IdleAfter, not
// once it has been idle for exactly that long, and sweeps run at most once
// per IdleAfter. The limit is so slow that a kept bucket is still empty and
// a swept one starts full: whether a key's next request passes tells which.
func TestIdleSweepBoundaries(t *testing.T) {
	slow := rate.Every(time.Hour)
	t.Run("idle exactly IdleAfter is kept", func(t *testing.T) {
		l := New(Config{Limit: slow, Burst: 1, IdleAfter: idle})
		t0 := testutil.Epoch(t)
		l.Allow("a", t0, 1) // sweeps (the first call always does) at t0
		if !l.Allow("b", t0.Add(time.Nanosecond), 1) {
			t.Fatal("b's first request refused")
		}
		// Sweeps (idle+1ns since t0): a is older than idle, b exactly that old.
		if l.Allow("b", t0.Add(idle+time.Nanosecond), 1) {
			t.Fatal("b idle exactly IdleAfter lost its bucket: its spent burst came back")
		}
		if l.Len() != 1 {
			t.Fatalf("Len %d, want 1 (a swept, b kept)", l.Len())
		}
	})
	t.Run("sweeps no sooner than IdleAfter apart", func(t *testing.T) {
		l := New(Config{Limit: slow, Burst: 1, IdleAfter: idle})
		t0 := testutil.Epoch(t)
		l.Allow("a", t0, 1)           // sweeps at t0
		l.Allow("b", t0.Add(idle), 1) // exactly idle later: no sweep
		// idle+1ns after the last sweep: sweeps, and a, idle longer than that, goes.
		if !l.Allow("a", t0.Add(idle+time.Nanosecond), 1) {
			t.Fatal("a idle longer than IdleAfter kept its spent bucket: no sweep ran")
		}
		if l.Len() != 2 {
			t.Fatalf("Len %d, want 2 (b and a's new bucket)", l.Len())
		}
	})
}

// Past MaxKeys a new key forgets the buckets that are full again, and only
// those: a key still paying off its burst keeps its debt.
func TestMaxKeysForgetsFullBuckets(t *testing.T) {
	l := New(Config{Limit: 1, Burst: 10, MaxKeys: 3})
	t0 := testutil.Epoch(t)
	l.Allow("spent", t0, 10)
	l.Allow("idle-1", t0, 1)
	l.Allow("idle-2", t0, 1)
	// 5s later: the idle ones are full again (1 token spent, 5 earned),
	// "spent" holds 5 of 10.
	t1 := t0.Add(5 * time.Second)
	if !l.Allow("new", t1, 1) {
		t.Fatal("a new key refused")
	}
	if l.Len() != 2 {
		t.Fatalf("Len %d, want 2 (spent and new)", l.Len())
	}
	if l.Allow("spent", t1, 6) {
		t.Fatal("spent got its burst back: its bucket was forgotten while not full")
	}
	if !l.Allow("spent", t1, 5) {
		t.Fatal("spent refused the 5 tokens it earned")
	}
	// No sweep below MaxKeys, however old the buckets.
	l2 := New(Config{Limit: 1, Burst: 1, MaxKeys: 3})
	l2.Allow("a", t0, 1)
	l2.Allow("b", t0.Add(time.Hour), 1)
	if l2.Len() != 2 {
		t.Fatalf("Len %d, want 2", l2.Len())
	}
}

func TestConcurrent(t *testing.T) {
	l := New(Config{Limit: 1, Burst: 100, IdleAfter: idle, MaxKeys: 10})
	now := testutil.Epoch(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if l.Allow("shared", now, 1) {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
				l.Allow(fmt.Sprint(g, "-", i), now, 1)
			}
		})
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("%d of 400 allowed on one key, want exactly the burst, 100", allowed)
	}
}

// MaxKeys 0 is no cap: a new key forgets nothing, full buckets included.
func TestZeroMaxKeysKeepsFullBuckets(t *testing.T) {
	l := New(Config{Limit: 1, Burst: 1})
	t0 := testutil.Epoch(t)
	l.Allow("a", t0, 1)
	// An hour later a's bucket is full again; a cap would forget it here.
	l.Allow("b", t0.Add(time.Hour), 1)
	if l.Len() != 2 {
		t.Fatalf("Len %d, want 2: without MaxKeys no bucket is forgotten", l.Len())
	}
}
