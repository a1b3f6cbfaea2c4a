package weftctl

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/spf13/pflag"

	"github.com/weftmesh/weft/deploy"
)

// installOnlyFlags are weftctl install's flags that do not reach the
// manifests, and so have no value in charts/weft (docs/install.md says
// what Helm users do instead).
var installOnlyFlags = map[string]bool{"ca-dir": true, "render": true, "dry-run": true, "wait": true, "timeout": true}

// TestChartValuesMatchInstallFlags holds charts/weft's values (generated
// from deploy.ChartValues and deploy.Defaults) to weftctl install's flags:
// every flag that changes the manifests has a chart value of its name, with
// its default, and setting the flag sets that field of deploy.Values.
func TestChartValuesMatchInstallFlags(t *testing.T) {
	cmd := newInstall(&globals{})
	byFlag := map[string]deploy.ChartValue{}
	for _, c := range deploy.ChartValues {
		byFlag[c.Flag] = c
	}
	seen := 0
	var names []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	for _, name := range names {
		c, ok := byFlag[name]
		if !ok {
			if !installOnlyFlags[name] {
				t.Errorf("weftctl install --%s has no chart value: add it to deploy.ChartValues (or to installOnlyFlags if it never changes the manifests)", name)
			}
			continue
		}
		seen++
		f := cmd.Flags().Lookup(name)
		def := reflect.ValueOf(deploy.Defaults()).FieldByName(c.Field).Interface()
		if f.DefValue != fmt.Sprint(def) {
			t.Errorf("--%s defaults to %q, the chart's %s to %v", name, f.DefValue, c.Key(), def)
		}
		x := example(t, c.Field)
		out, err := run("install", "--render", "--"+name+"="+fmt.Sprint(x))
		if err != nil {
			t.Fatalf("--%s=%v: %v", name, x, err)
		}
		v := deploy.Defaults()
		reflect.ValueOf(&v).Elem().FieldByName(c.Field).Set(reflect.ValueOf(x))
		want, err := deploy.Render(v)
		if err != nil {
			t.Fatal(err)
		}
		if out != string(want) {
			t.Errorf("install --render --%s=%v does not render Values.%s = %v", name, x, c.Field, x)
		}
	}
	if seen != len(deploy.ChartValues) {
		t.Errorf("%d of the %d chart values are weftctl install flags", seen, len(deploy.ChartValues))
	}
}

func example(t *testing.T, field string) any {
	switch reflect.ValueOf(deploy.Defaults()).FieldByName(field).Kind() {
	case reflect.Int:
		return 3
	case reflect.Bool:
		return !reflect.ValueOf(deploy.Defaults()).FieldByName(field).Bool()
	}
	x, ok := map[string]string{"Namespace": "weft-other", "Image": "registry.example:5000/weft/", "Tag": "v1.2.3",
		"PullPolicy": "Never", "TrustDomain": "example.org", "LogLevel": "debug", "AuditPVC": "weft-audit"}[field]
	if !ok {
		t.Fatalf("no example for Values.%s", field)
	}
	return x
}
