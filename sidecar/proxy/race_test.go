//go:build race

package proxy

// raceEnabled: the race detector doubles the stack guard, so stack sizes
// differ.
const raceEnabled = true
