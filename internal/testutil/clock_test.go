package testutil

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/certs"
)

// repoRoot is the module's root: two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", root, err)
	}
	return root
}

// walkRepo calls fn for every file of weft's own module: not .git, build
// output, or the separate tool modules that build upstream binaries.
func walkRepo(t *testing.T, fn func(rel string, b []byte)) {
	t.Helper()
	root := repoRoot(t)
	skip := map[string]bool{".git": true, "_output": true, "bin": true, "node_modules": true,
		"test/cluster/tools": true, "test/cluster/coredns": true, "sidecar/proxy/bench/tools": true}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if skip[rel] || strings.Contains(rel, "/testdata/fuzz") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fn(rel, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// timeBombs lists the calls in a test file that fix a date or start a fake
// clock by hand.
func timeBombs(fset *token.FileSet, f *ast.File) []string {
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		var pkg, name string
		switch fn := call.Fun.(type) {
		case *ast.SelectorExpr:
			name = fn.Sel.Name
			if id, ok := fn.X.(*ast.Ident); ok {
				pkg = id.Name
			}
		case *ast.Ident:
			name = fn.Name
		}
		bad := ""
		switch {
		case pkg == "time" && name == "Date" && !timelessYear(call.Args):
			bad = "time.Date fixes a date: use testutil.Epoch(t) for a start, testutil.Fixed for output that must not change"
		case pkg == "time" && (name == "Unix" || name == "UnixMilli" || name == "UnixMicro") && allLiteral(call.Args):
			bad = "time." + name + " of a constant fixes a date: use testutil.Epoch(t) or testutil.Fixed"
		case pkg == "time" && (name == "Parse" || name == "ParseInLocation") && len(call.Args) > 1 && allLiteral(call.Args[1:2]):
			bad = "time." + name + " of a constant fixes a date: use testutil.Epoch(t) or testutil.Fixed"
		case strings.HasPrefix(name, "NewFake") && strings.HasSuffix(name, "Clock"):
			bad = name + " starts a clock by hand: use testutil.FakeClock(t)"
		}
		if bad != "" {
			out = append(out, fmt.Sprintf("%s: %s", fset.Position(call.Pos()), bad))
		}
		return true
	})
	return out
}

// timelessYear: a literal year no test will ever run in (1970 and before,
// or 9999, RFC 5280's "no expiry").
func timelessYear(args []ast.Expr) bool {
	if len(args) == 0 {
		return false
	}
	lit, ok := args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.INT {
		return false
	}
	y, err := strconv.Atoi(lit.Value)
	return err == nil && (y <= 1970 || y == 9999)
}

func allLiteral(args []ast.Expr) bool {
	for _, a := range args {
		lit := true
		ast.Inspect(a, func(n ast.Node) bool {
			switch n.(type) {
			case nil, *ast.BasicLit, *ast.BinaryExpr, *ast.UnaryExpr, *ast.ParenExpr:
				return true
			default:
				lit = false
				return false
			}
		})
		if !lit {
			return false
		}
	}
	return len(args) > 0
}

// timeless: a certificate committed to the tree must not expire or come into
// force in any year a test runs (RFC 5280 4.1.2.5: 99991231235959Z means no
// expiry).
func timeless(c *x509.Certificate) bool {
	return !c.NotBefore.After(Fixed) && c.NotAfter.Year() == 9999
}

// stamp matches an RFC 3339 date-time.
var stamp = regexp.MustCompile(`\b(\d{4})-\d\d-\d\dT\d\d:\d\d:\d\d`)

