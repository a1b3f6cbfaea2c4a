package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template/parse"
)

// The Helm chart charts/weft is generated from this package's manifests:
// `go run ./hack/genchart` writes ChartFiles() there and TestChartInSync
// fails when the committed chart differs. The manifests stay the one source;
// the chart's templates are the same files with each Values field
// ({{.Tag}}) renamed to the chart value of the same weftctl install flag
// ({{.Values.tag}}), and the CRDs go to crds/ unchanged (docs/install.md).

// ChartValue ties a field of Values to the chart value and the weftctl
// install flag that set it. The value is the flag's name in camelCase.
type ChartValue struct {
	Field string // field of Values
	Flag  string // weftctl install flag
	Help  string // comment above the value in values.yaml
}

// Key is the name of the chart value: the flag in camelCase.
func (c ChartValue) Key() string {
	parts := strings.Split(c.Flag, "-")
	for i := 1; i < len(parts); i++ {
		parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
	}
	return strings.Join(parts, "")
}

// ChartValues lists every field of Values, in the order of values.yaml.
var ChartValues = []ChartValue{
	{"Namespace", "weft-namespace", "Namespace weft is installed in. The chart creates it (labelled weft.dev/inject: disabled),\n# so install the release into another, existing namespace (helm install -n default)."},
	{"Image", "image-prefix", `Image name prefix ("weft/" or "registry:5000/weft/").`},
	{"Tag", "tag", "Image tag of weft's images, a string (a tag of digits only needs --set-string tag=2)."},
	{"PullPolicy", "pull-policy", "Image pull policy: IfNotPresent, Never or Always."},
	{"TrustDomain", "trust-domain", "SPIFFE trust domain; set once, changing it changes every identity."},
	{"Replicas", "replicas", "Control plane replicas."},
	{"InjectorReplica", "injector-replicas", "Injector replicas."},
	{"LogLevel", "log-level", "Log level of weft's components."},
	{"AuditPVC", "audit-pvc", "PersistentVolumeClaim (in the weft namespace) for the egress audit store; empty: an emptyDir.\n# Needs replicas: 1."},
	{"NetworkPolicy", "network-policy", "NetworkPolicies that admit to weft's pods only the ports weft serves\n# (enforced only by a CNI that implements NetworkPolicy)."},
	{"HTTPRouting", "http-routing", "Route the requests of Service ports that declare http, http2 or grpc one by one\n# between sidecars (docs/l7.md); in development, off by default."},
}

// ChartVersion is the chart's own version (SemVer, as Helm requires); the
// images it installs are named by the tag value.
const ChartVersion = "0.1.0"

// chartValue returns the entry of a Values field.
func chartValue(field string) (ChartValue, bool) {
	for _, c := range ChartValues {
		if c.Field == field {
			return c, true
		}
	}
	return ChartValue{}, false
}

// actionRE matches one template action; fieldRE a field of the data
// (".Tag") inside it.
var (
	actionRE = regexp.MustCompile(`\{\{-?[^}]*-?\}\}`)
	fieldRE  = regexp.MustCompile(`([\s({])\.([A-Z][A-Za-z0-9]*)\b`)
)

// ChartTemplate turns a manifest template into the chart's template: each
// {{... .Field ...}} becomes {{... .Values.key ...}}, nothing else changes
// (trim markers, comments and text stay as they are). It refuses a field
// that has no chart value and any action it does not understand, so a new
// field or construct in deploy/*.yaml fails the generator instead of
// producing a chart that renders something else.
func ChartTemplate(name string, src []byte) ([]byte, error) {
	// Every field the template uses, as text/template itself parses it.
	trees, err := parse.Parse(name, string(src), "{{", "}}")
	if err != nil {
		return nil, fmt.Errorf("deploy: chart: %s: %w", name, err)
	}
	want := map[string]int{}
	var walk func(parse.Node) error
	walk = func(n parse.Node) error {
		switch n := n.(type) {
		case nil:
		case *parse.ListNode:
			if n == nil {
				return nil
			}
			for _, c := range n.Nodes {
				if err := walk(c); err != nil {
					return err
				}
			}
		case *parse.TextNode, *parse.CommentNode:
		case *parse.ActionNode:
			return walk(n.Pipe)
		case *parse.IfNode:
			if err := walk(n.Pipe); err != nil {
				return err
			}
			if err := walk(n.List); err != nil {
				return err
			}
			return walk(n.ElseList)
		case *parse.PipeNode:
			if n == nil {
				return nil
			}
			if len(n.Decl) > 0 {
				return fmt.Errorf("variable declaration %s", n)
			}
			for _, c := range n.Cmds {
				for _, a := range c.Args {
					f, ok := a.(*parse.FieldNode)
					if !ok || len(f.Ident) != 1 {
						return fmt.Errorf("%s: only {{.Field}} and {{if .Field}} are translated", a)
					}
					if _, ok := chartValue(f.Ident[0]); !ok {
						return fmt.Errorf("field .%s has no chart value (add it to deploy.ChartValues)", f.Ident[0])
					}
					want[f.Ident[0]]++
				}
			}
		default:
			return fmt.Errorf("%s: only {{.Field}} and {{if .Field}} are translated", n)
		}
		return nil
	}
	for _, t := range trees {
		if err := walk(t.Root); err != nil {
			return nil, fmt.Errorf("deploy: chart: %s: %w", name, err)
		}
	}
	got := map[string]int{}
	out := actionRE.ReplaceAllFunc(src, func(a []byte) []byte {
		return fieldRE.ReplaceAllFunc(a, func(m []byte) []byte {
			sub := fieldRE.FindSubmatch(m)
			c, _ := chartValue(string(sub[2]))
			got[string(sub[2])]++
			return []byte(string(sub[1]) + ".Values." + c.Key())
		})
	})
	if !reflect.DeepEqual(want, got) {
		return nil, fmt.Errorf("deploy: chart: %s: the parser sees fields %v, the rewrite renamed %v", name, want, got)
	}
	return out, nil
}

