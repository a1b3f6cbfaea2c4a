//go:build ignore

package tiny

// Ignored is in no build: a mutant of it could change nothing.
func Ignored(a int) bool { return a == 1 }
