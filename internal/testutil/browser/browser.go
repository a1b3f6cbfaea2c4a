// Package browser loads pages in a real browser for tests: headless
// Chromium (Debian's chromium package) driven by its command-line flags
// alone — no DevTools protocol, nothing added to go.mod. Chromium runs the
// page's scripts under virtual time: it fast-forwards timers and waits for
// the page's fetches, up to the budget, before it dumps the DOM or takes
// the screenshot, so what it shows is the page once loaded.
//
// weftctl's page tests and the end-to-end dashboard test share it.
package browser

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RequireEnv set to 1 fails a browser test without Chromium instead of
// skipping it (.ci/run sets it).
const RequireEnv = "WEFT_REQUIRE_BROWSER"

// Window is the viewport pages are laid out (and screenshot) in.
const Window = "--window-size=1600,1200"

// Binary finds Chromium in PATH; without it t is skipped, or fails under
// WEFT_REQUIRE_BROWSER=1.
func Binary(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("no chromium in PATH, and %s=1 (apt-get install chromium)", RequireEnv)
	}
	t.Skipf("no chromium in PATH (apt-get install chromium; %s=1 fails instead)", RequireEnv)
	return ""
}

// virtualTime lets the page run 20 s of virtual time: Chromium waits for
// the page's fetches and fast-forwards its timers. Under it the page's
// clock (performance.now, Date.now) does not move within a script.
const virtualTime = "--virtual-time-budget=20000"

// run runs headless Chromium on a profile of its own with args added, and
// returns what it printed.
func run(t testing.TB, args ...string) []byte {
	t.Helper()
	bin := Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(),
		"--no-first-run", "--disable-extensions", "--disable-sync", "--disable-crash-reporter", Window,
	}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	t.Logf("chromium %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return stdout.Bytes()
}

// DOM loads url and returns the DOM (serialized as HTML) after the page's
// scripts ran.
func DOM(t testing.TB, url string) string {
	t.Helper()
	return string(run(t, virtualTime, "--dump-dom", url))
}

// DOMAtLoad loads url in real time and returns the DOM at the page's load
// event (for what the page's own clock measures: a page that must finish
// first holds its load event until then).
func DOMAtLoad(t testing.TB, url string) string {
	t.Helper()
	return string(run(t, "--dump-dom", url))
}

// Screenshot loads url and saves the viewport as a PNG at path.
func Screenshot(t testing.TB, url, path string) {
	t.Helper()
	run(t, virtualTime, "--screenshot="+path, url)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("screenshot of %s: %v", url, err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot of %s: %s is not a PNG", url, path)
	}
}
