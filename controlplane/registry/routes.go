package registry

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/controlplane/mesh"
)

// GAMMA (docs/gamma.md): the Gateway API's HTTPRoutes and GRPCRoutes whose
// parentRef is a Service, resolved into the model's routes (mesh.Route),
// with the status the Gateway API asks of a mesh: per parentRef of ours,
// Accepted and ResolvedRefs (and PartiallyInvalid when some rules were
// refused), controllerName weft.dev/mesh.

// routeVerdict is a route's status: one entry per parentRef of ours.
type routeVerdict struct {
	parents []gwv1.RouteParentStatus
	// problem is the first thing wrong (reason, message) for the Event;
	// nil when nothing is.
	problem *invalid
}

// routeContext is what resolving routes looks up.
type routeContext struct {
	services map[mesh.Key]*corev1.Service
	grants   []*gwv1.ReferenceGrant
}

func newRouteContext(st *state) *routeContext {
	c := &routeContext{services: make(map[mesh.Key]*corev1.Service, len(st.services))}
	for _, s := range st.services {
		c.services[mesh.Key{Namespace: s.Namespace, Name: s.Name}] = s
	}
	for _, u := range st.referenceGrants {
		var g gwv1.ReferenceGrant
		if decode(u, &g) == nil {
			c.grants = append(c.grants, &g)
		}
	}
	return c
}

// isOurs reports whether a parentRef is one weft answers for: a Service
// (group "", the core group). Gateways and other kinds of other groups are
// other controllers' and are left alone; a core kind other than Service is
// ours to refuse.
func isOurs(p gwv1.ParentReference) bool {
	return p.Group != nil && *p.Group == "" // the API's default group is gateway.networking.k8s.io
}

// routeRules is a route's rules in the model's terms and what was wrong with
// the ones left out.
type routeRules struct {
	rules []mesh.RouteRule
	// unsupported: rules refused for a value weft does not serve
	// (PartiallyInvalid, or Accepted=False when no rule is left).
	unsupported []string
	// refs: the first backendRef that does not resolve (ResolvedRefs=False).
	refs *invalid
}

// resolveRoute turns one HTTPRoute or GRPCRoute into the model's route (nil
// when it attaches nowhere or serves no rule) and its status.
func (c *routeContext) resolveRoute(kind string, meta metav1.ObjectMeta, parentRefs []gwv1.ParentReference, rr routeRules) (*mesh.Route, routeVerdict) {
	var v routeVerdict
	route := &mesh.Route{Kind: kind, Namespace: meta.Namespace, Name: meta.Name, Created: meta.CreationTimestamp.UTC(), Rules: rr.rules}
	note := func(bad *invalid) {
		if v.problem == nil && bad != nil {
			v.problem = bad
		}
	}
	for _, ref := range parentRefs {
		if !isOurs(ref) {
			continue
		}
		parent, accepted := c.resolveParent(kind, meta.Namespace, ref)
		if accepted == nil && len(rr.rules) == 0 && len(rr.unsupported) > 0 {
			accepted = &invalid{string(gwv1.RouteReasonUnsupportedValue), "no rule of the route can be served: " + strings.Join(rr.unsupported, "; ")}
		}
		note(accepted)
		conds := []metav1.Condition{condFor(string(gwv1.RouteConditionAccepted), string(gwv1.RouteReasonAccepted), "the route decides the requests meshed clients send to the Service", accepted, meta.Generation)}
		note(rr.refs)
		conds = append(conds, condFor(string(gwv1.RouteConditionResolvedRefs), string(gwv1.RouteReasonResolvedRefs), "every backendRef resolves", rr.refs, meta.Generation))
		if len(rr.unsupported) > 0 && len(rr.rules) > 0 {
			msg := capMessage("rules left out: " + strings.Join(rr.unsupported, "; "))
			note(&invalid{string(gwv1.RouteReasonUnsupportedValue), msg})
			conds = append(conds, metav1.Condition{Type: string(gwv1.RouteConditionPartiallyInvalid), Status: metav1.ConditionTrue,
				Reason: string(gwv1.RouteReasonUnsupportedValue), Message: msg, ObservedGeneration: meta.Generation})
		}
		v.parents = append(v.parents, gwv1.RouteParentStatus{ParentRef: ref, ControllerName: gwv1.GatewayController(meshControllerName), Conditions: conds})
		if accepted == nil && !slices.Contains(route.Parents, parent) {
			route.Parents = append(route.Parents, parent)
		}
	}
	if len(route.Parents) == 0 {
		return nil, v
	}
	return route, v
}

