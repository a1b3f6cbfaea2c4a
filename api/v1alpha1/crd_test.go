package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// crdSchema is one CRD's v1alpha1 schema, ready to validate objects the way
// the API server does: OpenAPI (types, enums, patterns, bounds), CEL rules
// (including transition rules on update) and defaulting.
type crdSchema struct {
	structural *structuralschema.Structural
	openAPI    validation.SchemaValidator
	cel        *cel.Validator
}

func loadCRD(t *testing.T, file string) *crdSchema {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("crds", file))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(b, &crd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != "v1alpha1" {
		t.Fatalf("%s: want exactly version v1alpha1, have %+v", file, crd.Spec.Versions)
	}
	var internal apiextensionsinternal.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(crd.Spec.Versions[0].Schema.OpenAPIV3Schema, &internal, nil); err != nil {
		t.Fatal(err)
	}
	s, err := structuralschema.NewStructural(&internal)
	if err != nil {
		t.Fatalf("%s: not a structural schema: %v", file, err)
	}
	if errs := structuralschema.ValidateStructural(nil, s); len(errs) > 0 {
		t.Fatalf("%s: not a structural schema: %v", file, errs)
	}
	v, _, err := validation.NewSchemaValidator(&internal)
	if err != nil {
		t.Fatal(err)
	}
	return &crdSchema{structural: s, openAPI: v, cel: cel.NewValidator(s, true, celconfig.PerCallLimit)}
}