// TestNoTimeBombs fails on the next test that would start failing on some
// future day: a fixed date or hand-started fake clock in a test (it mixes
// with the wall clock somewhere, or will), a committed certificate with a
// validity window, or a golden file stamped with a date near the wall
// clock's (the wall clock leaked into output, or a fixture fixed a date
// that a year from now will be "a year ago").
func TestNoTimeBombs(t *testing.T) {
	fset := token.NewFileSet()
	nearYears := int(EpochOffset/(365*24*time.Hour)) / 2
	nowYear := time.Now().Year()
	var found []string
	files := 0
	walkRepo(t, func(rel string, b []byte) {
		if strings.HasSuffix(rel, "_test.go") && rel != "internal/testutil/clock_test.go" {
			files++
			f, err := parser.ParseFile(fset, rel, b, 0)
			if err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			found = append(found, timeBombs(fset, f)...)
		}
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				continue // a deliberately corrupt one
			}
			if !timeless(c) {
				found = append(found, fmt.Sprintf("%s: certificate %q is valid %s to %s: commit only certificates valid from before testutil.Fixed to 9999-12-31 (regenerate it)",
					rel, c.Subject, c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339)))
			}
		}
		if strings.Contains(rel, "/testdata/") {
			for i, line := range strings.Split(string(b), "\n") {
				for _, m := range stamp.FindAllStringSubmatch(line, -1) {
					y, _ := strconv.Atoi(m[1])
					if y > nowYear-nearYears && y < nowYear+nearYears {
						found = append(found, fmt.Sprintf("%s:%d: %s is within %d years of today: golden output must come from testutil.Fixed, never the wall clock",
							rel, i+1, m[0], nearYears))
					}
				}
			}
		}
	})
	if files < 50 {
		t.Fatalf("walked only %d test files: is the repository root right?", files)
	}
	for _, f := range found {
		t.Error(f)
	}
}

// The guard itself: each kind of time bomb is found, and the helpers' own
// forms are not.
func TestTimeBombsFound(t *testing.T) {
	src := `package x
import ("time"; clocktesting "k8s.io/utils/clock/testing"; "testing")
func f(t *testing.T) {
	_ = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	_ = time.Unix(1_700_000_000, 0)
	_ = time.Parse(time.RFC3339, "2026-01-01T00:00:00Z")
	_ = clocktesting.NewFakeClock(time.Now())
	_ = time.Unix(0, n)           // computed: fine
	_ = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC) // never near now: fine
	_ = testutil.FakeClock(t)     // fine
	_ = testutil.Epoch(t).Add(1)  // fine
}`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "x_test.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := timeBombs(fset, f)
	if len(got) != 4 {
		t.Fatalf("found %d, want 4:\n%s", len(got), strings.Join(got, "\n"))
	}
	for i, line := range []int{4, 5, 6, 7} {
		if !strings.HasPrefix(got[i], fmt.Sprintf("x_test.go:%d:", line)) {
			t.Errorf("finding %d at %s, want line %d", i, got[i], line)
		}
	}
}

// TestEpochFarFromWallClock: both directions lie decades away, and the
// direction is stable for a test and can be forced.
func TestEpochFarFromWallClock(t *testing.T) {
	for _, dir := range []string{"ahead", "behind"} {
		t.Run(dir, func(t *testing.T) {
			t.Setenv(EpochEnv, dir)
			d := time.Until(Epoch(t))
			if dir == "behind" {
				d = -d
			}
			if d < EpochOffset-time.Minute {
				t.Fatalf("epoch %s by %v, want about %v", dir, d, EpochOffset)
			}
			if got := Ahead(t); got != (dir == "ahead") {
				t.Fatalf("Ahead = %v under %s=%s", got, EpochEnv, dir)
			}
		})
	}
	t.Run("unset", func(t *testing.T) {
		t.Setenv(EpochEnv, "")
		a := Ahead(t)
		for range 3 {
			if Ahead(t) != a {
				t.Fatal("direction changed between calls")
			}
		}
	})
}

// TestEpochCatchesMixedClocks is the bug that made this file: a certificate
// signed on the fake clock and verified on the wall clock fails whichever
// way the epoch lies, and passes with the fake clock's time.
func TestEpochCatchesMixedClocks(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	for _, dir := range []string{"ahead", "behind"} {
		t.Run(dir, func(t *testing.T) {
			t.Setenv(EpochEnv, dir)
			clk := FakeClock(t)
			ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			svid := SVID(t, ca, spiffeid.RequireFromPath(td, "/ns/demo/sa/app"), time.Hour)
			if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: Roots(ca), Intermediates: intermediatesOf(svid.Certificates)}); err == nil {
				t.Fatal("a certificate made on the fake clock verified on the wall clock")
			}
			if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: Roots(ca), Intermediates: intermediatesOf(svid.Certificates), CurrentTime: clk.Now()}); err != nil {
				t.Fatalf("on the fake clock: %v", err)
			}
		})
	}
}

func intermediatesOf(chain []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range chain[1:] {
		p.AddCert(c)
	}
	return p
}
