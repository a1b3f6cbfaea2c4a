// Package tiny is uncovered's test fixture: one mutant of each result.
package tiny

// Sign's case expressions lie outside Go's coverage blocks.
func Sign(x int) int {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

// Greet's `+` made `-` does not compile.
func Greet(name string) string { return "hi " + name }

// Spin's `++` made `--` never ends.
func Spin(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s += i
	}
	return s
}

const untested = 2 * 3

// Untested is tested by nothing.
func Untested() int { return untested }
