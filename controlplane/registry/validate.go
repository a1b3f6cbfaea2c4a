package registry

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
)

// invalid is why an object is rejected: the Accepted condition's reason and
// message.
type invalid struct{ reason, message string }

func (e *invalid) Error() string { return e.reason + ": " + e.message }

func rejectf(format string, args ...any) *invalid {
	return &invalid{v1alpha1.ReasonInvalid, fmt.Sprintf(format, args...)}
}

// decode converts an informer's object into its typed form; the API server's
// schema should make this infallible, but objects written before a schema
// change, or by a client bypassing it, may not be.
func decode(u *unstructured.Unstructured, into any) *invalid {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		return rejectf("cannot decode: %v", err)
	}
	return nil
}

// meshConfig validates the MeshConfig and returns the configuration in force.
func meshConfig(mc *v1alpha1.MeshConfig, td spiffeid.TrustDomain) (mesh.MeshConfig, *invalid) {
	if mc.Name != v1alpha1.DefaultMeshConfigName {
		return mesh.MeshConfig{}, &invalid{v1alpha1.ReasonNotDefault,
			fmt.Sprintf("only the MeshConfig named %q is honoured; this one is ignored", v1alpha1.DefaultMeshConfigName)}
	}
	if mc.Spec.TrustDomain != "" && mc.Spec.TrustDomain != td.Name() {
		return mesh.MeshConfig{}, &invalid{v1alpha1.ReasonTrustDomainMismatch,
			fmt.Sprintf("spec.trustDomain %q differs from the control plane's trust domain %q, which is set at install and cannot change", mc.Spec.TrustDomain, td.Name())}
	}
	out := mesh.MeshConfig{TrustDomain: td, FromObject: true,
		MTLSMode:     cmp.Or(mc.Spec.MTLS.Mode, v1alpha1.MTLSStrict),
		OutboundMode: cmp.Or(mc.Spec.OutboundTrafficPolicy.Mode, v1alpha1.OutboundAllowAny)}
	if err := checkMode("spec.mtls.mode", out.MTLSMode); err != nil {
		return mesh.MeshConfig{}, err
	}
	if err := oneOf("spec.outboundTrafficPolicy.mode", out.OutboundMode, v1alpha1.OutboundAllowAny, v1alpha1.OutboundRegistryOnly); err != nil {
		return mesh.MeshConfig{}, err
	}
	return out, nil
}

func defaultMeshConfig(td spiffeid.TrustDomain) mesh.MeshConfig {
	return mesh.MeshConfig{TrustDomain: td, MTLSMode: v1alpha1.MTLSStrict, OutboundMode: v1alpha1.OutboundAllowAny}
}

func checkMode(field string, m v1alpha1.MTLSMode) *invalid {
	return oneOf(field, m, v1alpha1.MTLSStrict, v1alpha1.MTLSPermissive)
}

