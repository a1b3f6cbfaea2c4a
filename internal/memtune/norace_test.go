//go:build !race

package memtune

const raceEnabled = false