func condFor(typ, okReason, okMessage string, bad *invalid, generation int64) metav1.Condition {
	c := metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: okReason, Message: okMessage, ObservedGeneration: generation}
	if bad != nil {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, bad.reason, capMessage(bad.message)
	}
	return c
}

// maxConditionMessage bounds a condition message well under the 32,768
// bytes the API server accepts: a route's author controls what the
// message quotes (every refused value), and a status the API server
// refuses would be retried on every rebuild and never written.
const maxConditionMessage = 4096

// capMessage is m cut to maxConditionMessage bytes (on a rune boundary),
// saying so.
func capMessage(m string) string {
	if len(m) <= maxConditionMessage {
		return m
	}
	const more = " … (cut)"
	cut := maxConditionMessage - len(more)
	for cut > 0 && !utf8.RuneStart(m[cut]) {
		cut--
	}
	return m[:cut] + more
}

// resolveParent checks a parentRef of ours: a ClusterIP Service of the
// cluster with the port (or section) it names, which carries HTTP.
func (c *routeContext) resolveParent(kind, routeNS string, ref gwv1.ParentReference) (mesh.RouteParent, *invalid) {
	unsupported := func(format string, args ...any) (mesh.RouteParent, *invalid) {
		return mesh.RouteParent{}, unsupportedf(format, args...)
	}
	noParent := func(format string, args ...any) (mesh.RouteParent, *invalid) {
		return mesh.RouteParent{}, &invalid{string(gwv1.RouteReasonNoMatchingParent), fmt.Sprintf(format, args...)}
	}
	if k := deref(ref.Kind); k != "Service" {
		return unsupported("parentRef kind %q of the core group: weft attaches routes to Services only", k)
	}
	key := mesh.Key{Namespace: cmp.Or(string(deref(ref.Namespace)), routeNS), Name: string(ref.Name)}
	svc, ok := c.services[key]
	if !ok {
		return noParent("Service %s not found", key)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return unsupported("Service %s has no ClusterIP: routes attach to a Service's ClusterIP (GAMMA)", key)
	}
	parent := mesh.RouteParent{Service: key}
	var ports []corev1.ServicePort
	for _, p := range svc.Spec.Ports {
		switch {
		case ref.Port != nil && p.Port != int32(*ref.Port):
		case ref.SectionName != nil && p.Name != string(*ref.SectionName):
		case p.Protocol != "" && p.Protocol != corev1.ProtocolTCP:
		default:
			ports = append(ports, p)
		}
	}
	if len(ports) == 0 {
		what := "TCP port"
		if ref.Port != nil {
			what = fmt.Sprintf("TCP port %d", *ref.Port)
		}
		if ref.SectionName != nil {
			what += fmt.Sprintf(" named %q", *ref.SectionName)
		}
		return noParent("Service %s has no %s", key, what)
	}
	var http []corev1.ServicePort
	for _, p := range ports {
		if routedProtocol(appProtocol(p.Name, p.AppProtocol)) {
			http = append(http, p)
		}
	}
	if len(http) == 0 {
		return unsupported("no port of Service %s that the route names declares http, h2c or grpc (appProtocol, or a name like http-*): weft routes requests only there", key)
	}
	if ref.Port != nil || ref.SectionName != nil {
		parent.Port = uint16(http[0].Port)
	}
	return parent, nil
}

// routedProtocol reports whether the sidecars route a port's requests
// (translate: isHTTP).
func routedProtocol(p mesh.AppProtocol) bool {
	return p == mesh.AppProtocolHTTP || p == mesh.AppProtocolHTTP2 || p == mesh.AppProtocolGRPC
}