// oneOf rejects v unless it is one of allowed: `<field> "<v>" is not A, B
// or C`. An empty v is not allowed either: a field with a default is given
// it before.
func oneOf[T ~string](field string, v T, allowed ...T) *invalid {
	if slices.Contains(allowed, v) {
		return nil
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	last := len(names) - 1
	return rejectf("%s %q is not %s or %s", field, v, strings.Join(names[:last], ", "), names[last])
}

// selector compiles an optional label selector; nil stays nil (everything in
// the namespace).
func selector(field string, ls *metav1.LabelSelector) (labels.Selector, *invalid) {
	if ls == nil {
		return nil, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, rejectf("%s: %v", field, err)
	}
	return sel, nil
}

func port(field string, n int64) (uint16, *invalid) {
	if n < 1 || n > 65535 {
		return 0, rejectf("%s: port %d is not in 1-65535", field, n)
	}
	return uint16(n), nil
}

func mtlsPolicy(p *v1alpha1.MTLSPolicy) (*mesh.MTLSPolicy, *invalid) {
	sel, err := selector("spec.selector", p.Spec.Selector)
	if err != nil {
		return nil, err
	}
	if err := checkMode("spec.mode", p.Spec.Mode); err != nil {
		return nil, err
	}
	out := &mesh.MTLSPolicy{Namespace: p.Namespace, Name: p.Name, Created: p.CreationTimestamp.Time.UTC(), Selector: sel, Mode: p.Spec.Mode}
	for k, mode := range p.Spec.PortLevelMTLS {
		field := fmt.Sprintf("spec.portLevelMtls[%s]", k)
		n, perr := strconv.ParseInt(k, 10, 32)
		if perr != nil {
			return nil, rejectf("%s: %q is not a port number", field, k)
		}
		pn, err := port(field, n)
		if err != nil {
			return nil, err
		}
		if err := checkMode(field, mode); err != nil {
			return nil, err
		}
		if out.PortModes == nil {
			out.PortModes = map[uint16]v1alpha1.MTLSMode{}
		}
		out.PortModes[pn] = mode
	}
	return out, nil
}

func authorizationPolicy(p *v1alpha1.AuthorizationPolicy, td spiffeid.TrustDomain) (*mesh.AuthorizationPolicy, *invalid) {
	sel, err := selector("spec.selector", p.Spec.Selector)
	if err != nil {
		return nil, err
	}
	out := &mesh.AuthorizationPolicy{Namespace: p.Namespace, Name: p.Name, Selector: sel, Action: cmp.Or(p.Spec.Action, v1alpha1.ActionAllow)}
	if err := oneOf("spec.action", out.Action, v1alpha1.ActionAllow, v1alpha1.ActionDeny); err != nil {
		return nil, err
	}
	for i, r := range p.Spec.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		if j := slices.IndexFunc(p.Spec.Rules[:i], func(o v1alpha1.AuthorizationRule) bool { return equalRule(o, r) }); j >= 0 {
			return nil, rejectf("%s duplicates spec.rules[%d]", field, j)
		}
		rule := mesh.AuthorizationRule{}
		for j, f := range r.From {
			src, err := source(fmt.Sprintf("%s.from[%d]", field, j), f, td)
			if err != nil {
				return nil, err
			}
			rule.From = append(rule.From, src)
		}
		for j, to := range r.To {
			dst, err := destination(fmt.Sprintf("%s.to[%d]", field, j), to)
			if err != nil {
				return nil, err
			}
			rule.To = append(rule.To, dst)
		}
		out.Rules = append(out.Rules, rule)
	}
	return out, nil
}

// Limits of a to entry's HTTP fields (the CRD's; checked again for objects
// that bypassed the schema).
const (
	maxMethods    = 16
	maxMethodLen  = 32
	maxPaths      = 64
	maxPathLength = 1024
)

// destination validates a to entry: ports, upper-case method tokens, and
// paths that are "*", or absolute, exact or with one trailing '*'.
func destination(field string, to v1alpha1.AuthorizationDestination) (mesh.Destination, *invalid) {
	var d mesh.Destination
	if len(to.Ports)+len(to.Methods)+len(to.Paths) == 0 {
		return d, rejectf("%s: needs ports, methods or paths", field)
	}
	for k, n := range to.Ports {
		pn, err := port(fmt.Sprintf("%s.ports[%d]", field, k), int64(n))
		if err != nil {
			return d, err
		}
		d.Ports = append(d.Ports, pn)
	}
	slices.Sort(d.Ports)
	d.Ports = slices.Compact(d.Ports)
	if len(to.Methods) > maxMethods {
		return d, rejectf("%s.methods: %d methods, at most %d", field, len(to.Methods), maxMethods)
	}
	for k, m := range to.Methods {
		if err := method(fmt.Sprintf("%s.methods[%d]", field, k), m); err != nil {
			return d, err
		}
		if !slices.Contains(d.Methods, m) {
			d.Methods = append(d.Methods, m)
		}
	}
	if len(to.Paths) > maxPaths {
		return d, rejectf("%s.paths: %d paths, at most %d", field, len(to.Paths), maxPaths)
	}
	for k, p := range to.Paths {
		pm, err := pathMatch(fmt.Sprintf("%s.paths[%d]", field, k), p)
		if err != nil {
			return d, err
		}
		if !slices.Contains(d.Paths, pm) {
			d.Paths = append(d.Paths, pm)
		}
	}
	return d, nil
}

// method checks an HTTP method: an upper-case token as sent (methods are
// case-sensitive: "get" is not GET).
func method(field, m string) *invalid {
	if m == "" || len(m) > maxMethodLen {
		return rejectf("%s %q: a method is 1 to %d characters", field, m, maxMethodLen)
	}
	for _, c := range m {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return rejectf("%s %q: a method is upper case (A-Z, 0-9, '-', '_'), as sent: GET, not get", field, m)
		}
	}
	return nil
}

