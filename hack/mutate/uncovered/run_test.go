package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/hack/mutate/internal/mutjson"
)

// gremlinsTiny is a gremlins result for testdata/tiny: five NOT COVERED
// mutants, one of each result, and one gremlins killed itself.
const gremlinsTiny = `{"go_module":"example.com/tiny","files":[{"file_name":"tiny.go","mutations":[
{"type":"CONDITIONALS_BOUNDARY","status":"NOT COVERED","line":7,"column":9},
{"type":"CONDITIONALS_NEGATION","status":"KILLED","line":9,"column":9},
{"type":"ARITHMETIC_BASE","status":"NOT COVERED","line":16,"column":47},
{"type":"INCREMENT_DECREMENT","status":"NOT COVERED","line":21,"column":22},
{"type":"ARITHMETIC_BASE","status":"NOT COVERED","line":27,"column":20}]},
{"file_name":"ignored.go","mutations":[
{"type":"CONDITIONALS_NEGATION","status":"NOT COVERED","line":6,"column":37}]}],
"mutants_killed":1,"mutants_not_covered":4}`

func TestRunTestsEachNotCoveredMutant(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs testdata/tiny's tests six times")
	}
	t.Setenv("GOWORK", "off")
	dir := t.TempDir()
	in := filepath.Join(dir, "tiny.json")
	if err := os.WriteFile(in, []byte(gremlinsTiny), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile("testdata/tiny/tiny.go")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "tiny.json")
	cfg := config{in: in, dir: "testdata/tiny", out: out, coef: 1, minTimeout: 3 * time.Second, buildTimeout: 5 * time.Minute}
	if err := run(cfg); err != nil {
		t.Fatal(err)
	}
	var res mutjson.Uncovered
	if err := mutjson.Read(out, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Complete || res.Tool != "hack/mutate/uncovered" || res.Gremlins != in || res.Dir != "testdata/tiny" {
		t.Errorf("header: %+v", res)
	}
	if len(res.Packages) != 1 || res.Packages[0].Dir != "." || !res.Packages[0].HasTests || res.Packages[0].TimeoutSeconds < 3 {
		t.Errorf("packages: %+v", res.Packages)
	}
	want := []struct {
		line          int
		from, to      string
		status, inDet string
	}{
		{6, "==", "!=", mutjson.Skipped, "not in the package's build here"}, // files in name order
		{7, ">", ">=", mutjson.Killed, "TestSign"},
		{16, "+", "-", mutjson.NotViable, "tiny.go:16:41: invalid operation"},
		{21, "++", "--", mutjson.TimedOut, "over 3s"},
		{27, "*", "/", mutjson.Lived, ""},
	}
	if len(res.Mutants) != len(want) {
		t.Fatalf("%d mutants tested, want %d: %+v", len(res.Mutants), len(want), res.Mutants)
	}
	for i, w := range want {
		m := res.Mutants[i]
		if m.File != map[bool]string{true: "ignored.go", false: "tiny.go"}[w.status == mutjson.Skipped] || m.Line != w.line || m.From != w.from || m.To != w.to || m.Status != w.status || !strings.HasPrefix(m.Detail, w.inDet) {
			t.Errorf("mutant %d: %+v, want line %d %s→%s %s its detail starting %q", i, m, w.line, w.from, w.to, w.status, w.inDet)
		}
	}
	after, err := os.ReadFile("testdata/tiny/tiny.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("testdata/tiny/tiny.go was written")
	}
}

func TestRunRefusesAMutantThatDoesNotMatch(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "tiny.json")
	// 9:9 is `<`: INCREMENT_DECREMENT does not apply there.
	bad := strings.Replace(gremlinsTiny, `"CONDITIONALS_NEGATION","status":"KILLED"`, `"INCREMENT_DECREMENT","status":"NOT COVERED"`, 1)
	if err := os.WriteFile(in, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.json")
	err := run(config{in: in, dir: "testdata/tiny", out: out, coef: 1, minTimeout: time.Second, buildTimeout: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "do not match the source") {
		t.Fatalf("run: %v, want an error", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a result was written: %v", err)
	}
}
