// Command report turns make mutate's results into docs/mutation.md:
// efficacy and mutator coverage per package against the targets, and every
// mutant that lived, was not tested or was killed outside Go's coverage
// blocks, with the reason where equivalent.txt calls it equivalent.
//
// It reads, per package, gremlins' JSON result (-in, one file per package,
// its path with / as _) and, when there is one, hack/mutate/uncovered's
// result of the same name (-uncovered): a mutant gremlins marks NOT COVERED
// that uncovered tested counts by its result there (killed, lived, not
// viable, timed out); one it did not test stays not covered. gremlins' own
// figures stay in the table's last column.
//
// equivalent.txt entries are checked against the run: an entry for a package
// in this run that names no mutant of it (file:line:col and type) is stale,
// and report fails naming it; an entry whose mutant was killed contradicts
// itself and is marked in the table.
package main

import (
	"bufio"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/hack/mutate/internal/mutjson"
)

const (
	targetEfficacy = 90.0
	targetCoverage = 85.0
)

func main() {
	in := flag.String("in", "_output/mutate", "directory of gremlins JSON results, one per package (pkg path with / as _)")
	unc := flag.String("uncovered", "", "directory of hack/mutate/uncovered's results, named as gremlins' (default: <in>/uncovered)")
	out := flag.String("out", "docs/mutation.md", "report to write")
	equiv := flag.String("equivalent", "hack/mutate/equivalent.txt", "mutants judged equivalent: `pkg/file.go:line:col TYPE reason` per line")
	machine := flag.String("machine", "", "where it ran (CPU, cores)")
	note := flag.String("note", "", "a paragraph to add under the table (what was not run, and why)")
	flag.Parse()
	if *unc == "" {
		*unc = filepath.Join(*in, "uncovered")
	}
	doc, err := build(*in, *unc, *equiv, *machine, *note, time.Now())
	if err == nil {
		err = os.WriteFile(*out, []byte(doc), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// equivEntry is one line of equivalent.txt.
type equivEntry struct {
	key    string // pkg/file.go:line:col TYPE
	reason string
	line   int // in equivalent.txt
}

// mutant is one mutant of a run as the report counts it.
type mutant struct {
	key      string // pkg/file.go:line:col TYPE
	file     string // pkg/file.go
	status   string // gremlins', or uncovered's for a NOT COVERED mutant it tested
	gremlins string // gremlins' status
	tested   *mutjson.Tested
	skipped  string // why uncovered did not test it
}

// pkgRun is one package's results.
type pkgRun struct {
	pkg     string
	g       mutjson.Gremlins
	u       *mutjson.Uncovered
	mutants []mutant
}

// counts are a run's figures.
type counts struct {
	killed, killedOutside, lived, equivalent, notCovered, notViable, timedOut int
	// uncovered's coverage of gremlins' NOT COVERED mutants
	gremlinsNotCovered, tested int
	contradictions             []string
}

func (c counts) efficacy() float64 {
	if live := c.killed + c.lived - c.equivalent; live > 0 {
		return 100 * float64(c.killed) / float64(live)
	}
	return 0
}

func (c counts) coverage() float64 {
	if all := c.killed + c.lived - c.equivalent + c.notCovered; all > 0 {
		return 100 * float64(c.killed+c.lived-c.equivalent) / float64(all)
	}
	return 0
}

// StaleError lists equivalent.txt entries that name no mutant of the run.
type StaleError struct {
	Path    string
	Entries []string // `equivalent.txt:N: entry: why`
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("%d stale entries in %s (each names no mutant of this run of its package: the code moved or changed; give the mutant's new file:line:col, or remove the entry):\n  %s",
		len(e.Entries), e.Path, strings.Join(e.Entries, "\n  "))
}

func build(in, uncDir, equivPath, machine, note string, now time.Time) (string, error) {
	equiv, err := readEquivalent(equivPath)
	if err != nil {
		return "", err
	}
	files, err := filepath.Glob(filepath.Join(in, "*.json"))
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("no results in %s", in)
	}
	slices.Sort(files)
	var runs []*pkgRun
	for _, f := range files {
		r, err := readRun(f, uncDir)
		if err != nil {
			return "", err
		}
		runs = append(runs, r)
	}
	byKey := map[string]equivEntry{}
	for _, e := range equiv {
		byKey[e.key] = e
	}
	if err := checkStale(runs, equiv, equivPath); err != nil {
		return "", err
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# Mutation testing\n\nMade by `make mutate` (github.com/go-gremlins/gremlins, pinned in hack/mutate/go.mod, then hack/mutate/uncovered) on %s%s.\n",
		now.UTC().Format("2006-01-02"), map[bool]string{true: "", false: ", " + machine}[machine == ""])
	b.WriteString(methodParagraph)
	fmt.Fprintf(&b, "Efficacy is killed / (killed + lived), mutator coverage (killed + lived) / (killed + lived + not covered), both with the mutants judged equivalent left out; not viable and timed-out mutants count in neither. Targets: efficacy >= %.0f %%, coverage >= %.0f %%.\n", targetEfficacy, targetCoverage)
	b.WriteString("A lived mutant is a change to the product that every test passed: each is listed below, killed by a new test next time, or judged equivalent (hack/mutate/equivalent.txt, with the reason).\n\n")
	b.WriteString("| package | killed | of them outside coverage blocks, tested by hack/mutate/uncovered | lived (equivalent) | not covered | not viable | timed out | efficacy | coverage | minutes | meets targets | gremlins alone: killed, lived, not covered, its efficacy and coverage (equivalent counted as lived) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	var detail strings.Builder
	for _, r := range runs {
		c := count(r, byKey)
		meets := "no"
		if c.efficacy() >= targetEfficacy && c.coverage() >= targetCoverage {
			meets = "yes"
		}
		if len(c.contradictions) > 0 {
			meets += "; equivalent.txt contradicted, killed: " + strings.Join(c.contradictions, ", ")
		}
		outside := "not tested (no uncovered result)"
		minutes := fmt.Sprintf("%.1f", r.g.ElapsedTime/60)
		if r.u != nil {
			outside = fmt.Sprint(c.killedOutside)
			if c.tested < c.gremlinsNotCovered {
				outside += fmt.Sprintf(" (partial: %d of gremlins' %d not covered tested)", c.tested, c.gremlinsNotCovered)
			}
			minutes += fmt.Sprintf(" + %.1f", r.u.ElapsedTime/60)
		}
		gk, gl, gnc, gto := gremlinsCounts(r)
		alone := fmt.Sprintf("%d, %d, %d: %.1f %%, %.1f %%", gk, gl, gnc, r.g.TestEfficacy, r.g.MutationsCoverage)
		if gto > 0 {
			alone += fmt.Sprintf(" (%d timed out)", gto)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %d (%d) | %d | %d | %d | %.1f %% | %.1f %% | %s | %s | %s |\n",
			r.pkg, c.killed, outside, c.lived, c.equivalent, c.notCovered, c.notViable, c.timedOut, c.efficacy(), c.coverage(), minutes, meets, alone)
		writeDetail(&detail, r, byKey)
	}
	if note != "" {
		b.WriteString("\n" + note + "\n")
	}
	b.WriteString(detail.String())
	return b.String(), nil
}

// methodParagraph says how the figures are made; docs/mutation.md's top
// repeats it.
const methodParagraph = "gremlins tests only the mutants inside Go's coverage blocks and marks the others (switch case expressions, case-list conditions, constants) NOT COVERED without running them; hack/mutate/uncovered then applies each of those (the token at its file:line:col checked against gremlins' own mutator table, the file replaced through `go test -overlay`), builds the package's tests (a build failure is not viable) and runs them with -failfast and a timeout scaled from the package's clean run (make mutate: 4 times it, at least 10 s): the table counts each by that result, in the column of its result, and says how many of the killed were outside coverage blocks. gremlins' own figures are in the last column. equivalent.txt entries are checked against the run: one that names no mutant of its package's run fails the report; one whose mutant was killed is marked.\n"

func readRun(f, uncDir string) (*pkgRun, error) {
	r := &pkgRun{pkg: strings.ReplaceAll(strings.TrimSuffix(filepath.Base(f), ".json"), "_", "/")}
	if err := mutjson.Read(f, &r.g); err != nil {
		return nil, err
	}
	uf := filepath.Join(uncDir, filepath.Base(f))
	if _, err := os.Stat(uf); err == nil {
		r.u = new(mutjson.Uncovered)
		if err := mutjson.Read(uf, r.u); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	tested := map[string]*mutjson.Tested{}
	if r.u != nil {
		for i := range r.u.Mutants {
			t := &r.u.Mutants[i]
			k := fmt.Sprintf("%s/%s:%d:%d %s", r.pkg, t.File, t.Line, t.Column, t.Type)
			if tested[k] != nil {
				return nil, fmt.Errorf("%s: %s tested twice", uf, k)
			}
			switch t.Status {
			case mutjson.Killed, mutjson.Lived, mutjson.NotViable, mutjson.TimedOut, mutjson.Skipped:
			default:
				return nil, fmt.Errorf("%s: %s: status %q is none of uncovered's", uf, k, t.Status)
			}
			tested[k] = t
		}
	}
	for _, fl := range r.g.Files {
		for _, m := range fl.Mutations {
			file := r.pkg + "/" + fl.Name
			mu := mutant{key: fmt.Sprintf("%s:%d:%d %s", file, m.Line, m.Column, m.Type), file: file, status: m.Status, gremlins: m.Status}
			if t := tested[mu.key]; t != nil {
				if m.Status != mutjson.NotCovered {
					return nil, fmt.Errorf("%s: %s was tested by uncovered but gremlins' %s says %s, not NOT COVERED: the two results are not of one run", uf, mu.key, f, m.Status)
				}
				if t.Status == mutjson.Skipped {
					mu.skipped = t.Detail // not tested: stays NOT COVERED
				} else {
					mu.status, mu.tested = t.Status, t
				}
				delete(tested, mu.key)
			}
			r.mutants = append(r.mutants, mu)
		}
	}
	for k := range tested {
		return nil, fmt.Errorf("%s: %s is no mutant of gremlins' %s: the two results are not of one run", uf, k, f)
	}
	return r, nil
}

func count(r *pkgRun, equiv map[string]equivEntry) counts {
	var c counts
	for _, m := range r.mutants {
		if m.gremlins == mutjson.NotCovered {
			c.gremlinsNotCovered++
			if m.tested != nil {
				c.tested++
			}
		}
		_, eq := equiv[m.key]
		switch m.status {
		case mutjson.Killed:
			c.killed++
			if m.tested != nil {
				c.killedOutside++
			}
			if eq {
				c.contradictions = append(c.contradictions, m.key)
			}
		case mutjson.Lived:
			c.lived++
			if eq {
				c.equivalent++
			}
		case mutjson.NotCovered:
			c.notCovered++
		case mutjson.NotViable:
			c.notViable++
		case mutjson.TimedOut:
			c.timedOut++
		}
	}
	return c
}

// gremlinsCounts are gremlins' own killed, lived, not covered and timed out.
func gremlinsCounts(r *pkgRun) (killed, lived, notCovered, timedOut int) {
	for _, m := range r.mutants {
		switch m.gremlins {
		case mutjson.Killed:
			killed++
		case mutjson.Lived:
			lived++
		case mutjson.NotCovered:
			notCovered++
		case mutjson.TimedOut:
			timedOut++
		}
	}
	return
}

// checkStale fails on an equivalent.txt entry for a package of this run
// that names no mutant of the run. An entry belongs to the run of the
// longest package path it lies under, when its file is in that package's
// directory or in a subdirectory the run has results for.
func checkStale(runs []*pkgRun, equiv []equivEntry, equivPath string) error {
	keys := map[string]bool{}
	for _, r := range runs {
		for _, m := range r.mutants {
			keys[m.key] = true
		}
	}
	var stale []string
	for _, e := range equiv {
		file, _, _ := strings.Cut(e.key, ":")
		r := owner(runs, file)
		if r == nil || keys[e.key] {
			continue
		}
		why := "no mutant of this type at this position"
		if !slices.ContainsFunc(r.mutants, func(m mutant) bool { return m.file == file }) {
			why = "no mutant in this file"
		}
		stale = append(stale, fmt.Sprintf("%s:%d: %s: %s in this run of %s", filepath.Base(equivPath), e.line, e.key, why, r.pkg))
	}
	if len(stale) > 0 {
		return &StaleError{Path: equivPath, Entries: stale}
	}
	return nil
}

func owner(runs []*pkgRun, file string) *pkgRun {
	var best *pkgRun
	for _, r := range runs {
		rel, ok := strings.CutPrefix(file, r.pkg+"/")
		if !ok || (best != nil && len(best.pkg) >= len(r.pkg)) {
			continue
		}
		if dir := path.Dir(rel); dir != "." && !slices.ContainsFunc(r.g.Files, func(f mutjson.File) bool { return path.Dir(f.Name) == dir }) {
			continue
		}
		best = r
	}
	return best
}

func writeDetail(d *strings.Builder, r *pkgRun, equiv map[string]equivEntry) {
	var lived, notCovered, outside, other, contra []string
	for _, m := range r.mutants {
		e, eq := equiv[m.key]
		at := m.key
		if m.tested != nil {
			at += fmt.Sprintf(" `%s`→`%s`", m.tested.From, m.tested.To)
		}
		switch m.status {
		case mutjson.Lived:
			if m.tested != nil {
				at += " (outside coverage blocks, hack/mutate/uncovered)"
			}
			if eq {
				at += " — equivalent: " + e.reason
			}
			lived = append(lived, at)
		case mutjson.NotCovered:
			if m.skipped != "" {
				at += " (hack/mutate/uncovered did not test it: " + m.skipped + ")"
			}
			if eq {
				at += " — equivalent (not tested): " + e.reason
			}
			notCovered = append(notCovered, at)
		case mutjson.Killed:
			if eq {
				contra = append(contra, fmt.Sprintf("%s (equivalent.txt line %d)", at, e.line))
			}
			if m.tested != nil {
				outside = append(outside, at+withDetail(m.tested.Detail))
			}
		case mutjson.NotViable, mutjson.TimedOut:
			s := at + " " + m.status
			if m.tested != nil {
				s += " (outside coverage blocks, hack/mutate/uncovered)" + withDetail(m.tested.Detail)
			}
			other = append(other, s)
		}
	}
	fmt.Fprintf(d, "\n## %s\n\nLived:\n", r.pkg)
	writeList(d, lived)
	d.WriteString("\nNot covered (not tested):\n")
	writeList(d, notCovered)
	if r.u != nil {
		d.WriteString("\nKilled outside coverage blocks (hack/mutate/uncovered; the first failing tests):\n")
		writeList(d, outside)
	}
	if len(other) > 0 {
		d.WriteString("\nNot viable or timed out:\n")
		writeList(d, other)
	}
	if len(contra) > 0 {
		d.WriteString("\nListed in equivalent.txt but killed (not equivalent: remove the entry):\n")
		writeList(d, contra)
	}
}

func withDetail(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func writeList(b *strings.Builder, items []string) {
	if len(items) == 0 {
		b.WriteString("- none\n")
	}
	slices.SortStableFunc(items, compareAt)
	for _, s := range items {
		fmt.Fprintf(b, "- %s\n", s)
	}
}

func readEquivalent(path string) ([]equivEntry, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []equivEntry
	seen := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.SplitN(line, " ", 3)
		if len(fields) < 3 {
			return nil, fmt.Errorf("%s:%d: want `pkg/file.go:line:col TYPE reason`", path, n)
		}
		key := fields[0] + " " + fields[1]
		if prev, ok := seen[key]; ok {
			return nil, fmt.Errorf("%s:%d: %s is listed already, at line %d", path, n, key, prev)
		}
		seen[key] = n
		out = append(out, equivEntry{key: key, reason: fields[2], line: n})
	}
	return out, sc.Err()
}

// compareAt orders `pkg/file.go:line:col TYPE ...` items by file, then line
// and column as numbers, then the rest.
func compareAt(a, b string) int {
	fa, la, ca, ra := splitAt(a)
	fb, lb, cb, rb := splitAt(b)
	return cmp.Or(strings.Compare(fa, fb), cmp.Compare(la, lb), cmp.Compare(ca, cb), strings.Compare(ra, rb))
}

func splitAt(s string) (file string, line, col int, rest string) {
	at, rest, _ := strings.Cut(s, " ")
	parts := strings.Split(at, ":")
	if len(parts) != 3 {
		return s, 0, 0, ""
	}
	line, _ = strconv.Atoi(parts[1])
	col, _ = strconv.Atoi(parts[2])
	return parts[0], line, col, rest
}
