package weftctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"
)

// errFailed is returned by a command whose report found a problem: the
// report is already printed, so main only has to exit non-zero.
type errFailed struct{ what string }

func (e errFailed) Error() string { return "weftctl " + e.what }

// printStructured writes v as JSON or YAML when the -o flag asks for it and
// reports whether it did; "table" (or "") leaves the printing to the caller.
func printStructured(w io.Writer, format string, v any) (bool, error) {
	switch format {
	case "", "table", "wide":
		return false, nil
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return true, enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return true, fmt.Errorf("weftctl: yaml: %w", err)
		}
		_, err = w.Write(b)
		return true, err
	default:
		return true, fmt.Errorf("weftctl: -o %q: want table, json or yaml", format)
	}
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() { _ = t.tw.Flush() }

// until says when t is, relative to now: "2026-01-02T15:04:05Z (in 23h59m)".
func until(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := t.Sub(now)
	if d < 0 {
		return t.UTC().Format(time.RFC3339) + " (EXPIRED " + human(-d) + " ago)"
	}
	return t.UTC().Format(time.RFC3339) + " (in " + human(d) + ")"
}

// human rounds a duration for people: 3d4h, 5h12m, 42s.
func human(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		days := d / (24 * time.Hour)
		return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	case d >= time.Minute:
		return strings.TrimSuffix(d.Round(time.Second).String(), "0s")
	default:
		return d.Round(time.Second).String()
	}
}

// short cuts a long version hash for a table.
func short(v string) string {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}
