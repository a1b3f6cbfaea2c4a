// Package deploy holds weft's install manifests as templates and renders
// them; weftctl install applies the result. Each part of weft adds its own
// file here (files are applied in name order).
package deploy

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"text/template"

	"github.com/weftmesh/weft/api/names"
)

//go:embed *.yaml
var files embed.FS

// Values parameterise the manifests.
type Values struct {
	Namespace       string // weft-system
	Image           string // image prefix, e.g. "weft/" or "registry.example:5000/weft/"
	Tag             string // image tag
	PullPolicy      string // IfNotPresent, Never or Always
	TrustDomain     string // cluster.local
	Replicas        int    // control plane replicas
	InjectorReplica int    // injector replicas
	LogLevel        string // info
	// AuditPVC names a PersistentVolumeClaim in the install namespace for
	// the egress audit store; empty keeps it in an emptyDir (lost with the pod).
	AuditPVC string
	// NetworkPolicy adds NetworkPolicies that admit to weft's pods only the
	// ports weft serves (40-networkpolicy.yaml).
	NetworkPolicy bool
	// HTTPRouting runs the control plane with --http-routing: the requests
	// of Service ports that declare http, http2 or grpc are routed one by
	// one between sidecars (docs/l7.md). In development: off by default.
	HTTPRouting bool
}

// Defaults are the values of a plain install.
func Defaults() Values {
	return Values{Namespace: names.Namespace, Image: "weft/", Tag: "dev", PullPolicy: "IfNotPresent",
		TrustDomain: names.DefaultTrustDomain, Replicas: 1, InjectorReplica: 1, LogLevel: "info", NetworkPolicy: true}
}

var (
	trustDomainRE = regexp.MustCompile(`^[a-z0-9._-]+$`)
	tagRE         = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	dnsLabelRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)
)

// Validate reports the first value a manifest could not hold.
func (v Values) Validate() error {
	switch {
	case !trustDomainRE.MatchString(v.TrustDomain):
		return fmt.Errorf("deploy: trust domain %q: only lowercase letters, digits, '.', '-' and '_' are allowed", v.TrustDomain)
	case !tagRE.MatchString(v.Tag):
		return fmt.Errorf("deploy: image tag %q is not a valid tag", v.Tag)
	case v.Replicas < 1 || v.InjectorReplica < 1:
		return fmt.Errorf("deploy: replicas must be at least 1 (control plane %d, injector %d)", v.Replicas, v.InjectorReplica)
	case v.AuditPVC != "" && !dnsLabelRE.MatchString(v.AuditPVC):
		return fmt.Errorf("deploy: audit PVC %q is not a valid object name", v.AuditPVC)
	case v.AuditPVC != "" && v.Replicas > 1:
		return fmt.Errorf("deploy: an audit PVC is one volume; it needs --replicas 1 (have %d)", v.Replicas)
	case v.PullPolicy != "IfNotPresent" && v.PullPolicy != "Never" && v.PullPolicy != "Always":
		return fmt.Errorf("deploy: image pull policy %q is not IfNotPresent, Never or Always", v.PullPolicy)
	}
	return nil
}

// Render returns every manifest as one multi-document YAML stream.
func Render(v Values) ([]byte, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out bytes.Buffer
	for _, n := range names {
		t, err := template.New(n).Option("missingkey=error").ParseFS(files, n)
		if err != nil {
			return nil, fmt.Errorf("deploy: %s: %w", n, err)
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n", n)
		if err := t.Execute(&out, v); err != nil {
			return nil, fmt.Errorf("deploy: %s: %w", n, err)
		}
	}
	return out.Bytes(), nil
}
