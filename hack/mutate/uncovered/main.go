// Command uncovered tests the mutants gremlins marks NOT COVERED.
//
// gremlins (v0.6.0) tests only the mutants inside Go's coverage blocks and
// marks every other one NOT COVERED without running it: the expressions of
// switch cases, the conditions of case lists, constants. Tests reach many
// of them. uncovered reads a gremlins JSON result (gremlins unleash -o) and,
// for each NOT COVERED mutant, applies exactly that mutation and runs the
// tests of the mutant's package:
//
//   - It parses the file (go/parser), finds the operator gremlins mutates at
//     the mutant's line:column (the token of an assignment, binary or unary
//     expression, increment or decrement, break or continue) and checks that
//     the mutant's type replaces that token, with gremlins' own table (see
//     tokenMutations). A mutant whose token does not match is an error, and
//     no mutant is tested: the result and the source disagree.
//   - The mutated file goes to a temporary directory and the build sees it in
//     place of the original through `go test -overlay`: the checkout is never
//     written.
//   - `go test -c -vet=off -overlay ...` compiles the package's test binary;
//     when that fails the mutant is NOT VIABLE (gremlins, which reads only go
//     test's exit code, counts those as killed). The binary then runs in the
//     package's directory as go test runs it, with -test.failfast and
//     -test.count=1: it fails, KILLED; it passes, LIVED; it runs past the
//     timeout, TIMED OUT. vet is off so that a mutant vet would refuse (a
//     suspect `x != a || x != b`) is still tested.
//   - The timeout is -coefficient times the package's clean run (its test
//     binary, built and run the same way without a mutant), and at least
//     -min-timeout. A clean run that fails stops everything.
//
// The result (-out) is JSON, mutjson.Uncovered: the gremlins result and
// directory it came from, each package's clean time and timeout, and every
// mutant tested with the token found and the token put there, its status,
// the failing tests or the compiler's first error, and its time. It is
// rewritten after each mutant with "complete": false, and once more with
// true at the end. hack/mutate/report reads it next to gremlins' result.
//
// Run it from the module root (or anywhere in the module) after gremlins:
//
//	uncovered -in _output/mutate/sidecar_xds_model.json -dir ./sidecar/xds/model \
//	    -out _output/mutate/uncovered/sidecar_xds_model.json
//
// With -equivalent it runs nothing: it checks that every entry of an
// equivalent.txt still names, in the source under -dir (the module root),
// an operator its mutator type mutates, which finds an entry whose code
// moved without a mutation run (hack/mutate/report's check against a run
// finds the rest):
//
//	uncovered -equivalent hack/mutate/equivalent.txt -dir .
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/hack/mutate/internal/mutjson"
)

func main() {
	in := flag.String("in", "", "gremlins' JSON result (gremlins unleash -o)")
	dir := flag.String("dir", ".", "the directory gremlins was run on (its path argument); file names in the result are relative to it")
	out := flag.String("out", "", "where to write the result (JSON)")
	coef := flag.Float64("coefficient", 4, "a mutant's test timeout is this times the package's clean test run")
	minTimeout := flag.Duration("min-timeout", 10*time.Second, "the least timeout of a mutant's test run")
	buildTimeout := flag.Duration("build-timeout", 10*time.Minute, "the timeout of a mutant's build")
	tags := flag.String("tags", "", "build tags for go test")
	check := flag.Bool("check", false, "only apply every mutant and check its token; test none")
	runRE := flag.String("run", "", "only the tests this matches (go test -run): a quick check of new code's tests; a mutant that lives must then be run against the whole package")
	equiv := flag.String("equivalent", "", "instead: check that each entry of this equivalent.txt names, in the source under -dir, an operator its mutator type mutates")
	flag.Parse()
	if *equiv != "" {
		if err := checkEquivalent(*equiv, *dir); err != nil {
			fmt.Fprintln(os.Stderr, "uncovered:", err)
			os.Exit(1)
		}
		return
	}
	if *in == "" || (*out == "" && !*check) {
		fmt.Fprintln(os.Stderr, "uncovered: -in and -out are required")
		flag.Usage()
		os.Exit(2)
	}
	cfg := config{in: *in, dir: *dir, out: *out, coef: *coef, minTimeout: *minTimeout, buildTimeout: *buildTimeout, tags: *tags, check: *check, run: *runRE}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "uncovered:", err)
		os.Exit(1)
	}
}

type config struct {
	in, dir, out, tags string
	run                string // -run: the tests run, "" for all
	coef               float64
	minTimeout         time.Duration
	buildTimeout       time.Duration
	check              bool
}

// prepared is a NOT COVERED mutant applied in memory.
type prepared struct {
	mutjson.Mutation
	file string // as in gremlins' result
	path string // absolute
	mut  mutation
}

