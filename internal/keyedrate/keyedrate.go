// Package keyedrate is a token bucket per key (a pod, a source address)
// whose map of buckets cannot grow without bound: a caller cycling keys
// costs memory only until the buckets it left behind are forgotten.
//
// Two ways to forget, either or both: IdleAfter drops buckets not used for
// longer than it (swept at most once per IdleAfter, on the first Allow
// after that long); MaxKeys, when a new key would make the map larger than
// it, drops the buckets that are full again (a full bucket remembers
// nothing a new one would not). Time is always the caller's (now), never
// the wall clock.
package keyedrate

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Config configures a Limiter.
type Config struct {
	Limit rate.Limit // sustained rate per key; rate.Inf allows everything and keeps no buckets
	Burst int        // bucket size
	// IdleAfter, if positive, forgets a bucket idle for longer than it.
	IdleAfter time.Duration
	// MaxKeys, if positive, forgets full buckets when a new key would
	// take the map past it.
	MaxKeys int
}

// Limiter is a token bucket per key. It is safe for concurrent use.
type Limiter struct {
	cfg Config

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns a Limiter.
func New(cfg Config) *Limiter {
	return &Limiter{cfg: cfg, buckets: map[string]*bucket{}}
}

// Allow reports whether key may spend n tokens at now, and spends them if
// so.
func (l *Limiter) Allow(key string, now time.Time, n int) bool {
	if l.cfg.Limit == rate.Inf {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if idle := l.cfg.IdleAfter; idle > 0 && now.Sub(l.swept) > idle {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > idle {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[key]
	if !ok {
		if l.cfg.MaxKeys > 0 && len(l.buckets) >= l.cfg.MaxKeys {
			for k, b := range l.buckets {
				if b.lim.TokensAt(now) >= float64(l.cfg.Burst) {
					delete(l.buckets, k)
				}
			}
		}
		b = &bucket{lim: rate.NewLimiter(l.cfg.Limit, l.cfg.Burst)}
		l.buckets[key] = b
	}
	b.seen = now
	return b.lim.AllowN(now, n)
}

// Len is the number of buckets held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
