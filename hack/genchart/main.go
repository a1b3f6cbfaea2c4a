// Command genchart writes the Helm chart charts/weft from deploy/: the
// manifests weftctl install applies, as Helm templates (deploy.ChartFiles).
// Run it from the repository root after changing deploy/ or weftctl
// install's flags; deploy's TestChartInSync fails until it has been run.
//
//	go run ./hack/genchart [-out charts/weft]
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/weftmesh/weft/deploy"
)

func main() {
	out := flag.String("out", "charts/weft", "the chart's directory")
	flag.Parse()
	if err := write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "genchart:", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	files, err := deploy.ChartFiles()
	if err != nil {
		return err
	}
	// Files of an earlier generation that no longer exist go, so a
	// manifest removed from deploy/ leaves the chart too.
	if _, err := os.Stat(dir); err == nil {
		var stale []string
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			if _, ok := files[filepath.ToSlash(rel)]; !ok {
				stale = append(stale, p)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, p := range stale {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("genchart: %d files in %s\n", len(names), dir)
	return nil
}