// validate defaults obj like the API server and returns every error; old is
// nil on create.
func (c *crdSchema) validate(obj, old map[string]any) field.ErrorList {
	structuraldefaulting.Default(obj, c.structural)
	var errs field.ErrorList
	if old == nil {
		errs = validation.ValidateCustomResource(nil, obj, c.openAPI)
	} else {
		errs = validation.ValidateCustomResourceUpdate(nil, obj, old, c.openAPI)
	}
	var oldObj any
	if old != nil {
		oldObj = old
	}
	celErrs, _ := c.cel.Validate(context.Background(), nil, c.structural, obj, oldObj, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

func object(t *testing.T, y string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(y), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

type schemaCase struct {
	name    string
	obj     string
	old     string // set for an update
	wantErr string // "" = valid; else a substring of the errors
}

func runSchemaCases(t *testing.T, file string, cases []schemaCase) {
	c := loadCRD(t, file)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var old map[string]any
			if tc.old != "" {
				old = object(t, tc.old)
				structuraldefaulting.Default(old, c.structural)
			}
			errs := c.validate(object(t, tc.obj), old)
			switch {
			case tc.wantErr == "" && len(errs) > 0:
				t.Fatalf("want valid, got %v", errs.ToAggregate())
			case tc.wantErr != "" && len(errs) == 0:
				t.Fatalf("want an error containing %q, got none", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(errs.ToAggregate().Error(), tc.wantErr):
				t.Fatalf("want an error containing %q, got %v", tc.wantErr, errs.ToAggregate())
			}
		})
	}
}

const egressHead = "apiVersion: weft.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: e, namespace: demo}\n"

func TestEgressPolicySchema(t *testing.T) {
	runSchemaCases(t, "weft.dev_egresspolicies.yaml", []schemaCase{
		{name: "valid", obj: egressHead + `spec:
  selector: {matchLabels: {app: web}}
  mode: Audit
  rules:
  - hosts: [api.example.com, "*.example.org"]
    ports: [{number: 443, protocol: TLS}, {number: 80, protocol: HTTP}]
  - cidrs: [203.0.113.0/24, "2001:db8::/32"]
    ports: [{number: 5432, protocol: TCP}]
    action: Deny`},
		{name: "no hosts or cidrs", obj: egressHead + "spec: {rules: [{ports: [{number: 443, protocol: TLS}]}]}", wantErr: "a rule needs at least one of hosts or cidrs"},
		{name: "empty hosts", obj: egressHead + "spec: {rules: [{hosts: []}]}", wantErr: "a rule needs at least one of hosts or cidrs"},
		{name: "no rules: deny all", obj: egressHead + "spec: {rules: []}"},
		{name: "rules absent: deny all", obj: egressHead + "spec: {selector: {matchLabels: {app: batch}}}"},
		{name: "no rules, default Allow", obj: egressHead + "spec: {defaultAction: Allow, rules: []}", wantErr: "a policy with defaultAction Allow needs at least one rule"},
		{name: "rules absent, default Allow", obj: egressHead + "spec: {defaultAction: Allow}", wantErr: "a policy with defaultAction Allow needs at least one rule"},
		{name: "block-list", obj: egressHead + "spec: {defaultAction: Allow, rules: [{cidrs: [169.254.169.254/32], action: Deny}]}"},
		{name: "bad default action", obj: egressHead + "spec: {defaultAction: deny, rules: [{hosts: [a.com]}]}", wantErr: `Unsupported value: "deny"`},
		{name: "bad cidr", obj: egressHead + "spec: {rules: [{cidrs: [198.18.200.0/33]}]}", wantErr: "cidrs must be IPv4 or IPv6 CIDRs"},
		{name: "address without prefix", obj: egressHead + "spec: {rules: [{cidrs: [198.18.200.1]}]}", wantErr: "cidrs must be IPv4 or IPv6 CIDRs"},
		{name: "uppercase host", obj: egressHead + "spec: {rules: [{hosts: [API.example.com]}]}", wantErr: "spec.rules[0].hosts[0]"},
		{name: "wildcard inside", obj: egressHead + "spec: {rules: [{hosts: [api.*.com]}]}", wantErr: "spec.rules[0].hosts[0]"},
		{name: "bare wildcard", obj: egressHead + "spec: {rules: [{hosts: ['*']}]}", wantErr: "spec.rules[0].hosts[0]"},
		{name: "port 0", obj: egressHead + "spec: {rules: [{hosts: [a.com], ports: [{number: 0, protocol: TLS}]}]}", wantErr: "spec.rules[0].ports[0].number"},
		{name: "port 65536", obj: egressHead + "spec: {rules: [{hosts: [a.com], ports: [{number: 65536, protocol: TLS}]}]}", wantErr: "spec.rules[0].ports[0].number"},
		{name: "protocol UDP", obj: egressHead + "spec: {rules: [{hosts: [a.com], ports: [{number: 53, protocol: UDP}]}]}", wantErr: `Unsupported value: "UDP"`},
		{name: "protocol missing", obj: egressHead + "spec: {rules: [{hosts: [a.com], ports: [{number: 443}]}]}", wantErr: "protocol: Required"},
		{name: "hosts on TCP", obj: egressHead + "spec: {rules: [{hosts: [a.com], ports: [{number: 5432, protocol: TCP}]}]}", wantErr: "hosts can only be matched on HTTP or TLS ports"},
		{name: "bad mode", obj: egressHead + "spec: {mode: enforce, rules: [{hosts: [a.com]}]}", wantErr: `Unsupported value: "enforce"`},
		{name: "bad action", obj: egressHead + "spec: {rules: [{hosts: [a.com], action: DENY}]}", wantErr: `Unsupported value: "DENY"`},
		{name: "bad service account", obj: egressHead + "spec: {serviceAccounts: [Default], rules: [{hosts: [a.com]}]}", wantErr: "spec.serviceAccounts[0]"},
	})
}

func TestEgressPolicyDefaults(t *testing.T) {
	c := loadCRD(t, "weft.dev_egresspolicies.yaml")
	obj := object(t, egressHead+"spec: {rules: [{hosts: [a.com]}]}")
	if errs := c.validate(obj, nil); len(errs) > 0 {
		t.Fatal(errs.ToAggregate())
	}
	spec := obj["spec"].(map[string]any)
	rule := spec["rules"].([]any)[0].(map[string]any)
	if spec["mode"] != "Enforce" || rule["action"] != "Allow" || spec["defaultAction"] != "Deny" {
		t.Fatalf("defaults: mode %v action %v defaultAction %v, want Enforce Allow Deny", spec["mode"], rule["action"], spec["defaultAction"])
	}
}

const meshHead = "apiVersion: weft.dev/v1alpha1\nkind: MeshConfig\n"

func TestMeshConfigSchema(t *testing.T) {
	runSchemaCases(t, "weft.dev_meshconfigs.yaml", []schemaCase{
		{name: "valid", obj: meshHead + "metadata: {name: default}\nspec: {trustDomain: prod.example, mtls: {mode: PERMISSIVE}, outboundTrafficPolicy: {mode: REGISTRY_ONLY}}"},
		{name: "no spec", obj: meshHead + "metadata: {name: default}"},
		{name: "not default", obj: meshHead + "metadata: {name: mesh}\nspec: {}", wantErr: "only one MeshConfig, named default, is allowed"},
		{name: "bad mode", obj: meshHead + "metadata: {name: default}\nspec: {mtls: {mode: strict}}", wantErr: `Unsupported value: "strict"`},
		{name: "bad outbound", obj: meshHead + "metadata: {name: default}\nspec: {outboundTrafficPolicy: {mode: DENY}}", wantErr: `Unsupported value: "DENY"`},
		{name: "bad trust domain", obj: meshHead + "metadata: {name: default}\nspec: {trustDomain: Prod Example}", wantErr: "spec.trustDomain"},
		{name: "trust domain changed", obj: meshHead + "metadata: {name: default}\nspec: {trustDomain: b.example}",
			old: meshHead + "metadata: {name: default}\nspec: {trustDomain: a.example}", wantErr: "trustDomain is immutable"},
		{name: "trust domain removed", obj: meshHead + "metadata: {name: default}\nspec: {mtls: {mode: STRICT}}",
			old: meshHead + "metadata: {name: default}\nspec: {trustDomain: a.example}", wantErr: "trustDomain cannot be removed once set"},
		{name: "mode changed", obj: meshHead + "metadata: {name: default}\nspec: {trustDomain: a.example, mtls: {mode: PERMISSIVE}}",
			old: meshHead + "metadata: {name: default}\nspec: {trustDomain: a.example}"},
	})
}

func TestMeshConfigDefaults(t *testing.T) {
	c := loadCRD(t, "weft.dev_meshconfigs.yaml")
	obj := object(t, meshHead+"metadata: {name: default}")
	if errs := c.validate(obj, nil); len(errs) > 0 {
		t.Fatal(errs.ToAggregate())
	}
	spec, _ := obj["spec"].(map[string]any)
	mtls, _ := spec["mtls"].(map[string]any)
	out, _ := spec["outboundTrafficPolicy"].(map[string]any)
	if mtls["mode"] != "STRICT" || out["mode"] != "ALLOW_ANY" {
		t.Fatalf("defaults: %v, want mtls STRICT and outbound ALLOW_ANY", spec)
	}
}

func TestMTLSPolicySchema(t *testing.T) {
	const head = "apiVersion: weft.dev/v1alpha1\nkind: MTLSPolicy\nmetadata: {name: m, namespace: demo}\n"
	runSchemaCases(t, "weft.dev_mtlspolicies.yaml", []schemaCase{
		{name: "valid", obj: head + "spec: {mode: STRICT, selector: {matchLabels: {app: db}}, portLevelMtls: {'8080': PERMISSIVE}}"},
		{name: "no mode", obj: head + "spec: {}", wantErr: "spec.mode: Required"},
		{name: "port not a number", obj: head + "spec: {mode: STRICT, portLevelMtls: {http: PERMISSIVE}}", wantErr: "portLevelMtls keys must be port numbers"},
		{name: "port 0", obj: head + "spec: {mode: STRICT, portLevelMtls: {'0': PERMISSIVE}}", wantErr: "portLevelMtls keys must be port numbers"},
		{name: "port mode", obj: head + "spec: {mode: STRICT, portLevelMtls: {'80': DISABLE}}", wantErr: `Unsupported value: "DISABLE"`},
	})
}

func TestAuthorizationPolicySchema(t *testing.T) {
	const head = "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: demo}\n"
	runSchemaCases(t, "weft.dev_authorizationpolicies.yaml", []schemaCase{
		{name: "valid", obj: head + `spec:
  action: DENY
  rules:
  - from: [{principals: ["spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/ops/*"]}, {namespaces: [ops], serviceAccounts: [ops/backup]}]
    to: [{ports: [8080, 9090]}]`},
		{name: "allow nothing", obj: head + "spec: {}"},
		{name: "bad action", obj: head + "spec: {action: AUDIT}", wantErr: `Unsupported value: "AUDIT"`},
		{name: "principal not spiffe", obj: head + "spec: {rules: [{from: [{principals: [web]}]}]}", wantErr: "spec.rules[0].from[0].principals[0]"},
		{name: "wildcard inside", obj: head + "spec: {rules: [{from: [{principals: ['spiffe://td/*/sa/x']}]}]}", wantErr: "spec.rules[0].from[0].principals[0]"},
		{name: "service account without namespace", obj: head + "spec: {rules: [{from: [{serviceAccounts: [web]}]}]}", wantErr: "spec.rules[0].from[0].serviceAccounts[0]"},
		{name: "empty from entry", obj: head + "spec: {rules: [{from: [{}]}]}", wantErr: "a from entry needs principals, namespaces or serviceAccounts"},
		{name: "port out of range", obj: head + "spec: {rules: [{to: [{ports: [0]}]}]}", wantErr: "spec.rules[0].to[0].ports[0]"},
		{name: "http fields", obj: head + `spec:
  rules:
  - to: [{ports: [8080], methods: [GET, HEAD], paths: [/api/v1/users, "/api/*", "*"]}, {methods: [POST]}, {paths: [/healthz]}]`},
		{name: "empty to entry", obj: head + "spec: {rules: [{to: [{}]}]}", wantErr: "a to entry needs ports, methods or paths"},
		{name: "empty ports", obj: head + "spec: {rules: [{to: [{ports: []}]}]}", wantErr: "spec.rules[0].to[0].ports"},
		{name: "lower-case method", obj: head + "spec: {rules: [{to: [{methods: [get]}]}]}", wantErr: "spec.rules[0].to[0].methods[0]"},
		{name: "too many methods", obj: head + "spec: {rules: [{to: [{methods: [A, B, C, D, E, F, G, H, I, J, K, L, M, O, P, Q, R]}]}]}", wantErr: "spec.rules[0].to[0].methods"},
		{name: "relative path", obj: head + "spec: {rules: [{to: [{paths: [api/v1]}]}]}", wantErr: "spec.rules[0].to[0].paths[0]"},
		{name: "wildcard inside path", obj: head + "spec: {rules: [{to: [{paths: ['/api/*/users']}]}]}", wantErr: "spec.rules[0].to[0].paths[0]"},
		{name: "two trailing wildcards", obj: head + "spec: {rules: [{to: [{paths: ['/api/**']}]}]}", wantErr: "spec.rules[0].to[0].paths[0]"},
		{name: "path with a query", obj: head + "spec: {rules: [{to: [{paths: ['/api?x=1']}]}]}", wantErr: "spec.rules[0].to[0].paths[0]"},
		{name: "path too long", obj: head + "spec: {rules: [{to: [{paths: ['/" + strings.Repeat("a", 1024) + "']}]}]}", wantErr: "spec.rules[0].to[0].paths[0]"},
	})
}
