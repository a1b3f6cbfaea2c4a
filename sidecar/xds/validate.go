package xds

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	corev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Resources is a set of xDS resources: by type URL, then by resource name.
// The messages are the sidecar's subset of Envoy's types
// (sidecar/internal/envoy: *clusterv3.Cluster, ...) as decode makes them:
// decode has refused fields outside the subset and values Envoy's own
// validation refuses (see conform), so Build checks the contract.
type Resources map[string]map[string]proto.Message

// Build turns a set of xDS resources into the sidecar's [model.Config]. It
// accepts only the subset in README.md; anything else (in typed_configs
// too, which it decodes and checks as decode does resources) or a dangling
// reference is an error naming the resource and the field. Names the set
// references but does not hold (endpoints, route configurations, the trust
// bundle, a listener) are not errors: see [model.Config.Missing].
// Certificates are parsed into a bundle of trust domain td, whose members
// alone may appear in SANs and RBAC principals.
func Build(td spiffeid.TrustDomain, res Resources) (*model.Config, error) {
	b := builder{td: td}
	cfg, err := b.build(res)
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	return cfg, nil
}

type builder struct {
	td spiffeid.TrustDomain
	// built are listeners already built from resources accepted before,
	// by name (builder.listener depends on the resource and td alone): a
	// response that leaves the listeners alone (clusters or endpoints
	// learnt on demand, an endpoint change) rebuilds the configuration
	// without rebuilding their chains, and the client need not keep their
	// decoded resources (state.go, compact).
	built map[string]*model.Listener
}

// buildWith is Build with listeners already built, which res does not hold.
func buildWith(td spiffeid.TrustDomain, res Resources, built map[string]*model.Listener) (*model.Config, error) {
	cfg, err := builder{td: td, built: built}.build(res)
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	return cfg, nil
}

func (b builder) build(res Resources) (*model.Config, error) {
	for t := range res {
		if !slices.Contains([]string{model.ClusterType, model.EndpointType, model.ListenerType, model.RouteType, model.SecretType}, t) {
			return nil, fmt.Errorf("resource type %q is not supported", t)
		}
	}
	cfg := &model.Config{Clusters: map[string]*model.Cluster{}, Endpoints: map[string][]model.Endpoint{}, Routes: map[string]*model.RouteConfig{}}
	for _, t := range []string{model.SecretType, model.ClusterType, model.EndpointType, model.ListenerType, model.RouteType} {
		if t == model.ListenerType {
			for name, l := range b.built {
				if _, again := res[t][name]; again {
					return nil, fmt.Errorf("listener %q: given built and as a resource", name)
				}
				b.setListener(cfg, l)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(res[t])) {
			m := res[t][name]
			what := fmt.Sprintf("%s %q", kindName(t), name)
			if err := b.resource(cfg, t, name, m); err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
		}
	}
	if err := crossCheck(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// setListener puts l in cfg by its name (listener checked it is the
// inbound, the outbound or a destination's listener).
func (builder) setListener(cfg *model.Config, l *model.Listener) {
	switch l.Name {
	case model.InboundListener:
		cfg.Inbound = l
	case model.OutboundListener:
		cfg.Outbound = l
	default:
		if cfg.Destinations == nil {
			cfg.Destinations = map[netip.AddrPort]*model.Listener{}
		}
		cfg.Destinations[l.Addr] = l
	}
}

func (b builder) resource(cfg *model.Config, t, name string, m proto.Message) error {
	if m == nil {
		return errors.New("empty resource")
	}
	if got := resourceName(m); got != name {
		return fmt.Errorf("resource is named %q", got)
	}
	var err error
	switch t {
	case model.SecretType:
		cfg.TrustBundle, err = b.trustBundle(m)
	case model.ClusterType:
		cfg.Clusters[name], err = b.cluster(m)
	case model.EndpointType:
		cfg.Endpoints[name], err = b.loadAssignment(m)
	case model.ListenerType:
		var l *model.Listener
		if l, err = b.listener(m); err == nil {
			b.setListener(cfg, l)
		}
	case model.RouteType:
		// Listeners are read first: the chains that reference a route
		// configuration say what it may hold.
		var kind routeKind
		if kind, err = routeKindOf(cfg, name); err == nil {
			cfg.Routes[name], err = b.routeConfig(m, kind)
		}
	}
	return err
}

// kindName is how errors name a resource of type t.
func kindName(t string) string {
	switch t {
	case model.ClusterType:
		return "cluster"
	case model.EndpointType:
		return "endpoints"
	case model.ListenerType:
		return "listener"
	case model.RouteType:
		return "route configuration"
	case model.SecretType:
		return "secret"
	}
	return t
}

// resourceName is the name a resource carries inside itself.
func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case interface{ GetClusterName() string }:
		return r.GetClusterName()
	case interface{ GetName() string }:
		return r.GetName()
	}
	return ""
}

// only fails for every populated field of m not in allowed: a field of the
// subset that this use of the message does not honour. (Fields outside the
// subset never get this far: conform refuses them.)
func only(m proto.Message, allowed ...string) error {
	r := m.ProtoReflect()
	var bad []string
	r.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, string(fd.Name())) {
			bad = append(bad, string(fd.Name()))
		}
		return true
	})
	switch slices.Sort(bad); len(bad) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("field %s is not supported", bad[0])
	default:
		return fmt.Errorf("fields %s are not supported", strings.Join(bad, ", "))
	}
}

// adsSource accepts a ConfigSource that says "over this ADS stream".
func adsSource(cs *corev3.ConfigSource) error {
	if err := only(cs, "ads", "resource_api_version"); err != nil {
		return err
	}
	if cs.GetAds() == nil {
		return errors.New("only ads is supported")
	}
	if v := cs.GetResourceApiVersion(); v != corev3.ApiVersion_AUTO && v != corev3.ApiVersion_V3 {
		return fmt.Errorf("resource_api_version %s is not supported", v)
	}
	return nil
}

// inlineData reads an inline DataSource.
func inlineData(ds *corev3.DataSource) ([]byte, error) {
	if err := only(ds, "inline_bytes", "inline_string"); err != nil {
		return nil, err
	}
	if s, ok := ds.GetSpecifier().(*corev3.DataSource_InlineString); ok {
		return []byte(s.InlineString), nil
	}
	return ds.GetInlineBytes(), nil
}
