package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A gremlins result for package a/b: 2 killed, 2 lived, 5 not covered, one
// timed out; file sub/c.go is in a subdirectory gremlins walked.
const gremlinsAB = `{"go_module":"m","files":[
{"file_name":"x.go","mutations":[
{"type":"CONDITIONALS_NEGATION","status":"KILLED","line":3,"column":5},
{"type":"CONDITIONALS_BOUNDARY","status":"LIVED","line":4,"column":7},
{"type":"ARITHMETIC_BASE","status":"LIVED","line":10,"column":2},
{"type":"CONDITIONALS_BOUNDARY","status":"NOT COVERED","line":20,"column":9},
{"type":"CONDITIONALS_NEGATION","status":"NOT COVERED","line":20,"column":9},
{"type":"ARITHMETIC_BASE","status":"NOT COVERED","line":30,"column":11},
{"type":"INCREMENT_DECREMENT","status":"TIMED OUT","line":40,"column":3}]},
{"file_name":"x_plan9.go","mutations":[
{"type":"INVERT_NEGATIVES","status":"NOT COVERED","line":31,"column":4}]},
{"file_name":"sub/c.go","mutations":[
{"type":"CONDITIONALS_NEGATION","status":"KILLED","line":1,"column":1},
{"type":"CONDITIONALS_NEGATION","status":"NOT COVERED","line":2,"column":2}]}],
"test_efficacy":50,"mutations_coverage":44.4,"mutants_killed":2,"mutants_lived":2,"mutants_not_covered":5,"elapsed_time":120}`

// uncovered tested four of the five: killed twice, one lived, one did not
// compile; x_plan9.go is not in the build where it ran.
const uncoveredAB = `{"tool":"hack/mutate/uncovered","gremlins_result":"a_b.json","dir":"./a/b","complete":false,"mutants":[
{"file_name":"x.go","type":"CONDITIONALS_BOUNDARY","line":20,"column":9,"from":">","to":">=","status":"KILLED","detail":"TestX"},
{"file_name":"x.go","type":"CONDITIONALS_NEGATION","line":20,"column":9,"from":">","to":"<=","status":"KILLED","detail":"TestX"},
{"file_name":"x.go","type":"ARITHMETIC_BASE","line":30,"column":11,"from":"+","to":"-","status":"NOT VIABLE","detail":"x.go:30:11: invalid operation"},
{"file_name":"sub/c.go","type":"CONDITIONALS_NEGATION","line":2,"column":2,"from":"==","to":"!=","status":"LIVED"},
{"file_name":"x_plan9.go","type":"INVERT_NEGATIVES","line":31,"column":4,"status":"SKIPPED","detail":"not in the package's build here (build constraints)"}],
"elapsed_time":60}`

const gremlinsD = `{"go_module":"m","files":[{"file_name":"d.go","mutations":[
{"type":"CONDITIONALS_NEGATION","status":"KILLED","line":1,"column":1},
{"type":"CONDITIONALS_NEGATION","status":"NOT COVERED","line":2,"column":1}]}],
"test_efficacy":100,"mutations_coverage":50,"elapsed_time":6}`

type fixture struct {
	in, unc, equiv string
}

func writeFixture(t *testing.T, results map[string]string, uncovered map[string]string, equivalent string) fixture {
	t.Helper()
	dir := t.TempDir()
	f := fixture{in: filepath.Join(dir, "in"), unc: filepath.Join(dir, "in", "uncovered"), equiv: filepath.Join(dir, "equivalent.txt")}
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, s := range results {
		write(filepath.Join(f.in, name), s)
	}
	for name, s := range uncovered {
		write(filepath.Join(f.unc, name), s)
	}
	write(f.equiv, equivalent)
	return f
}

func (f fixture) build(t *testing.T) (string, error) {
	t.Helper()
	return build(f.in, f.unc, f.equiv, "2 cores", "", time.Time{}) // the report's date is not under test
}

// row is the table row of pkg.
func row(t *testing.T, doc, pkg string) string {
	t.Helper()
	for _, l := range strings.Split(doc, "\n") {
		if strings.HasPrefix(l, "| "+pkg+" |") {
			return l
		}
	}
	t.Fatalf("no row for %s in:\n%s", pkg, doc)
	return ""
}

func TestCountsUncoveredResults(t *testing.T) {
	f := writeFixture(t,
		map[string]string{"a_b.json": gremlinsAB, "d.json": gremlinsD},
		map[string]string{"a_b.json": uncoveredAB},
		"# comment\na/b/x.go:4:7 CONDITIONALS_BOUNDARY cannot change anything\nother/pkg.go:1:1 CONDITIONALS_BOUNDARY a package not in this run\n")
	doc, err := f.build(t)
	if err != nil {
		t.Fatal(err)
	}
	// killed 2 + 2 by uncovered; lived 2 + 1, one equivalent; not covered:
	// only x_plan9.go:31:4, which uncovered skipped; not viable 1; timed
	// out 1.
	// Efficacy 4/(4+3-1) = 66.7 %; coverage 6/(6+1) = 85.7 %.
	if got, want := row(t, doc, "a/b"), "| a/b | 4 | 2 (partial: 4 of gremlins' 5 not covered tested) | 3 (1) | 1 | 1 | 1 | 66.7 % | 85.7 % | 2.0 + 1.0 | no | 2, 2, 5: 50.0 %, 44.4 % (1 timed out) |"; got != want {
		t.Errorf("row\ngot  %s\nwant %s", got, want)
	}
	// No uncovered result: gremlins' figures, its not covered untested.
	if got, want := row(t, doc, "d"), "| d | 1 | not tested (no uncovered result) | 0 (0) | 1 | 0 | 0 | 100.0 % | 50.0 % | 0.1 | no | 1, 0, 1: 100.0 %, 50.0 % |"; got != want {
		t.Errorf("row\ngot  %s\nwant %s", got, want)
	}
	for _, want := range []string{
		"- a/b/sub/c.go:2:2 CONDITIONALS_NEGATION `==`→`!=` (outside coverage blocks, hack/mutate/uncovered)\n- a/b/x.go:4:7 CONDITIONALS_BOUNDARY — equivalent: cannot change anything\n- a/b/x.go:10:2 ARITHMETIC_BASE\n",
		"Not covered (not tested):\n- a/b/x_plan9.go:31:4 INVERT_NEGATIVES (hack/mutate/uncovered did not test it: not in the package's build here (build constraints))\n",
		"Killed outside coverage blocks (hack/mutate/uncovered; the first failing tests):\n- a/b/x.go:20:9 CONDITIONALS_BOUNDARY `>`→`>=`: TestX\n- a/b/x.go:20:9 CONDITIONALS_NEGATION `>`→`<=`: TestX\n",
		"- a/b/x.go:30:11 ARITHMETIC_BASE `+`→`-` NOT VIABLE (outside coverage blocks, hack/mutate/uncovered): x.go:30:11: invalid operation\n",
		"- a/b/x.go:40:3 INCREMENT_DECREMENT TIMED OUT\n",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks\n%s\nin\n%s", want, doc)
		}
	}
}