// parentNamespaces are the namespaces of a route's Service parentRefs.
func parentNamespaces(routeNS string, refs []gwv1.ParentReference) []string {
	var out []string
	for _, r := range refs {
		if isOurs(r) && deref(r.Kind) == "Service" {
			out = append(out, cmp.Or(string(deref(r.Namespace)), routeNS))
		}
	}
	return out
}

// backend resolves a backendRef: a Service port of the cluster that
// carries HTTP, in the route's namespace, in the namespace of every Service
// the route attaches to (a consumer route sending to the Service it is
// for), or in a namespace whose ReferenceGrant lets the route's kind refer
// to the Service.
func (c *routeContext) backend(kind, routeNS string, parentNS []string, ref gwv1.BackendRef) (mesh.Backend, *invalid) {
	group, bkind := string(deref(ref.Group)), cmp.Or(string(deref(ref.Kind)), "Service")
	key := mesh.Key{Namespace: cmp.Or(string(deref(ref.Namespace)), routeNS), Name: string(ref.Name)}
	if group != "" || bkind != "Service" {
		return mesh.Backend{}, &invalid{string(gwv1.RouteReasonInvalidKind), fmt.Sprintf("backendRef %s: kind %q of group %q: weft sends requests to Services only", key, bkind, group)}
	}
	if key.Namespace != routeNS && !allSame(parentNS, key.Namespace) && !c.granted(kind, routeNS, key) {
		return mesh.Backend{}, &invalid{string(gwv1.RouteReasonRefNotPermitted),
			fmt.Sprintf("backendRef %s: no ReferenceGrant in namespace %s allows %ss of namespace %s to refer to it", key, key.Namespace, kind, routeNS)}
	}
	svc, ok := c.services[key]
	if !ok {
		return mesh.Backend{}, &invalid{string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("backendRef %s: Service not found", key)}
	}
	if ref.Port == nil {
		return mesh.Backend{}, &invalid{string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("backendRef %s: port is required", key)}
	}
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(*ref.Port) })
	if i < 0 {
		return mesh.Backend{}, &invalid{string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("backendRef %s: the Service has no port %d", key, *ref.Port)}
	}
	if p := svc.Spec.Ports[i]; !routedProtocol(appProtocol(p.Name, p.AppProtocol)) || (p.Protocol != "" && p.Protocol != corev1.ProtocolTCP) {
		return mesh.Backend{}, &invalid{string(gwv1.RouteReasonUnsupportedProtocol),
			fmt.Sprintf("backendRef %s: port %d does not declare http, h2c or grpc, so requests cannot be routed to it", key, *ref.Port)}
	}
	weight := int32(1)
	if ref.Weight != nil {
		weight = *ref.Weight
	}
	return mesh.Backend{Service: key, Port: uint16(*ref.Port), Weight: uint32(max(weight, 0))}, nil
}

func allSame(nss []string, ns string) bool {
	return len(nss) > 0 && !slices.ContainsFunc(nss, func(x string) bool { return x != ns })
}

// granted reports whether a ReferenceGrant in the backend's namespace lets
// routes of kind in namespace from refer to the Service.
func (c *routeContext) granted(kind, from string, to mesh.Key) bool {
	for _, g := range c.grants {
		if g.Namespace != to.Namespace {
			continue
		}
		fromOK := slices.ContainsFunc(g.Spec.From, func(f gwv1.ReferenceGrantFrom) bool {
			return string(f.Group) == gwv1.GroupName && string(f.Kind) == kind && string(f.Namespace) == from
		})
		toOK := slices.ContainsFunc(g.Spec.To, func(t gwv1.ReferenceGrantTo) bool {
			return t.Group == "" && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == to.Name)
		})
		if fromOK && toOK {
			return true
		}
	}
	return false
}

// httpRoute resolves an HTTPRoute.
func (c *routeContext) httpRoute(r *gwv1.HTTPRoute) (*mesh.Route, routeVerdict) {
	parentNS := parentNamespaces(r.Namespace, r.Spec.ParentRefs)
	rr := collectRules(r.Spec.Rules, func(rule gwv1.HTTPRouteRule) (*mesh.RouteRule, *invalid, *invalid) {
		return c.httpRule(r.Namespace, parentNS, rule)
	})
	return c.resolveRoute(mesh.KindHTTPRoute, r.ObjectMeta, r.Spec.ParentRefs, rr)
}

