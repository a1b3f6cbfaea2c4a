// Command report turns gremlins' JSON results (one file per package, from
// `make mutate`) into docs/mutation.md: efficacy and mutator coverage per
// package against the targets, and every mutant that lived or was not
// covered, with the reason where equivalent.txt calls it equivalent.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

type result struct {
	Efficacy    float64 `json:"test_efficacy"`
	Coverage    float64 `json:"mutations_coverage"`
	Killed      int     `json:"mutants_killed"`
	Lived       int     `json:"mutants_lived"`
	NotViable   int     `json:"mutants_not_viable"`
	NotCovered  int     `json:"mutants_not_covered"`
	ElapsedSecs float64 `json:"elapsed_time"`
	Files       []struct {
		Name      string `json:"file_name"`
		Mutations []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
			Line   int    `json:"line"`
			Column int    `json:"column"`
		} `json:"mutations"`
	} `json:"files"`
}

const (
	targetEfficacy = 90.0
	targetCoverage = 85.0
)

func main() {
	in := flag.String("in", "_output/mutate", "directory of gremlins JSON results, one per package (pkg path with / as _)")
	out := flag.String("out", "docs/mutation.md", "report to write")
	equiv := flag.String("equivalent", "hack/mutate/equivalent.txt", "mutants judged equivalent: `pkg/file.go:line:col TYPE reason` per line")
	machine := flag.String("machine", "", "where it ran (CPU, cores)")
	note := flag.String("note", "", "a paragraph to add under the table (what was not run, and why)")
	flag.Parse()
	if err := run(*in, *out, *equiv, *machine, *note); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, out, equivPath, machine, note string) error {
	equiv, err := readEquivalent(equivPath)
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(in, "*.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no results in %s", in)
	}
	slices.Sort(files)
	var b strings.Builder
	fmt.Fprintf(&b, "# Mutation testing\n\nMade by `make mutate` (github.com/go-gremlins/gremlins, pinned in hack/mutate/go.mod) on %s%s.\n",
		time.Now().UTC().Format("2006-01-02"), map[bool]string{true: "", false: ", " + machine}[machine == ""])
	fmt.Fprintf(&b, "Efficacy is killed / (killed + lived), the mutants judged equivalent left out; mutator coverage is (killed + lived) / all mutants. Targets: efficacy >= %.0f %%, coverage >= %.0f %%.\n", targetEfficacy, targetCoverage)
	b.WriteString("A lived mutant is a change to the product that every test passed: each is listed below, killed by a new test next time, or judged equivalent (hack/mutate/equivalent.txt, with the reason).\n\n")
	b.WriteString("| package | killed | lived (equivalent) | not covered | not viable | efficacy | coverage | minutes | meets targets |\n|---|---|---|---|---|---|---|---|---|\n")
	var detail strings.Builder
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r result
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		pkg := strings.ReplaceAll(strings.TrimSuffix(filepath.Base(f), ".json"), "_", "/")
		var lived, uncovered []string
		eq := 0
		for _, fl := range r.Files {
			for _, m := range fl.Mutations {
				at := fmt.Sprintf("%s/%s:%d:%d %s", pkg, fl.Name, m.Line, m.Column, m.Type)
				switch m.Status {
				case "LIVED":
					if why, ok := equiv[at]; ok {
						eq++
						lived = append(lived, at+" — equivalent: "+why)
					} else {
						lived = append(lived, at)
					}
				case "NOT COVERED":
					uncovered = append(uncovered, at)
				}
			}
		}
		// Equivalent mutants cannot be killed: they count as neither.
		killed, live := r.Killed, r.Lived-eq
		eff, cov := 0.0, 0.0
		if killed+live > 0 {
			eff = 100 * float64(killed) / float64(killed+live)
		}
		if all := killed + live + r.NotCovered; all > 0 {
			cov = 100 * float64(killed+live) / float64(all)
		}
		meets := "no"
		if eff >= targetEfficacy && cov >= targetCoverage {
			meets = "yes"
		}
		fmt.Fprintf(&b, "| %s | %d | %d (%d) | %d | %d | %.1f %% | %.1f %% | %.0f | %s |\n", pkg, killed, r.Lived, eq, r.NotCovered, r.NotViable, eff, cov, r.ElapsedSecs/60, meets)
		slices.Sort(lived)
		slices.Sort(uncovered)
		fmt.Fprintf(&detail, "\n## %s\n\nLived:\n", pkg)
		writeList(&detail, lived)
		detail.WriteString("\nNot covered:\n")
		writeList(&detail, uncovered)
	}
	if note != "" {
		b.WriteString("\n" + note + "\n")
	}
	b.WriteString(detail.String())
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

func writeList(b *strings.Builder, items []string) {
	if len(items) == 0 {
		b.WriteString("- none\n")
	}
	for _, s := range items {
		fmt.Fprintf(b, "- %s\n", s)
	}
}

func readEquivalent(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.SplitN(line, " ", 3)
		if len(fields) < 3 {
			return nil, fmt.Errorf("%s:%d: want `pkg/file.go:line:col TYPE reason`", path, n)
		}
		out[fields[0]+" "+fields[1]] = fields[2]
	}
	return out, sc.Err()
}