func TestStaleEquivalentFails(t *testing.T) {
	for _, tc := range []struct {
		name, entry, why string
	}{
		{"moved a line", "a/b/x.go:5:7 CONDITIONALS_BOUNDARY", "no mutant of this type at this position"},
		{"other type at the position", "a/b/x.go:4:7 CONDITIONALS_NEGATION", "no mutant of this type at this position"},
		{"file gone", "a/b/y.go:4:7 CONDITIONALS_BOUNDARY", "no mutant in this file"},
		{"in a subdirectory the run walked", "a/b/sub/c.go:9:9 CONDITIONALS_NEGATION", "no mutant of this type at this position"},
	} {
		f := writeFixture(t, map[string]string{"a_b.json": gremlinsAB}, nil,
			"a/b/x.go:4:7 CONDITIONALS_BOUNDARY fine\n"+tc.entry+" stale\n")
		_, err := f.build(t)
		var stale *StaleError
		if !errors.As(err, &stale) {
			t.Errorf("%s: %v, want a StaleError", tc.name, err)
			continue
		}
		if len(stale.Entries) != 1 || stale.Entries[0] != "equivalent.txt:2: "+tc.entry+": "+tc.why+" in this run of a/b" {
			t.Errorf("%s: stale entries %q", tc.name, stale.Entries)
		}
	}
	// Entries of packages not in the run are not checked: a/bc is no
	// subdirectory of a/b, a/b/other is one the run has no results for.
	f := writeFixture(t, map[string]string{"a_b.json": gremlinsAB}, nil,
		"a/bc/x.go:1:1 CONDITIONALS_BOUNDARY elsewhere\na/b/other/x.go:1:1 CONDITIONALS_BOUNDARY a package of its own\n")
	if _, err := f.build(t); err != nil {
		t.Error(err)
	}
}

func TestEquivalentButKilledIsMarked(t *testing.T) {
	// x.go:3:5 gremlins killed; x.go:20:9 uncovered killed.
	f := writeFixture(t, map[string]string{"a_b.json": gremlinsAB}, map[string]string{"a_b.json": uncoveredAB},
		"a/b/x.go:3:5 CONDITIONALS_NEGATION wrong\na/b/x.go:20:9 CONDITIONALS_BOUNDARY wrong too\n")
	doc, err := f.build(t)
	if err != nil {
		t.Fatal(err)
	}
	if r := row(t, doc, "a/b"); !strings.Contains(r, "| no; equivalent.txt contradicted, killed: a/b/x.go:3:5 CONDITIONALS_NEGATION, a/b/x.go:20:9 CONDITIONALS_BOUNDARY |") || !strings.Contains(r, "| 3 (0) |") {
		t.Errorf("row: %s", r)
	}
	if want := "Listed in equivalent.txt but killed (not equivalent: remove the entry):\n- a/b/x.go:3:5 CONDITIONALS_NEGATION (equivalent.txt line 1)\n- a/b/x.go:20:9 CONDITIONALS_BOUNDARY `>`→`>=` (equivalent.txt line 2)\n"; !strings.Contains(doc, want) {
		t.Errorf("report lacks\n%s\nin\n%s", want, doc)
	}
}

func TestUncoveredResultMustMatchGremlins(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"a mutant gremlins tested", `"line":20,"column":9,"from":">","to":">="`, `"line":4,"column":7,"from":">","to":">="`, "gremlins' " + ""},
		{"no such mutant", `"line":20,"column":9,"from":">","to":">="`, `"line":21,"column":9,"from":">","to":">="`, "is no mutant of gremlins'"},
		{"a status of its own", `"status":"LIVED"`, `"status":"NOT COVERED"`, "is none of uncovered's"},
	} {
		f := writeFixture(t, map[string]string{"a_b.json": gremlinsAB}, map[string]string{"a_b.json": strings.Replace(uncoveredAB, tc.from, tc.to, 1)}, "")
		if _, err := f.build(t); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestEquivalentFileErrors(t *testing.T) {
	f := writeFixture(t, map[string]string{"a_b.json": gremlinsAB}, nil, "a/b/x.go:4:7 CONDITIONALS_BOUNDARY one\na/b/x.go:4:7 CONDITIONALS_BOUNDARY two\n")
	if _, err := f.build(t); err == nil || !strings.Contains(err.Error(), "listed already, at line 1") {
		t.Errorf("duplicate entry: %v", err)
	}
}