// collectRules resolves a route's rules one by one (resolve: the rule in
// the model's terms, why it is refused, which backendRefs do not
// resolve): the served rules with their index, the refused ones named,
// and the first backendRef problem.
func collectRules[R any](rules []R, resolve func(R) (*mesh.RouteRule, *invalid, *invalid)) routeRules {
	var rr routeRules
	for i, rule := range rules {
		out, bad, refs := resolve(rule)
		if refs != nil && rr.refs == nil {
			rr.refs = refs
		}
		switch {
		case bad != nil:
			rr.unsupported = append(rr.unsupported, fmt.Sprintf("rule %d: %s", i, bad.message))
		case out != nil:
			out.Index = i
			rr.rules = append(rr.rules, *out)
		}
	}
	return rr
}

// unsupportedf is the Gateway API's UnsupportedValue for a route, with
// its message.
func unsupportedf(format string, args ...any) *invalid {
	return &invalid{string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf(format, args...)}
}

// refuseRule is httpRule's and grpcRule's answer for a rule that asks for
// something weft does not serve.
func refuseRule(format string, args ...any) (*mesh.RouteRule, *invalid, *invalid) {
	return nil, unsupportedf(format, args...), nil
}

// httpRule is one rule in the model's terms: nil with bad when it asks for
// something weft does not serve; refs when a backendRef does not resolve
// (it stays, Unresolved: its share is answered 500).
func (c *routeContext) httpRule(routeNS string, parentNS []string, rule gwv1.HTTPRouteRule) (out *mesh.RouteRule, bad, refs *invalid) {
	out = &mesh.RouteRule{}
	if rule.Retry != nil {
		return refuseRule("retry is not supported (the mesh's own retry policy applies)")
	}
	if rule.SessionPersistence != nil {
		return refuseRule("sessionPersistence is not supported")
	}
	for _, m := range rule.Matches {
		mm, err := httpMatch(m)
		if err != nil {
			return nil, err, nil
		}
		out.Matches = append(out.Matches, mm)
	}
	if len(out.Matches) == 0 {
		out.Matches = []mesh.RouteMatch{{PathType: mesh.PathPrefix, Path: "/"}}
	}
	for _, f := range rule.Filters {
		if err := httpFilter(out, f); err != nil {
			return nil, err, nil
		}
	}
	if out.Redirect != nil && out.Rewrite != nil {
		return nil, &invalid{string(gwv1.RouteReasonIncompatibleFilters), "RequestRedirect and URLRewrite cannot both be set"}, nil
	}
	for _, pm := range []*mesh.PathModifier{redirectPath(out.Redirect), rewritePath(out.Rewrite)} {
		if pm != nil && pm.Type == mesh.ReplacePrefixMatch &&
			slices.ContainsFunc(out.Matches, func(m mesh.RouteMatch) bool { return m.PathType != mesh.PathPrefix }) {
			return refuseRule("ReplacePrefixMatch needs every match of the rule to be a PathPrefix")
		}
	}
	if t := rule.Timeouts; t != nil {
		var err *invalid
		if out.Timeout, err = duration("timeouts.request", t.Request); err != nil {
			return nil, err, nil
		}
		if out.BackendTimeout, err = duration("timeouts.backendRequest", t.BackendRequest); err != nil {
			return nil, err, nil
		}
	}
	if out.Redirect != nil {
		return out, nil, nil // the backends are not used
	}
	refsOf, ok := withoutFilters(rule.BackendRefs, func(b gwv1.HTTPBackendRef) (gwv1.BackendRef, int) { return b.BackendRef, len(b.Filters) })
	if !ok {
		return refuseRule("filters on a backendRef are not supported")
	}
	out.Backends, refs = c.backends(mesh.KindHTTPRoute, routeNS, parentNS, refsOf, refs)
	return out, nil, refs
}

