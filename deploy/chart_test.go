package deploy

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"text/template"
)

// chartDir is the committed chart, from this package's directory.
const chartDir = "../charts/weft"

// TestChartInSync fails when charts/weft is not what hack/genchart writes
// from deploy/ now: a manifest, a default or a flag changed without
// `go run ./hack/genchart`, or the chart was edited by hand.
func TestChartInSync(t *testing.T) {
	want, err := ChartFiles()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string][]byte{}
	err = filepath.WalkDir(chartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		b, err := os.ReadFile(p)
		have[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for n, w := range want {
		h, ok := have[n]
		switch {
		case !ok:
			t.Errorf("charts/weft/%s is missing", n)
		case !bytes.Equal(h, w):
			t.Errorf("charts/weft/%s differs from what hack/genchart writes", n)
		}
	}
	for n := range have {
		if _, ok := want[n]; !ok {
			t.Errorf("charts/weft/%s is not generated from deploy/", n)
		}
	}
	if t.Failed() {
		t.Log("run: go run ./hack/genchart")
	}
}

// exampleValue is a value for a field of Values other than its default,
// one that Validate accepts alone.
func exampleValue(t testing.TB, field string) any {
	switch field {
	case "Namespace":
		return "weft-other"
	case "Image":
		return "registry.example:5000/weft/"
	case "Tag":
		return "v1.2.3"
	case "PullPolicy":
		return "Never"
	case "TrustDomain":
		return "example.org"
	case "Replicas", "InjectorReplica":
		return 3
	case "LogLevel":
		return "debug"
	case "AuditPVC":
		return "weft-audit"
	case "NetworkPolicy", "HTTPRouting":
		return !reflect.ValueOf(Defaults()).FieldByName(field).Bool()
	}
	t.Fatalf("no example value for field %s (add one)", field)
	return nil
}

// valueSet is one case of the chart tests: the values, and the same as
// chart values (--set key=value).
type valueSet struct {
	name   string
	values Values
	set    map[string]any // chart key -> value; only what differs from values.yaml
}

// valueSets: the defaults, each field changed alone, and all changed
// together (the audit PVC with one replica, which it needs).
func valueSets(t testing.TB) []valueSet {
	sets := []valueSet{{name: "defaults", values: Defaults(), set: map[string]any{}}}
	all := valueSet{name: "all", values: Defaults(), set: map[string]any{}}
	for _, c := range ChartValues {
		v := Defaults()
		x := exampleValue(t, c.Field)
		reflect.ValueOf(&v).Elem().FieldByName(c.Field).Set(reflect.ValueOf(x))
		sets = append(sets, valueSet{name: c.Key(), values: v, set: map[string]any{c.Key(): x}})
		if c.Field != "Replicas" {
			reflect.ValueOf(&all.values).Elem().FieldByName(c.Field).Set(reflect.ValueOf(x))
			all.set[c.Key()] = x
		}
	}
	return append(sets, all)
}

// chartData is what Helm hands a template: .Values, numbers as float64
// (values.yaml goes through JSON).
func chartData(v Values) map[string]any {
	vals := map[string]any{}
	rv := reflect.ValueOf(v)
	for _, c := range ChartValues {
		f := rv.FieldByName(c.Field)
		if f.Kind() == reflect.Int {
			vals[c.Key()] = float64(f.Int())
		} else {
			vals[c.Key()] = f.Interface()
		}
	}
	return map[string]any{"Values": vals}
}

// TestChartTemplatesRenderLikeManifests executes each generated template
// with the chart's values and the manifest it comes from with the same
// Values, byte for byte, for every value set (no helm needed; the helm
// build tag's test does it with the real helm).
func TestChartTemplatesRenderLikeManifests(t *testing.T) {
	chart, err := ChartFiles()
	if err != nil {
		t.Fatal(err)
	}
	names, _ := fs.Glob(files, "*.yaml")
	for _, vs := range valueSets(t) {
		for _, n := range names {
			src, _ := fs.ReadFile(files, n)
			var want, got bytes.Buffer
			mt := template.Must(template.New(n).Option("missingkey=error").Parse(string(src)))
			if err := mt.Execute(&want, vs.values); err != nil {
				t.Fatal(err)
			}
			ct, ok := chart["templates/"+n]
			if !ok {
				if !bytes.Equal(chart["crds/"+n], src) {
					t.Fatalf("%s is neither a template nor a verbatim CRD file of the chart", n)
				}
				continue
			}
			tt, err := template.New(n).Option("missingkey=error").Parse(string(ct))
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.Execute(&got, chartData(vs.values)); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Errorf("%s, values %s: chart template renders\n%s\nthe manifest renders\n%s", n, vs.name, got.String(), want.String())
			}
		}
	}
}

func TestChartTemplateRefuses(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"a: {{.Unknown}}\n", "field .Unknown has no chart value"},
		{"a: {{.Tag | printf \"%q\"}}\n", `function "printf" not defined`},
		{"a: {{\"x\"}}\n", "only {{.Field}}"},
		{"{{range .Tag}}x{{end}}\n", "only {{.Field}}"},
		{"{{$x := .Tag}}{{$x}}\n", "variable declaration"},
		{"a: {{.Tag.Sub}}\n", "only {{.Field}}"},
	} {
		_, err := ChartTemplate("t.yaml", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.src, err, tc.want)
		}
	}
	got, err := ChartTemplate("t.yaml", []byte("# {{.Namespace}}\n{{- if .NetworkPolicy}}\nx: {{ .Tag }}-{{.LogLevel}}\n{{- end}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "# {{.Values.weftNamespace}}\n{{- if .Values.networkPolicy}}\nx: {{ .Values.tag }}-{{.Values.logLevel}}\n{{- end}}\n"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestChartValuesCoverValues(t *testing.T) {
	typ := reflect.TypeOf(Values{})
	seen := map[string]bool{}
	for _, c := range ChartValues {
		if _, ok := typ.FieldByName(c.Field); !ok {
			t.Errorf("ChartValues names %s, which Values lacks", c.Field)
		}
		if seen[c.Key()] {
			t.Errorf("chart value %s twice", c.Key())
		}
		seen[c.Key()] = true
	}
	if len(ChartValues) != typ.NumField() {
		t.Errorf("%d chart values for the %d fields of Values", len(ChartValues), typ.NumField())
	}
	if k := (ChartValue{Flag: "injector-replicas"}).Key(); k != "injectorReplicas" {
		t.Errorf("Key = %q", k)
	}
}