// pathMatch parses "*" (any path), an exact path, or a prefix ending in
// '*'; a path is absolute and holds no query or fragment (it is compared
// with the request's path without its query).
func pathMatch(field, p string) (mesh.PathMatch, *invalid) {
	if p == "*" {
		return mesh.PathMatch{Prefix: true}, nil
	}
	if len(p) > maxPathLength {
		return mesh.PathMatch{}, rejectf("%s: %d bytes, at most %d", field, len(p), maxPathLength)
	}
	if !strings.HasPrefix(p, "/") {
		return mesh.PathMatch{}, rejectf("%s %q: a path is absolute (starts with '/'), or is \"*\"", field, p)
	}
	prefix, wildcard := strings.CutSuffix(p, "*")
	if strings.Contains(prefix, "*") {
		return mesh.PathMatch{}, rejectf("%s %q: '*' is allowed only once, at the end", field, p)
	}
	if strings.ContainsAny(prefix, "?#") {
		return mesh.PathMatch{}, rejectf("%s %q: a path holds no query or fragment ('?', '#'): requests are matched on their path without the query", field, p)
	}
	return mesh.PathMatch{Value: prefix, Prefix: wildcard}, nil
}

func source(field string, f v1alpha1.AuthorizationSource, td spiffeid.TrustDomain) (mesh.Source, *invalid) {
	var src mesh.Source
	if len(f.Principals)+len(f.Namespaces)+len(f.ServiceAccounts) == 0 {
		return src, rejectf("%s: needs principals, namespaces or serviceAccounts", field)
	}
	for i, p := range f.Principals {
		pr, err := principal(fmt.Sprintf("%s.principals[%d]", field, i), p, td)
		if err != nil {
			return src, err
		}
		src.Principals = append(src.Principals, pr)
	}
	for i, ns := range f.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return src, rejectf("%s.namespaces[%d] %q: %s", field, i, ns, strings.Join(errs, "; "))
		}
		src.Namespaces = append(src.Namespaces, ns)
	}
	for i, s := range f.ServiceAccounts {
		ns, name, ok := strings.Cut(s, "/")
		if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
			return src, rejectf("%s.serviceAccounts[%d] %q is not <namespace>/<service-account>", field, i, s)
		}
		src.ServiceAccounts = append(src.ServiceAccounts, mesh.Key{Namespace: ns, Name: name})
	}
	return src, nil
}

// principal parses "*", an exact SPIFFE ID, or a SPIFFE ID prefix ending in
// "*"; all in the mesh's trust domain, since no other can authenticate.
func principal(field, p string, td spiffeid.TrustDomain) (mesh.Principal, *invalid) {
	if p == "*" {
		return mesh.Principal{Value: td.IDString() + "/", Prefix: true}, nil
	}
	prefix, wildcard := strings.CutSuffix(p, "*")
	if strings.Contains(prefix, "*") {
		return mesh.Principal{}, rejectf("%s %q: '*' is allowed only at the end", field, p)
	}
	if wildcard {
		// A prefix is valid when completing it makes a valid ID in td.
		id, err := spiffeid.FromString(prefix + "x")
		if err != nil {
			return mesh.Principal{}, rejectf("%s %q is not a SPIFFE ID prefix: %v", field, p, err)
		}
		if id.TrustDomain() != td {
			return mesh.Principal{}, rejectf("%s %q is not in the mesh's trust domain %q", field, p, td.Name())
		}
		if !strings.HasPrefix(prefix, td.IDString()+"/") {
			// "spiffe://cluster.local*" would also match cluster.localhost.
			return mesh.Principal{}, rejectf("%s %q: the prefix must include the trust domain and a '/'", field, p)
		}
		return mesh.Principal{Value: prefix, Prefix: true}, nil
	}
	id, err := spiffeid.FromString(p)
	if err != nil {
		return mesh.Principal{}, rejectf("%s %q is not a SPIFFE ID: %v", field, p, err)
	}
	if id.TrustDomain() != td {
		return mesh.Principal{}, rejectf("%s %q is not in the mesh's trust domain %q", field, p, td.Name())
	}
	return mesh.Principal{Value: id.String()}, nil
}