// withoutFilters is a rule's backendRefs (split: each one's BackendRef and
// how many filters it carries), or false when one carries filters, which
// weft does not serve.
func withoutFilters[B any](refs []B, split func(B) (gwv1.BackendRef, int)) ([]gwv1.BackendRef, bool) {
	out := make([]gwv1.BackendRef, len(refs))
	for i, b := range refs {
		ref, filters := split(b)
		if filters > 0 {
			return nil, false
		}
		out[i] = ref
	}
	return out, true
}

// backends resolves a rule's backendRefs of a route of kind: each that
// does not resolve stays, Unresolved; refs is the first problem (kept
// when already set).
func (c *routeContext) backends(kind, routeNS string, parentNS []string, refsOf []gwv1.BackendRef, refs *invalid) ([]mesh.Backend, *invalid) {
	var out []mesh.Backend
	for _, ref := range refsOf {
		be, err := c.backend(kind, routeNS, parentNS, ref)
		if err != nil {
			refs = cmp.Or(refs, err)
			be = unresolved(routeNS, ref)
		}
		out = append(out, be)
	}
	return out, refs
}

// unresolved is a backendRef that did not resolve, with its weight: its
// share of the rule's requests is answered 500.
func unresolved(routeNS string, ref gwv1.BackendRef) mesh.Backend {
	be := mesh.Backend{Service: mesh.Key{Namespace: cmp.Or(string(deref(ref.Namespace)), routeNS), Name: string(ref.Name)},
		Weight: 1, Unresolved: true}
	if ref.Port != nil {
		be.Port = uint16(*ref.Port)
	}
	if ref.Weight != nil {
		be.Weight = uint32(max(*ref.Weight, 0))
	}
	return be
}

func redirectPath(r *mesh.Redirect) *mesh.PathModifier {
	if r == nil {
		return nil
	}
	return r.Path
}

func rewritePath(r *mesh.Rewrite) *mesh.PathModifier {
	if r == nil {
		return nil
	}
	return r.Path
}

