// Package mutjson holds the JSON shapes make mutate passes between its
// steps: gremlins' result (gremlins unleash -o, v0.6.0's
// internal/report/internal.OutputResult, the fields read here) and the
// result of hack/mutate/uncovered, which tests the mutants gremlins marks
// NOT COVERED.
package mutjson

import (
	"encoding/json"
	"fmt"
	"os"
)

// Statuses, as gremlins spells them.
const (
	Killed     = "KILLED"
	Lived      = "LIVED"
	NotCovered = "NOT COVERED"
	NotViable  = "NOT VIABLE"
	TimedOut   = "TIMED OUT"
	Skipped    = "SKIPPED"
)

// Gremlins is gremlins' JSON result for one run (one package directory).
type Gremlins struct {
	GoModule          string  `json:"go_module"`
	Files             []File  `json:"files"`
	TestEfficacy      float64 `json:"test_efficacy"`
	MutationsCoverage float64 `json:"mutations_coverage"`
	MutantsTotal      int     `json:"mutants_total"`
	MutantsKilled     int     `json:"mutants_killed"`
	MutantsLived      int     `json:"mutants_lived"`
	MutantsNotViable  int     `json:"mutants_not_viable"`
	MutantsNotCovered int     `json:"mutants_not_covered"`
	ElapsedTime       float64 `json:"elapsed_time"` // seconds
}

// File is one source file's mutants; Name is relative to the directory
// gremlins was run on (its path argument).
type File struct {
	Name      string     `json:"file_name"`
	Mutations []Mutation `json:"mutations"`
}

// Mutation is one mutant: its mutator type (CONDITIONALS_BOUNDARY, ...),
// status and the 1-based line and byte column of the token it changes.
type Mutation struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
}

// Uncovered is hack/mutate/uncovered's result: every NOT COVERED mutant of
// one gremlins result, applied and tested.
type Uncovered struct {
	Tool     string `json:"tool"`            // "hack/mutate/uncovered"
	Gremlins string `json:"gremlins_result"` // the gremlins result read, as given
	Dir      string `json:"dir"`             // the directory gremlins ran on, as given
	// Complete is false while the run is under way (the file is rewritten
	// after every mutant) or when it was stopped: mutants not in Mutants
	// were not tested.
	Complete    bool         `json:"complete"`
	Coefficient float64      `json:"timeout_coefficient"`
	Packages    []PackageRun `json:"packages"`
	Mutants     []Tested     `json:"mutants"`
	ElapsedTime float64      `json:"elapsed_time"` // seconds
}

// PackageRun is the clean run of one package's tests that the mutants'
// timeout is scaled from.
type PackageRun struct {
	Dir            string  `json:"dir"` // relative to Uncovered.Dir
	CleanSeconds   float64 `json:"clean_seconds"`
	TimeoutSeconds float64 `json:"timeout_seconds"`
	HasTests       bool    `json:"has_tests"`
}

// Tested is one NOT COVERED mutant as uncovered applied and tested it.
type Tested struct {
	File   string `json:"file_name"` // as in gremlins' result
	Type   string `json:"type"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
	From   string `json:"from"` // the token found at line:column
	To     string `json:"to"`   // the token put there
	// Status is KILLED (the package's tests failed), LIVED (they passed),
	// NOT VIABLE (the package or its tests did not compile), TIMED OUT, or
	// SKIPPED (not tested: the file is not in the package's build here, so
	// the mutant could change nothing; it stays NOT COVERED).
	Status  string  `json:"status"`
	Detail  string  `json:"detail,omitempty"` // failing tests, or the first compiler error
	Seconds float64 `json:"seconds"`
}

// Read decodes the JSON file at path into v.
func Read(path string, v any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
