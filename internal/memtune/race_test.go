//go:build race

package memtune

// raceEnabled: the race detector doubles the stack guard and grows frames,
// so stack sizes differ.
const raceEnabled = true