func duration(field string, d *gwv1.Duration) (time.Duration, *invalid) {
	if d == nil {
		return 0, nil
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v < 0 {
		return 0, unsupportedf("%s %q is not a duration", field, *d)
	}
	return v, nil
}

func httpMatch(m gwv1.HTTPRouteMatch) (mesh.RouteMatch, *invalid) {
	unsupported := func(format string, args ...any) (mesh.RouteMatch, *invalid) {
		return mesh.RouteMatch{}, unsupportedf(format, args...)
	}
	out := mesh.RouteMatch{PathType: mesh.PathPrefix, Path: "/"}
	if p := m.Path; p != nil {
		out.Path = cmp.Or(deref(p.Value), "/")
		switch t := cmp.Or(deref(p.Type), gwv1.PathMatchPathPrefix); t {
		case gwv1.PathMatchExact:
			out.PathType = mesh.PathExact
		case gwv1.PathMatchPathPrefix:
			if out.Path != "/" {
				out.Path = strings.TrimRight(out.Path, "/")
			}
		default:
			return unsupported("path match type %s is not supported (Exact and PathPrefix are)", t)
		}
		if !strings.HasPrefix(out.Path, "/") {
			return unsupported("path %q does not start with /", out.Path)
		}
		// The v1 CRD's pattern refuses these; an older CRD or a cluster
		// without its validation may not, and Envoy's own validation of
		// the path match would then refuse the node's whole snapshot.
		if strings.ContainsAny(out.Path, "?#") || strings.IndexFunc(out.Path, func(r rune) bool { return r <= 0x20 || r == 0x7f }) >= 0 {
			return unsupported("path %q: a path match holds no query, fragment, white space or control character", out.Path)
		}
	}
	for _, h := range m.Headers {
		nv, bad := headerMatch(string(h.Name), string(cmp.Or(deref(h.Type), gwv1.HeaderMatchExact)), string(gwv1.HeaderMatchExact), h.Value)
		if bad != nil {
			return mesh.RouteMatch{}, bad
		}
		out.Headers = append(out.Headers, nv)
	}
	for _, q := range m.QueryParams {
		if t := cmp.Or(deref(q.Type), gwv1.QueryParamMatchExact); t != gwv1.QueryParamMatchExact {
			return unsupported("query parameter match type %s is not supported (Exact is)", t)
		}
		out.QueryParams = append(out.QueryParams, mesh.NameValue{Name: string(q.Name), Value: q.Value})
	}
	out.Method = string(deref(m.Method))
	return out, nil
}

// headerMatch is a route's match on a request header (name; typ, its
// match type, of which weft serves exact): Exact only, and not on Host or
// a pseudo-header. HTTPRoute and GRPCRoute spell the same rule with types
// of their own.
func headerMatch(name, typ, exact, value string) (mesh.NameValue, *invalid) {
	if typ != exact {
		return mesh.NameValue{}, unsupportedf("header match type %s is not supported (Exact is)", typ)
	}
	lower := strings.ToLower(name)
	if lower == "host" || strings.HasPrefix(lower, ":") {
		return mesh.NameValue{}, unsupportedf("a header match on %q is not supported", name)
	}
	return mesh.NameValue{Name: lower, Value: value}, nil
}

func httpFilter(rule *mesh.RouteRule, f gwv1.HTTPRouteFilter) *invalid {
	missing := unsupportedf("filter %s without its settings", f.Type)
	switch f.Type {
	case gwv1.HTTPRouteFilterRequestHeaderModifier:
		if f.RequestHeaderModifier == nil {
			return missing
		}
		return setHeaderModifier(&rule.RequestHeaders, f.RequestHeaderModifier)
	case gwv1.HTTPRouteFilterResponseHeaderModifier:
		if f.ResponseHeaderModifier == nil {
			return missing
		}
		return setHeaderModifier(&rule.ResponseHeaders, f.ResponseHeaderModifier)
	case gwv1.HTTPRouteFilterRequestRedirect:
		r := f.RequestRedirect
		if r == nil {
			return missing
		}
		if bad := checkPathModifier(r.Path); bad != nil {
			return bad
		}
		rule.Redirect = &mesh.Redirect{Scheme: deref(r.Scheme), Hostname: string(deref(r.Hostname)),
			Port: uint16(deref(r.Port)), StatusCode: cmp.Or(deref(r.StatusCode), 302), Path: pathModifier(r.Path)}
	case gwv1.HTTPRouteFilterURLRewrite:
		r := f.URLRewrite
		if r == nil {
			return missing
		}
		if bad := checkPathModifier(r.Path); bad != nil {
			return bad
		}
		rule.Rewrite = &mesh.Rewrite{Hostname: string(deref(r.Hostname)), Path: pathModifier(r.Path)}
	default:
		return unsupportedf("filter %s is not supported", f.Type)
	}
	return nil
}

// headerModifier resolves a header filter, refusing what a sidecar must
// not be asked to do (it would refuse the whole route configuration, and
// with it every route of the Service): edit a pseudo-header, Host, or a
// header the HTTP stack owns (connection management, framing), or send a
// value with a control character.
// setHeaderModifier sets *dst to h in the model's terms, or says what is
// wrong with it (*dst unchanged).
func setHeaderModifier(dst **mesh.HeaderModifier, h *gwv1.HTTPHeaderFilter) *invalid {
	m, bad := headerModifier(h)
	if bad != nil {
		return bad
	}
	*dst = m
	return nil
}

func headerModifier(h *gwv1.HTTPHeaderFilter) (*mesh.HeaderModifier, *invalid) {
	out := &mesh.HeaderModifier{}
	for _, x := range h.Set {
		nv := mesh.NameValue{Name: strings.ToLower(string(x.Name)), Value: x.Value}
		if bad := checkHeaderEdit(nv.Name, nv.Value); bad != nil {
			return nil, bad
		}
		out.Set = append(out.Set, nv)
	}
	for _, x := range h.Add {
		nv := mesh.NameValue{Name: strings.ToLower(string(x.Name)), Value: x.Value}
		if bad := checkHeaderEdit(nv.Name, nv.Value); bad != nil {
			return nil, bad
		}
		out.Add = append(out.Add, nv)
	}
	for _, x := range h.Remove {
		name := strings.ToLower(x)
		if bad := checkHeaderEdit(name, ""); bad != nil {
			return nil, bad
		}
		out.Remove = append(out.Remove, name)
	}
	return out, nil
}

// stackHeaders are the headers the HTTP stack sets itself (connection
// management and framing): a route may not edit them.
var stackHeaders = []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "content-length"}

