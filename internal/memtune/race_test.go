//go:build race

package memtune

// raceEnabled: the race detector doubles the stack guard and grows frames,
// so the floor's average rounds up to 16 KiB instead of 8.
const raceEnabled = true