// ChartFiles returns every file of charts/weft by its path in the chart.
func ChartFiles() (map[string][]byte, error) {
	out := map[string][]byte{
		"Chart.yaml":         chartYAML(),
		"values.yaml":        valuesYAML(),
		"values.schema.json": nil,
	}
	schema, err := valuesSchema()
	if err != nil {
		return nil, err
	}
	out["values.schema.json"] = schema
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		src, err := fs.ReadFile(files, n)
		if err != nil {
			return nil, err
		}
		trees, err := parse.Parse(n, string(src), "{{", "}}")
		if err != nil {
			return nil, fmt.Errorf("deploy: chart: %s: %w", n, err)
		}
		if hasCRD(src) {
			// Helm installs crds/ before the templates (the MeshConfig
			// needs its CRD) and renders nothing there: the file must
			// be plain YAML.
			if len(trees[n].Root.Nodes) != 1 || trees[n].Root.Nodes[0].Type() != parse.NodeText {
				return nil, fmt.Errorf("deploy: chart: %s holds CRDs and template actions; Helm's crds/ is not templated", n)
			}
			out["crds/"+n] = src
			continue
		}
		t, err := ChartTemplate(n, src)
		if err != nil {
			return nil, err
		}
		// A template comment, so the file says where it comes from and
		// renders exactly what the manifest renders.
		head := "{{/* Generated by hack/genchart from deploy/" + n + "; do not edit. */ -}}\n"
		out["templates/"+n] = append([]byte(head), t...)
	}
	return out, nil
}

var crdRE = regexp.MustCompile(`(?m)^kind:\s*CustomResourceDefinition\s*$`)

func hasCRD(src []byte) bool { return crdRE.Match(src) }

func chartYAML() []byte {
	return []byte(`# Generated by hack/genchart from deploy/; do not edit.
apiVersion: v2
name: weft
description: weft, an mTLS service mesh for Kubernetes; renders exactly what weftctl install applies
type: application
version: ` + ChartVersion + `
home: https://github.com/weftmesh/weft
`)
}

// valuesYAML writes Defaults() under the chart's names.
func valuesYAML() []byte {
	var b bytes.Buffer
	b.WriteString("# Generated by hack/genchart from deploy.Defaults(); do not edit.\n")
	b.WriteString("# One value per weftctl install flag, with the flag's default; values.schema.json\n")
	b.WriteString("# refuses what weftctl install refuses.\n")
	d := reflect.ValueOf(Defaults())
	for _, c := range ChartValues {
		fmt.Fprintf(&b, "\n# --%s: %s\n", c.Flag, c.Help)
		v := d.FieldByName(c.Field)
		switch v.Kind() {
		case reflect.String:
			fmt.Fprintf(&b, "%s: %s\n", c.Key(), strconv.Quote(v.String()))
		default:
			fmt.Fprintf(&b, "%s: %v\n", c.Key(), v.Interface())
		}
	}
	return b.Bytes()
}

// valuesSchema is the JSON schema Helm checks the values against: the
// checks of Values.Validate, from the same regular expressions.
func valuesSchema() ([]byte, error) {
	props := map[string]any{}
	t := reflect.TypeOf(Values{})
	for _, c := range ChartValues {
		f, ok := t.FieldByName(c.Field)
		if !ok {
			return nil, fmt.Errorf("deploy: chart: Values has no field %s", c.Field)
		}
		p := map[string]any{"description": "weftctl install --" + c.Flag}
		switch f.Type.Kind() {
		case reflect.String:
			p["type"] = "string"
		case reflect.Int:
			p["type"] = "integer"
		case reflect.Bool:
			p["type"] = "boolean"
		default:
			return nil, fmt.Errorf("deploy: chart: field %s: type %s", c.Field, f.Type)
		}
		switch c.Field {
		case "TrustDomain":
			p["pattern"] = trustDomainRE.String()
		case "Tag":
			p["pattern"] = tagRE.String()
		case "Replicas", "InjectorReplica":
			p["minimum"] = 1
		case "AuditPVC":
			p["pattern"] = "^$|" + dnsLabelRE.String()
		case "PullPolicy":
			p["enum"] = []string{"IfNotPresent", "Never", "Always"}
		}
		props[c.Key()] = p
	}
	if len(props) != t.NumField() {
		return nil, fmt.Errorf("deploy: chart: %d chart values for %d fields of Values", len(props), t.NumField())
	}
	pvc, _ := chartValue("AuditPVC")
	rep, _ := chartValue("Replicas")
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	schema := map[string]any{
		"$schema":              "https://json-schema.org/draft-07/schema#",
		"title":                "weft chart values (generated by hack/genchart; do not edit)",
		"type":                 "object",
		"properties":           props,
		"required":             keys,
		"additionalProperties": false,
		// An audit PVC is one volume: weftctl install refuses it with
		// more than one control plane replica.
		"if": map[string]any{
			"properties": map[string]any{pvc.Key(): map[string]any{"minLength": 1}},
			"required":   []string{pvc.Key()},
		},
		"then": map[string]any{
			"properties": map[string]any{rep.Key(): map[string]any{"maximum": 1}},
		},
	}
	b, err := json.MarshalIndent(schema, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