func egressPolicy(p *v1alpha1.EgressPolicy) (*mesh.EgressPolicy, *invalid) {
	sel, err := selector("spec.selector", p.Spec.Selector)
	if err != nil {
		return nil, err
	}
	out := &mesh.EgressPolicy{Namespace: p.Namespace, Name: p.Name, Selector: sel,
		Mode:          cmp.Or(p.Spec.Mode, v1alpha1.EgressEnforce),
		DefaultAction: cmp.Or(p.Spec.DefaultAction, v1alpha1.EgressDeny), // the CRD's defaults
	}
	if err := oneOf("spec.mode", out.Mode, v1alpha1.EgressEnforce, v1alpha1.EgressAudit); err != nil {
		return nil, err
	}
	if err := oneOf("spec.defaultAction", out.DefaultAction, v1alpha1.EgressAllow, v1alpha1.EgressDeny); err != nil {
		return nil, err
	}
	for i, sa := range p.Spec.ServiceAccounts {
		if errs := validation.IsDNS1123Subdomain(sa); len(errs) > 0 {
			return nil, rejectf("spec.serviceAccounts[%d] %q: %s", i, sa, strings.Join(errs, "; "))
		}
		out.ServiceAccounts = append(out.ServiceAccounts, sa)
	}
	if len(p.Spec.Rules) == 0 && out.DefaultAction == v1alpha1.EgressAllow {
		return nil, rejectf("spec.rules: a policy with defaultAction Allow needs at least one rule (without rules it would do nothing)")
	}
	for i, r := range p.Spec.Rules {
		rule, err := egressRule(fmt.Sprintf("spec.rules[%d]", i), r)
		if err != nil {
			return nil, err
		}
		if j := slices.IndexFunc(p.Spec.Rules[:i], func(o v1alpha1.EgressRule) bool { return equalRule(o, r) }); j >= 0 {
			return nil, rejectf("spec.rules[%d] duplicates spec.rules[%d]", i, j)
		}
		out.Rules = append(out.Rules, rule)
	}
	return out, nil
}

// egressInForce is the Accepted condition's message of an accepted
// EgressPolicy: what it does with the egress its rules do not match.
func egressInForce(p *mesh.EgressPolicy) string {
	switch {
	case !p.DefaultDeny():
		return fmt.Sprintf("EgressPolicy is in force (%s, defaultAction Allow): egress no rule matches is left to MeshConfig's outboundTrafficPolicy", p.Mode)
	case p.Mode == v1alpha1.EgressAudit:
		return "EgressPolicy is in force (Audit, defaultAction Deny): egress no rule allows is let through and flagged"
	default:
		return "EgressPolicy is in force (Enforce, defaultAction Deny): egress no rule allows is refused"
	}
}

func egressRule(field string, r v1alpha1.EgressRule) (mesh.EgressRule, *invalid) {
	rule := mesh.EgressRule{Action: cmp.Or(r.Action, v1alpha1.EgressAllow)}
	if err := oneOf(field+".action", rule.Action, v1alpha1.EgressAllow, v1alpha1.EgressDeny); err != nil {
		return rule, err
	}
	if len(r.Hosts)+len(r.CIDRs) == 0 {
		return rule, rejectf("%s: needs at least one of hosts or cidrs", field)
	}
	for i, h := range r.Hosts {
		if !v1alpha1.ValidEgressHost(h) {
			return rule, rejectf("%s.hosts[%d] %q is not a lowercase DNS name or a *. wildcard", field, i, h)
		}
		rule.Hosts = append(rule.Hosts, h)
	}
	for i, c := range r.CIDRs {
		pfx, err := netip.ParsePrefix(c)
		if err != nil {
			return rule, rejectf("%s.cidrs[%d] %q is not a CIDR: %v", field, i, c, err)
		}
		rule.CIDRs = append(rule.CIDRs, pfx.Masked())
	}
	for i, p := range r.Ports {
		pf := fmt.Sprintf("%s.ports[%d]", field, i)
		n, err := port(pf+".number", int64(p.Number))
		if err != nil {
			return rule, err
		}
		if err := oneOf(pf+".protocol", p.Protocol, v1alpha1.EgressHTTP, v1alpha1.EgressTLS, v1alpha1.EgressTCP); err != nil {
			return rule, err
		}
		if p.Protocol == v1alpha1.EgressTCP && len(r.Hosts) > 0 {
			return rule, rejectf("%s: hosts cannot be matched on TCP port %d; use cidrs, or HTTP or TLS", pf, n)
		}
		rule.Ports = append(rule.Ports, mesh.EgressPort{Number: n, Protocol: p.Protocol})
	}
	return rule, nil
}

// equalRule compares two rules as stored (nil and empty lists are equal).
func equalRule[T any](a, b T) bool { return equality.Semantic.DeepEqual(a, b) }
