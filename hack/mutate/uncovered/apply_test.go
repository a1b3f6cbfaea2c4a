package main

import (
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// at returns the 1-based line and byte column of the n-th (from 0)
// occurrence of needle in src.
func at(t *testing.T, src, needle string, n int) (int, int) {
	t.Helper()
	off := -1
	for i := 0; i <= n; i++ {
		j := strings.Index(src[off+1:], needle)
		if j < 0 {
			t.Fatalf("%q: occurrence %d of %q not found", src, n, needle)
		}
		off += 1 + j
	}
	line := 1 + strings.Count(src[:off], "\n")
	return line, off - strings.LastIndex(src[:off], "\n")
}

func TestApplyEachType(t *testing.T) {
	const pre = "package p\n\n"
	for _, tc := range []struct {
		typ, src, needle string
		n                int
		want             string
		from, to         token.Token
	}{
		{"CONDITIONALS_BOUNDARY", "func f(a, b int) bool { return a < b }", "<", 0, "func f(a, b int) bool { return a <= b }", token.LSS, token.LEQ},
		{"CONDITIONALS_BOUNDARY", "func f(a, b int) bool { return a > b }", ">", 0, "func f(a, b int) bool { return a >= b }", token.GTR, token.GEQ},
		{"CONDITIONALS_BOUNDARY", "func f(a, b int) bool { return a <= b }", "<=", 0, "func f(a, b int) bool { return a < b }", token.LEQ, token.LSS},
		{"CONDITIONALS_BOUNDARY", "func f(a, b int) bool { return a >= b }", ">=", 0, "func f(a, b int) bool { return a > b }", token.GEQ, token.GTR},
		{"CONDITIONALS_NEGATION", "func f(a, b int) bool { return a == b }", "==", 0, "func f(a, b int) bool { return a != b }", token.EQL, token.NEQ},
		{"CONDITIONALS_NEGATION", "func f(a, b int) bool { return a != b }", "!=", 0, "func f(a, b int) bool { return a == b }", token.NEQ, token.EQL},
		{"CONDITIONALS_NEGATION", "func f(a, b int) bool { return a < b }", "<", 0, "func f(a, b int) bool { return a >= b }", token.LSS, token.GEQ},
		{"CONDITIONALS_NEGATION", "func f(a, b int) bool { return a >= b }", ">=", 0, "func f(a, b int) bool { return a < b }", token.GEQ, token.LSS},
		{"CONDITIONALS_NEGATION", "func f(a, b int) bool { return a > b }", ">", 0, "func f(a, b int) bool { return a <= b }", token.GTR, token.LEQ},
		{"CONDITIONALS_NEGATION", "func f(a, b int) bool { return a <= b }", "<=", 0, "func f(a, b int) bool { return a > b }", token.LEQ, token.GTR},
		{"ARITHMETIC_BASE", "func f(a, b int) int { return a + b }", "+", 0, "func f(a, b int) int { return a - b }", token.ADD, token.SUB},
		{"ARITHMETIC_BASE", "func f(a, b int) int { return a - b }", "-", 0, "func f(a, b int) int { return a + b }", token.SUB, token.ADD},
		{"ARITHMETIC_BASE", "func f(a, b int) int { return a * b }", "*", 0, "func f(a, b int) int { return a / b }", token.MUL, token.QUO},
		{"ARITHMETIC_BASE", "func f(a, b int) int { return a / b }", "/", 0, "func f(a, b int) int { return a * b }", token.QUO, token.MUL},
		{"ARITHMETIC_BASE", "func f(a, b int) int { return a % b }", "%", 0, "func f(a, b int) int { return a * b }", token.REM, token.MUL},
		{"ARITHMETIC_BASE", "var x = -1", "-", 0, "var x = +1", token.SUB, token.ADD},
		{"INVERT_NEGATIVES", "func f(a int) int { return -a }", "-", 0, "func f(a int) int { return +a }", token.SUB, token.ADD},
		{"INVERT_NEGATIVES", "func f(a, b int) int { return a - b }", "-", 0, "func f(a, b int) int { return a + b }", token.SUB, token.ADD},
		{"INCREMENT_DECREMENT", "func f(i int) int { i++; return i }", "++", 0, "func f(i int) int { i--; return i }", token.INC, token.DEC},
		{"INCREMENT_DECREMENT", "func f(i int) int {\n\ti--\n\treturn i\n}", "--", 0, "func f(i int) int {\n\ti++\n\treturn i\n}", token.DEC, token.INC},
		{"INVERT_LOGICAL", "func f(a, b bool) bool { return a && b }", "&&", 0, "func f(a, b bool) bool { return a || b }", token.LAND, token.LOR},
		{"INVERT_LOGICAL", "func f(a, b bool) bool { return a || b }", "||", 0, "func f(a, b bool) bool { return a && b }", token.LOR, token.LAND},
		{"INVERT_LOOPCTRL", "func f() { for { break } }", "break", 0, "func f() { for { continue } }", token.BREAK, token.CONTINUE},
		{"INVERT_ASSIGNMENTS", "func f(a int) int { a += 2; return a }", "+=", 0, "func f(a int) int { a -= 2; return a }", token.ADD_ASSIGN, token.SUB_ASSIGN},
		{"REMOVE_SELF_ASSIGNMENTS", "func f(a int) int { a *= 2; return a }", "*=", 0, "func f(a int) int { a = 2; return a }", token.MUL_ASSIGN, token.ASSIGN},
		{"INVERT_BITWISE", "func f(a, b int) int { return a & b }", "&", 0, "func f(a, b int) int { return a | b }", token.AND, token.OR},
		{"INVERT_BITWISE", "func f(a, b uint) uint { return a << b }", "<<", 0, "func f(a, b uint) uint { return a >> b }", token.SHL, token.SHR},
		{"INVERT_BWASSIGN", "func f(a int) int { a |= 2; return a }", "|=", 0, "func f(a int) int { a &= 2; return a }", token.OR_ASSIGN, token.AND_ASSIGN},
		// What gremlins leaves NOT COVERED: a switch case's expression, a
		// case list's condition, a constant.
		{"CONDITIONALS_BOUNDARY", "func f(x int) int {\n\tswitch {\n\tcase x > 0:\n\t\treturn 1\n\t}\n\treturn 0\n}", ">", 0, "func f(x int) int {\n\tswitch {\n\tcase x >= 0:\n\t\treturn 1\n\t}\n\treturn 0\n}", token.GTR, token.GEQ},
		{"CONDITIONALS_NEGATION", "func f(x, y int) bool {\n\tswitch {\n\tcase x == 1, y != 2:\n\t\treturn true\n\t}\n\treturn false\n}", "!=", 0, "func f(x, y int) bool {\n\tswitch {\n\tcase x == 1, y == 2:\n\t\treturn true\n\t}\n\treturn false\n}", token.NEQ, token.EQL},
		{"ARITHMETIC_BASE", "const c = 2 * 3 * 4", "*", 1, "const c = 2 * 3 / 4", token.MUL, token.QUO},
		// Only the token at the position changes, not an equal one before it.
		{"CONDITIONALS_BOUNDARY", "func f(a, b, c int) bool { return a < b && b < c }", "<", 1, "func f(a, b, c int) bool { return a < b && b <= c }", token.LSS, token.LEQ},
		// A new token that would run into its neighbour gets a space.
		{"ARITHMETIC_BASE", "func f(a, b int) int { return a+-b }", "+", 0, "func f(a, b int) int { return a- -b }", token.ADD, token.SUB},
		{"ARITHMETIC_BASE", "func f(a int, p *int) int { return a**p }", "**", 0, "func f(a int, p *int) int { return a/ *p }", token.MUL, token.QUO},
	} {
		src := pre + tc.src + "\n"
		line, col := at(t, src, tc.needle, tc.n)
		m, err := apply("p.go", []byte(src), line, col, tc.typ)
		if err != nil {
			t.Errorf("%s at %d:%d of %q: %v", tc.typ, line, col, tc.src, err)
			continue
		}
		if got, want := string(m.Src), pre+tc.want+"\n"; got != want {
			t.Errorf("%s at %d:%d of %q:\ngot  %q\nwant %q", tc.typ, line, col, tc.src, got, want)
		}
		if m.From != tc.from || m.To != tc.to {
			t.Errorf("%s of %q: %s→%s, want %s→%s", tc.typ, tc.src, m.From, m.To, tc.from, tc.to)
		}
	}
}

func TestApplyRefusesWhatDoesNotMatch(t *testing.T) {
	const src = "package p\n\n// a < b in a comment\nfunc f(a, b int) bool { return a == b && \"x<y\" != \"\" }\n\nvar v = -1\n"
	for _, tc := range []struct {
		name, typ, needle string
		line, col         int // when needle is ""
		want              string
	}{
		{"another operator", "CONDITIONALS_BOUNDARY", "==", 0, 0, `the token here is "==", which CONDITIONALS_BOUNDARY does not mutate`},
		{"another operator (logical)", "ARITHMETIC_BASE", "&&", 0, 0, `the token here is "&&"`},
		{"unary minus is no INCREMENT_DECREMENT", "INCREMENT_DECREMENT", "-1", 0, 0, `the token here is "-"`},
		{"inside a comment", "CONDITIONALS_BOUNDARY", "< b in", 0, 0, "no operator gremlins mutates at this position"},
		{"inside a string", "CONDITIONALS_BOUNDARY", "<y", 0, 0, "no operator gremlins mutates at this position"},
		{"an operand", "CONDITIONALS_NEGATION", "a ==", 0, 0, "no operator gremlins mutates at this position"},
		{"past the end of the line", "CONDITIONALS_NEGATION", "", 6, 40, "line 6 has 10 bytes"},
		{"past the end of the file", "CONDITIONALS_NEGATION", "", 60, 1, "the file has"},
		{"no such type", "CONDITIONALS_INVERSION", "==", 0, 0, "unknown mutator type"},
	} {
		line, col := tc.line, tc.col
		if tc.needle != "" {
			line, col = at(t, src, tc.needle, 0)
		}
		_, err := apply("p.go", []byte(src), line, col, tc.typ)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %s at %d:%d: error %v, want one containing %q", tc.name, tc.typ, line, col, err, tc.want)
		}
	}
}

func TestCheckEquivalent(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "p"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := "package p\n\nfunc f(a, b int) bool {\n\treturn a < b\n}\n"
	if err := os.WriteFile(filepath.Join(root, "p", "p.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	eq := filepath.Join(root, "equivalent.txt")
	write := func(s string) {
		if err := os.WriteFile(eq, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("# comment\np/p.go:4:11 CONDITIONALS_BOUNDARY fine\np/p.go:4:11 CONDITIONALS_NEGATION fine too\n")
	if err := checkEquivalent(eq, root); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{
		"p/p.go:3:11 CONDITIONALS_BOUNDARY the code moved\n", // a line off
		"p/p.go:4:11 INCREMENT_DECREMENT another type\n",
		"p/q.go:4:11 CONDITIONALS_BOUNDARY the file is gone\n",
		"p/p.go:4 CONDITIONALS_BOUNDARY no column\n",
	} {
		write("p/p.go:4:11 CONDITIONALS_BOUNDARY fine\n" + bad)
		if err := checkEquivalent(eq, root); err == nil || !strings.Contains(err.Error(), "1 of 2 entries") {
			t.Errorf("%q: %v, want 1 of 2 entries refused", bad, err)
		}
	}
}
