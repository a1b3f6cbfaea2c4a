package certs

import "time"

// Clock tells the time. Every lifetime decision in this package reads it, so
// tests move time instead of sleeping. A nil Clock in [CAConfig] gets the
// real clock.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Backdate is how far before "now" every certificate's NotBefore is set, to
// absorb clock skew between the CA and the machines that verify its
// certificates. It is never earlier than the issuer's NotBefore.
const Backdate = time.Minute

// Default lifetimes, used when the matching CAConfig field is zero.
const (
	DefaultRootTTL         = 10 * 365 * 24 * time.Hour
	DefaultIntermediateTTL = 365 * 24 * time.Hour
	DefaultWorkloadTTL     = 24 * time.Hour
)