func run(cfg config) error {
	start := time.Now()
	var g mutjson.Gremlins
	if err := mutjson.Read(cfg.in, &g); err != nil {
		return err
	}
	root, err := filepath.Abs(cfg.dir)
	if err != nil {
		return err
	}
	todo, err := prepare(g, root)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "uncovered: %s: %d NOT COVERED mutants, each applied and its token checked\n", cfg.in, len(todo))
	if cfg.check {
		return nil
	}
	res := mutjson.Uncovered{Tool: "hack/mutate/uncovered", Gremlins: cfg.in, Dir: cfg.dir, Coefficient: cfg.coef, Mutants: []mutjson.Tested{}, Packages: []mutjson.PackageRun{}}
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		return err
	}
	write := func() error {
		res.ElapsedTime = time.Since(start).Seconds()
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // `<=`, not `\u003c=`
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
		return os.WriteFile(cfg.out, b.Bytes(), 0o644)
	}
	if err := write(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "uncovered-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	runners := map[string]*pkgTests{}
	for i, p := range todo {
		pkgDir := filepath.Dir(p.path)
		pt, ok := runners[pkgDir]
		if !ok {
			rel, _ := filepath.Rel(root, pkgDir)
			fmt.Fprintf(os.Stderr, "uncovered: clean run of %s\n", pkgDir)
			pt, err = newPkgTests(pkgDir, tmp, cfg)
			if err != nil {
				return err
			}
			runners[pkgDir] = pt
			res.Packages = append(res.Packages, mutjson.PackageRun{Dir: filepath.ToSlash(rel), CleanSeconds: pt.clean.Seconds(), TimeoutSeconds: pt.timeout.Seconds(), HasTests: pt.hasTests})
			fmt.Fprintf(os.Stderr, "uncovered: clean run %.1fs, timeout %.1fs\n", pt.clean.Seconds(), pt.timeout.Seconds())
		}
		t0 := time.Now()
		status, detail, err := pt.test(p.path, p.mut.Src)
		if err != nil {
			return fmt.Errorf("%s:%d:%d %s: %w", p.file, p.Line, p.Column, p.Type, err)
		}
		t := mutjson.Tested{File: p.file, Type: p.Type, Line: p.Line, Column: p.Column, From: p.mut.From.String(), To: p.mut.To.String(),
			Status: status, Detail: detail, Seconds: time.Since(t0).Seconds()}
		res.Mutants = append(res.Mutants, t)
		fmt.Fprintf(os.Stderr, "uncovered: [%d/%d] %s:%d:%d %s %s→%s %s %s (%.1fs)\n", i+1, len(todo), t.File, t.Line, t.Column, t.Type, t.From, t.To, t.Status, t.Detail, t.Seconds)
		if err := write(); err != nil {
			return err
		}
	}
	res.Complete = true
	return write()
}

// prepare applies every NOT COVERED mutant of g in memory, files under root,
// and fails on the first that does not apply.
func prepare(g mutjson.Gremlins, root string) ([]prepared, error) {
	var out []prepared
	var errs []error
	files := slices.Clone(g.Files)
	slices.SortFunc(files, func(a, b mutjson.File) int { return strings.Compare(a.Name, b.Name) })
	for _, f := range files {
		path := filepath.Join(root, filepath.FromSlash(f.Name))
		var src []byte
		for _, m := range f.Mutations {
			if m.Status != mutjson.NotCovered {
				continue
			}
			if src == nil {
				var err error
				if src, err = os.ReadFile(path); err != nil {
					return nil, err
				}
			}
			mut, err := apply(f.Name, src, m.Line, m.Column, m.Type)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, prepared{Mutation: m, file: f.Name, path: path, mut: mut})
		}
	}
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(os.Stderr, "uncovered:", e)
		}
		return nil, fmt.Errorf("%d of the NOT COVERED mutants do not match the source (is it the source gremlins ran on?)", len(errs))
	}
	return out, nil
}

// checkEquivalent applies every mutant equivalent.txt names to the source
// under root (the module's root): an entry whose position holds no operator
// its type mutates has rotted (the code moved), whether or not a run of its
// package is at hand. An entry that still applies may have rotted too (an
// operator of the same kind moved there); the report's check against a run
// finds those.
func checkEquivalent(path, root string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var bad []string
	n := 0
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n++
		at, typ, pos := parseEntry(line)
		if at == "" {
			bad = append(bad, fmt.Sprintf("%s:%d: want `pkg/file.go:line:col TYPE reason`", path, i+1))
			continue
		}
		src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(at)))
		if err == nil {
			_, err = apply(at, src, pos[0], pos[1], typ)
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s:%d: %v", path, i+1, err))
		}
	}
	for _, b := range bad {
		fmt.Fprintln(os.Stderr, b)
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d of %d entries of %s name no operator their type mutates", len(bad), n, path)
	}
	fmt.Fprintf(os.Stderr, "uncovered: %d entries of %s each name an operator their type mutates\n", n, path)
	return nil
}

// parseEntry splits `pkg/file.go:line:col TYPE reason`.
func parseEntry(line string) (file, typ string, pos [2]int) {
	fields := strings.SplitN(line, " ", 3)
	if len(fields) < 2 {
		return "", "", pos
	}
	parts := strings.Split(fields[0], ":")
	if len(parts) != 3 {
		return "", "", pos
	}
	for i, p := range parts[1:] {
		v, err := strconv.Atoi(p)
		if err != nil || v < 1 {
			return "", "", pos
		}
		pos[i] = v
	}
	return parts[0], fields[1], pos
}