func checkHeaderEdit(name, value string) *invalid {
	switch {
	case name == "" || strings.HasPrefix(name, ":") || name == "host":
		return unsupportedf("header filter: %q cannot be edited (pseudo-headers and Host are not headers a route sets)", name)
	case slices.Contains(stackHeaders, name):
		return unsupportedf("header filter: %q is set by the HTTP stack and cannot be edited", name)
	case strings.IndexFunc(name, func(r rune) bool { return !isTokenChar(r) }) >= 0:
		return unsupportedf("header filter: %q is not a header name", name)
	case strings.IndexFunc(value, func(r rune) bool { return (r < 0x20 && r != '\t') || r == 0x7f }) >= 0:
		return unsupportedf("header filter: the value of %q holds a control character", name)
	}
	return nil
}

// isTokenChar reports whether r may be in an HTTP token (RFC 9110).
func isTokenChar(r rune) bool {
	return r < 0x7f && r > 0x20 && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r)
}

// checkPathModifier refuses a redirect or rewrite path that a URL path
// cannot carry as it is: a query or fragment delimiter, a backslash, white
// space or a control character, or a broken percent-escape.
func checkPathModifier(p *gwv1.HTTPPathModifier) *invalid {
	if p == nil {
		return nil
	}
	v := cmp.Or(deref(p.ReplaceFullPath), deref(p.ReplacePrefixMatch))
	for i := 0; i < len(v); i++ {
		c := v[i]
		// A '\' would be a substitution escape in the regex_rewrite a
		// ReplaceFullPath becomes (\0 the whole original path), and the
		// sidecar refuses any other: the whole route configuration with it.
		bad := c == '?' || c == '#' || c == '\\' || c <= 0x20 || c == 0x7f
		if c == '%' {
			bad = i+2 >= len(v) || !isHex(v[i+1]) || !isHex(v[i+2])
		}
		if bad {
			return unsupportedf("path %q: a URL path cannot carry it as it is", v)
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func pathModifier(p *gwv1.HTTPPathModifier) *mesh.PathModifier {
	switch {
	case p == nil:
		return nil
	case p.Type == gwv1.FullPathHTTPPathModifier:
		return &mesh.PathModifier{Type: mesh.ReplaceFullPath, Value: cmp.Or(deref(p.ReplaceFullPath), "/")}
	default:
		return &mesh.PathModifier{Type: mesh.ReplacePrefixMatch, Value: cmp.Or(deref(p.ReplacePrefixMatch), "/")}
	}
}

// grpcRoute resolves a GRPCRoute: a method match is a path match
// ("/<service>/<method>" exact, or "/<service>" as a PathPrefix for a whole
// service).
func (c *routeContext) grpcRoute(r *gwv1.GRPCRoute) (*mesh.Route, routeVerdict) {
	parentNS := parentNamespaces(r.Namespace, r.Spec.ParentRefs)
	rr := collectRules(r.Spec.Rules, func(rule gwv1.GRPCRouteRule) (*mesh.RouteRule, *invalid, *invalid) {
		return c.grpcRule(r.Namespace, parentNS, rule)
	})
	return c.resolveRoute(mesh.KindGRPCRoute, r.ObjectMeta, r.Spec.ParentRefs, rr)
}

func (c *routeContext) grpcRule(routeNS string, parentNS []string, rule gwv1.GRPCRouteRule) (out *mesh.RouteRule, bad, refs *invalid) {
	out = &mesh.RouteRule{}
	if rule.SessionPersistence != nil {
		return refuseRule("sessionPersistence is not supported")
	}
	for _, m := range rule.Matches {
		mm := mesh.RouteMatch{PathType: mesh.PathPrefix, Path: "/"}
		if mt := m.Method; mt != nil {
			if t := cmp.Or(deref(mt.Type), gwv1.GRPCMethodMatchExact); t != gwv1.GRPCMethodMatchExact {
				return refuseRule("method match type %s is not supported (Exact is)", t)
			}
			svc, method := deref(mt.Service), deref(mt.Method)
			switch {
			case svc != "" && method != "":
				mm = mesh.RouteMatch{PathType: mesh.PathExact, Path: "/" + svc + "/" + method}
			case svc != "":
				mm = mesh.RouteMatch{PathType: mesh.PathPrefix, Path: "/" + svc}
			case method != "":
				return refuseRule("a method match without a service is not supported")
			}
		}
		for _, h := range m.Headers {
			nv, bad := headerMatch(string(h.Name), string(cmp.Or(deref(h.Type), gwv1.GRPCHeaderMatchExact)), string(gwv1.GRPCHeaderMatchExact), h.Value)
			if bad != nil {
				return nil, bad, nil
			}
			mm.Headers = append(mm.Headers, nv)
		}
		out.Matches = append(out.Matches, mm)
	}
	if len(out.Matches) == 0 {
		out.Matches = []mesh.RouteMatch{{PathType: mesh.PathPrefix, Path: "/"}}
	}
	for _, f := range rule.Filters {
		switch {
		case f.Type == gwv1.GRPCRouteFilterRequestHeaderModifier && f.RequestHeaderModifier != nil:
			if bad := setHeaderModifier(&out.RequestHeaders, f.RequestHeaderModifier); bad != nil {
				return nil, bad, refs
			}
		case f.Type == gwv1.GRPCRouteFilterResponseHeaderModifier && f.ResponseHeaderModifier != nil:
			if bad := setHeaderModifier(&out.ResponseHeaders, f.ResponseHeaderModifier); bad != nil {
				return nil, bad, refs
			}
		default:
			return refuseRule("filter %s is not supported", f.Type)
		}
	}
	refsOf, ok := withoutFilters(rule.BackendRefs, func(b gwv1.GRPCBackendRef) (gwv1.BackendRef, int) { return b.BackendRef, len(b.Filters) })
	if !ok {
		return refuseRule("filters on a backendRef are not supported")
	}
	out.Backends, refs = c.backends(mesh.KindGRPCRoute, routeNS, parentNS, refsOf, refs)
	return out, nil, refs
}

// routesOf resolves every route of the state: the model's routes and each
// route object's status.
func routesOf(st *state) ([]*mesh.Route, []verdict) {
	if len(st.httpRoutes) == 0 && len(st.grpcRoutes) == 0 {
		return nil, nil
	}
	c := newRouteContext(st)
	var items []resolvedRoute
	for _, u := range st.httpRoutes {
		var r gwv1.HTTPRoute
		if decode(u, &r) != nil {
			continue
		}
		route, v := c.httpRoute(&r)
		items = append(items, resolvedRoute{u: u, kind: mesh.KindHTTPRoute, route: route, verdict: v})
	}
	for _, u := range st.grpcRoutes {
		var r gwv1.GRPCRoute
		if decode(u, &r) != nil {
			continue
		}
		route, v := c.grpcRoute(&r)
		items = append(items, resolvedRoute{u: u, kind: mesh.KindGRPCRoute, route: route, verdict: v})
	}
	c.budget(items, st.routeBudget)
	var routes []*mesh.Route
	var verdicts []verdict
	for _, it := range items {
		if it.route != nil {
			routes = append(routes, it.route)
		}
		v := it.verdict
		if len(v.parents) == 0 {
			continue // no parentRef of ours: another controller's route
		}
		vd := verdict{gvr: routeResource(it.kind), kind: it.kind, obj: it.u, accepted: v.problem == nil, generation: it.u.GetGeneration(),
			reason: string(gwv1.RouteReasonAccepted), message: it.kind + " is in force", routeParents: v.parents}
		if v.problem != nil {
			vd.reason, vd.message = v.problem.reason, v.problem.message
		}
		verdicts = append(verdicts, vd)
	}
	return routes, verdicts
}
