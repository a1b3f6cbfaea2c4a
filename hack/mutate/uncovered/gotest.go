package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/weftmesh/weft/hack/mutate/internal/mutjson"
)

// pkgTests runs one package's tests against its mutants.
type pkgTests struct {
	dir      string // the package's directory, absolute
	tmp      string // its own temporary directory
	cfg      config
	clean    time.Duration
	timeout  time.Duration
	hasTests bool
	files    map[string]bool // the package's Go files in this build
}

// newPkgTests builds the package's test binary and runs it without a mutant:
// its time scales the mutants' timeout.
func newPkgTests(dir, tmp string, cfg config) (*pkgTests, error) {
	pt := &pkgTests{dir: dir, cfg: cfg}
	var err error
	if pt.tmp, err = os.MkdirTemp(tmp, filepath.Base(dir)+"-"); err != nil {
		return nil, err
	}
	if pt.files, err = pt.goFiles(); err != nil {
		return nil, err
	}
	bin := filepath.Join(pt.tmp, "clean.test")
	if out, err := pt.build(bin, ""); err != nil {
		return nil, fmt.Errorf("%s does not build without a mutant: %v\n%s", dir, err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		// go test -c writes no binary for a package without test files:
		// nothing can kill its mutants.
		pt.timeout = cfg.minTimeout
		return pt, nil
	}
	pt.hasTests = true
	t0 := time.Now()
	status, out, err := pt.runBinary(bin, 30*time.Minute)
	pt.clean = time.Since(t0)
	if err != nil {
		return nil, err
	}
	if status != mutjson.Lived {
		return nil, fmt.Errorf("%s: the tests do not pass without a mutant (%s):\n%s", dir, status, tail(out, 4000))
	}
	os.Remove(bin)
	pt.timeout = max(time.Duration(cfg.coef*float64(pt.clean)), cfg.minTimeout)
	return pt, nil
}

// test runs the package's tests with src in place of path.
func (pt *pkgTests) test(path string, src []byte) (status, detail string, err error) {
	if !pt.files[filepath.Base(path)] {
		// gremlins mutates every .go file; a file this build leaves out
		// (build constraints) would make a mutant that changes nothing.
		return mutjson.Skipped, "not in the package's build here (build constraints)", nil
	}
	mutated := filepath.Join(pt.tmp, filepath.Base(path))
	if err := os.WriteFile(mutated, src, 0o644); err != nil {
		return "", "", err
	}
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {path: mutated}})
	if err != nil {
		return "", "", err
	}
	ov := filepath.Join(pt.tmp, "overlay.json")
	if err := os.WriteFile(ov, overlay, 0o644); err != nil {
		return "", "", err
	}
	bin := filepath.Join(pt.tmp, "mutant.test")
	os.Remove(bin)
	defer os.Remove(bin)
	if out, err := pt.build(bin, ov); err != nil {
		var exit *exec.ExitError
		if errors.Is(err, context.DeadlineExceeded) {
			return mutjson.TimedOut, "the build timed out", nil
		}
		if !errors.As(err, &exit) {
			return "", "", err
		}
		// The compiler names the overlay's copy: name the file instead.
		return mutjson.NotViable, strings.ReplaceAll(firstError(out), mutated, filepath.Base(path)), nil
	}
	if !pt.hasTests {
		return mutjson.Lived, "no test files", nil
	}
	status, out, err := pt.runBinary(bin, pt.timeout)
	if err != nil {
		return "", "", err
	}
	switch status {
	case mutjson.Killed:
		detail = failures(out)
	case mutjson.TimedOut:
		detail = fmt.Sprintf("over %s", pt.timeout.Round(100*time.Millisecond))
	}
	return status, detail, nil
}

// goFiles lists the package's Go files (cgo ones included) in this build.
func (pt *pkgTests) goFiles() (map[string]bool, error) {
	args := []string{"list", "-f", "{{range .GoFiles}}{{.}}\n{{end}}{{range .CgoFiles}}{{.}}\n{{end}}"}
	if pt.cfg.tags != "" {
		args = append(args, "-tags", pt.cfg.tags)
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = pt.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list in %s: %v\n%s", pt.dir, err, stderr.Bytes())
	}
	files := map[string]bool{}
	for _, f := range strings.Fields(string(out)) {
		files[f] = true
	}
	return files, nil
}

// build is `go test -c` of the package, with an overlay if ov is not "".
func (pt *pkgTests) build(bin, ov string) ([]byte, error) {
	args := []string{"test", "-c", "-vet=off", "-o", bin}
	if ov != "" {
		args = append(args, "-overlay", ov)
	}
	if pt.cfg.tags != "" {
		args = append(args, "-tags", pt.cfg.tags)
	}
	args = append(args, ".")
	ctx, cancel := context.WithTimeout(context.Background(), pt.cfg.buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = pt.dir
	out, err := runGroup(cmd)
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	return out, err
}

// runBinary runs a test binary in the package's directory as go test runs
// it (-count=1 -failfast). The error is for a binary that could not start.
func (pt *pkgTests) runBinary(bin string, timeout time.Duration) (string, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The binary's own -test.timeout is later than ours, as gremlins does:
	// ours decides, and the binary's only stops one we failed to kill.
	args := []string{"-test.count=1", "-test.failfast", "-test.paniconexit0", "-test.timeout=" + (timeout + 30*time.Second).String()}
	if pt.cfg.run != "" {
		args = append(args, "-test.run="+pt.cfg.run)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = pt.dir
	out, err := runGroup(cmd)
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return mutjson.TimedOut, out, nil
	case err == nil:
		return mutjson.Lived, out, nil
	case errors.As(err, &exit):
		if bytes.Contains(out, []byte("panic: test timed out after")) {
			return mutjson.TimedOut, out, nil
		}
		return mutjson.Killed, out, nil
	}
	return "", out, err
}

// runGroup runs cmd in its own process group, which a cancelled context
// kills whole (go test -c's compilers, the test binary's children).
func runGroup(cmd *exec.Cmd) ([]byte, error) {
	var buf capped
	cmd.Stdout, cmd.Stderr = &buf, &buf
	setGroup(cmd)
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	return buf.bytes(), err
}

// capped keeps the first and the last 64 KiB written to it.
type capped struct {
	head, tail []byte
	dropped    int
}

const capHalf = 64 << 10

func (c *capped) Write(p []byte) (int, error) {
	n := len(p)
	if room := capHalf - len(c.head); room > 0 {
		k := min(room, len(p))
		c.head = append(c.head, p[:k]...)
		p = p[k:]
	}
	c.tail = append(c.tail, p...)
	if over := len(c.tail) - capHalf; over > 0 {
		c.dropped += over
		c.tail = append(c.tail[:0], c.tail[over:]...)
	}
	return n, nil
}

func (c *capped) bytes() []byte {
	if c.dropped == 0 {
		return append(c.head, c.tail...)
	}
	return append(append(c.head, fmt.Sprintf("\n[%d bytes left out]\n", c.dropped)...), c.tail...)
}

var failLine = regexp.MustCompile(`(?m)^\s*--- FAIL: (\S+)`)

// failures names the failing tests in a test binary's output (at most
// three), or says it panicked or what it ended with.
func failures(out []byte) string {
	var names []string
	for _, m := range failLine.FindAllSubmatch(out, -1) {
		names = append(names, string(m[1]))
	}
	switch {
	case len(names) > 3:
		return strings.Join(names[:3], ", ") + fmt.Sprintf(" and %d more", len(names)-3)
	case len(names) > 0:
		return strings.Join(names, ", ")
	case bytes.Contains(out, []byte("panic: ")):
		return "panic: " + firstLineAfter(out, "panic: ")
	}
	return "exit status not 0: " + lastLine(out)
}

// firstError is the compiler's first error line.
func firstError(out []byte) string {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
			continue
		}
		return strings.TrimSpace(l)
	}
	return "build failed"
}

func firstLineAfter(out []byte, prefix string) string {
	i := bytes.Index(out, []byte(prefix))
	rest := string(out[i+len(prefix):])
	if j := strings.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	return strings.TrimSpace(rest)
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func tail(out []byte, n int) string {
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return string(out)
}
