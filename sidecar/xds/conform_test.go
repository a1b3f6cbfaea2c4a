package xds

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/protoc-gen-validate/validate"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	// Envoy's descriptors of every message of the subset (the others come
	// with the builders' imports).
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	subsetclusterv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/cluster/v3"
	hcmv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/network/http_connection_manager/v3"
	sdiscoveryv3 "github.com/weftmesh/weft/sidecar/internal/envoy/service/discovery/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestEnvoyRulesComplete: envoyRules and requiredOneofs are exactly the
// protoc-gen-validate rules Envoy's API declares on the fields and oneofs of
// the subset the sidecar decodes (everything but the ADS envelope and what it
// sends), as go-control-plane's descriptors carry them. A new field of the
// subset with a rule, a rule changed upstream or a rule of a kind conform
// does not implement fails here.
func TestEnvoyRulesComplete(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	covered := map[string]bool{}
	var visit func(md protoreflect.MessageDescriptor)
	visit = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] || !strings.HasPrefix(string(md.FullName()), subsetPrefix) {
			return
		}
		seen[md.FullName()] = true
		ed, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(envoyName(md)))
		if err != nil {
			t.Errorf("%s: %v", envoyName(md), err)
			return
		}
		emd := ed.(protoreflect.MessageDescriptor)
		disabled := proto.GetExtension(emd.Options(), validate.E_Disabled).(bool) ||
			proto.GetExtension(emd.Options(), validate.E_Ignored).(bool)
		for i := range md.Fields().Len() {
			f := md.Fields().Get(i)
			name := envoyName(f)
			covered[name] = true
			var want constraint
			if rules, _ := proto.GetExtension(emd.Fields().ByNumber(f.Number()).Options(), validate.E_Rules).(*validate.FieldRules); rules != nil && !disabled {
				if want, err = fromPGV(rules); err != nil {
					t.Errorf("%s: Envoy's rule %v: %v", name, rules, err)
					continue
				}
			}
			if got := envoyRules[name]; !reflect.DeepEqual(got, want) {
				t.Errorf("%s: envoyRules has %s, Envoy declares %s", name, describe(got), describe(want))
			}
			if f.IsMap() {
				if f.MapValue().Message() != nil {
					visit(f.MapValue().Message())
				}
			} else if f.Message() != nil {
				visit(f.Message())
			}
		}
		for i := range md.Oneofs().Len() {
			od := md.Oneofs().Get(i)
			name := envoyName(od)
			covered[name] = true
			eod := emd.Oneofs().ByName(od.Name())
			want := eod != nil && !disabled && proto.GetExtension(eod.Options(), validate.E_Required).(bool)
			if requiredOneofs[name] != want {
				t.Errorf("oneof %s: requiredOneofs says %v, Envoy's validate.required is %v", name, requiredOneofs[name], want)
			}
		}
		for i := range md.Messages().Len() {
			visit(md.Messages().Get(i))
		}
	}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		pkg := string(fd.Package())
		if !strings.HasPrefix(pkg, subsetPrefix+"envoy.") || strings.HasPrefix(pkg, subsetPrefix+"envoy.service.") ||
			strings.HasPrefix(pkg, subsetPrefix+"envoy.data.") {
			return true
		}
		for i := range fd.Messages().Len() {
			visit(fd.Messages().Get(i))
		}
		return true
	})
	if len(seen) < 40 {
		t.Fatalf("only %d messages of the subset visited", len(seen))
	}
	for name := range envoyRules {
		if !covered[name] {
			t.Errorf("envoyRules names %s, which is not a field of the subset", name)
		}
	}
	for name := range requiredOneofs {
		if !covered[name] {
			t.Errorf("requiredOneofs names %s, which is not a oneof of the subset", name)
		}
	}
}

// fromPGV translates Envoy's rules on a field into a constraint; rules
// conform does not implement are an error. enum.defined_only is implied.
func fromPGV(r *validate.FieldRules) (constraint, error) {
	var c constraint
	if m := r.GetMessage(); m != nil {
		if err := onlySet(m, "required"); err != nil {
			return c, err
		}
		c.required = m.GetRequired()
	}
	switch typ := r.GetType().(type) {
	case nil:
	case *validate.FieldRules_String_:
		s := typ.String_
		if err := onlySet(s, "min_len", "max_bytes", "well_known_regex", "strict", "pattern"); err != nil {
			return c, err
		}
		c.minLen, c.maxBytes, c.pattern = int(s.GetMinLen()), int(s.GetMaxBytes()), s.GetPattern()
		if s.WellKnown != nil {
			// Not strict, both are ^[^\x00\n\r]*$ (protoc-gen-validate).
			if r := s.GetWellKnownRegex(); r != validate.KnownRegex_HTTP_HEADER_VALUE && r != validate.KnownRegex_HTTP_HEADER_NAME || s.GetStrict() {
				return c, fmt.Errorf("well-known regex %v (strict %v)", s.GetWellKnownRegex(), s.GetStrict())
			}
			c.header = true
		}
	case *validate.FieldRules_Uint32:
		u := typ.Uint32
		if err := onlySet(u, "gt", "gte", "lt", "lte"); err != nil {
			return c, err
		}
		b := bounds{0, math.MaxUint32}
		switch {
		case u.Gte != nil:
			b.min = uint64(u.GetGte())
		case u.Gt != nil:
			b.min = uint64(u.GetGt()) + 1
		}
		switch {
		case u.Lte != nil:
			b.max = uint64(u.GetLte())
		case u.Lt != nil:
			b.max = uint64(u.GetLt()) - 1
		}
		c.between = &b
	case *validate.FieldRules_Double:
		d := typ.Double
		if err := onlySet(d, "gte", "lte"); err != nil {
			return c, err
		}
		b := floatBounds{math.Inf(-1), math.Inf(1)}
		if d.Gte != nil {
			b.min = d.GetGte()
		}
		if d.Lte != nil {
			b.max = d.GetLte()
		}
		c.within = &b
	case *validate.FieldRules_Enum:
		e := typ.Enum
		if err := onlySet(e, "defined_only", "not_in"); err != nil {
			return c, err
		}
		for _, v := range e.GetNotIn() {
			c.notIn = append(c.notIn, protoreflect.EnumNumber(v))
		}
	case *validate.FieldRules_Repeated:
		rp := typ.Repeated
		if err := onlySet(rp, "min_items", "max_items", "items"); err != nil {
			return c, err
		}
		c.minItems, c.maxItems = int(rp.GetMinItems()), int(rp.GetMaxItems())
		if rp.GetItems() != nil {
			items, err := fromPGV(rp.GetItems())
			if err != nil {
				return c, fmt.Errorf("items: %w", err)
			}
			c.items = &items
		}
	case *validate.FieldRules_Map:
		mp := typ.Map
		if err := onlySet(mp, "keys"); err != nil {
			return c, err
		}
		keys, err := fromPGV(mp.GetKeys())
		if err != nil {
			return c, fmt.Errorf("keys: %w", err)
		}
		c.keys = &keys
	case *validate.FieldRules_Bool:
		if err := onlySet(typ.Bool, "const"); err != nil || !typ.Bool.GetConst() {
			return c, fmt.Errorf("bool rule %v", typ.Bool)
		}
		c.isTrue = true
	case *validate.FieldRules_Duration:
		d := typ.Duration
		if err := onlySet(d, "gt"); err != nil || d.GetGt().AsDuration() != 0 {
			return c, fmt.Errorf("duration rule %v", d)
		}
		c.positive = true
	default:
		return c, fmt.Errorf("rules of type %T", typ)
	}
	return c, nil
}

// onlySet fails if rules m sets a field not in names.
func onlySet(m proto.Message, names ...string) error {
	var bad []string
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(names, string(fd.Name())) {
			bad = append(bad, string(fd.Name()))
		}
		return true
	})
	if len(bad) > 0 {
		return fmt.Errorf("rule %s is not implemented by conform", strings.Join(bad, ", "))
	}
	return nil
}

// describe writes the rules c sets: "{minLen: 1}".
func describe(c constraint) string {
	var parts []string
	add := func(set bool, name string, v any) {
		if set {
			parts = append(parts, fmt.Sprintf("%s: %v", name, v))
		}
	}
	add(c.required, "required", true)
	add(c.minLen > 0, "minLen", c.minLen)
	add(c.maxBytes > 0, "maxBytes", c.maxBytes)
	add(c.header, "header", true)
	add(c.pattern != "", "pattern", c.pattern)
	add(c.minItems > 0, "minItems", c.minItems)
	add(c.maxItems > 0, "maxItems", c.maxItems)
	if c.items != nil {
		add(true, "items", describe(*c.items))
	}
	if c.keys != nil {
		add(true, "keys", describe(*c.keys))
	}
	if c.between != nil {
		add(true, "between", fmt.Sprintf("[%d, %d]", c.between.min, c.between.max))
	}
	if c.within != nil {
		add(true, "within", fmt.Sprintf("[%v, %v]", c.within.min, c.within.max))
	}
	add(len(c.notIn) > 0, "notIn", c.notIn)
	add(c.isTrue, "isTrue", true)
	add(c.positive, "positive", true)
	if len(parts) == 0 {
		return "no rule"
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// TestDecodeNamesFieldsOutsideTheSubset: a field of Envoy's outside the
// subset is refused with the resource, the path, Envoy's message and the
// field number, wherever it is.
func TestDecodeNamesFieldsOutsideTheSubset(t *testing.T) {
	withUnknown := func(m proto.Message, num protowire.Number) {
		r := m.ProtoReflect()
		r.SetUnknown(protowire.AppendVarint(protowire.AppendTag(r.GetUnknown(), num, protowire.VarintType), 1))
	}
	cases := []struct {
		name   string
		mutate func(envoySet)
		want   string
	}{
		{"nested", func(r envoySet) {
			l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
			l.FilterChains[2].FilterChainMatch.SourcePorts = []uint32{1}
		}, `listener "outbound": filter_chains[2].filter_chain_match: field 7 of envoy.config.listener.v3.FilterChainMatch is not supported`},
		{"in a map value", func(r envoySet) {
			l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
			withUnknown(l.DefaultFilterChain.Metadata.FilterMetadata["weft.egress"], 9)
		}, `listener "outbound": default_filter_chain.metadata.filter_metadata["weft.egress"]: field 9 of google.protobuf.Struct is not supported`},
		{"several", func(r envoySet) {
			c := r[model.ClusterType]["BlackHoleCluster"].(*clusterv3.Cluster)
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
			c.CleanupInterval = durationpb.New(time.Minute)
		}, `cluster "BlackHoleCluster": fields 20, 27 of envoy.config.cluster.v3.Cluster are not supported`},
		{"wrong wire type", func(r envoySet) {
			withUnknown(r[model.ClusterType]["BlackHoleCluster"], 1) // name as a varint
		}, `cluster "BlackHoleCluster": field 1 (name) of envoy.config.cluster.v3.Cluster has the wrong wire type`},
		{"oneof member outside the subset", func(r envoySet) {
			c := r[model.ClusterType]["BlackHoleCluster"].(*clusterv3.Cluster)
			c.ClusterDiscoveryType = &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{Name: "x"}}
		}, `cluster "BlackHoleCluster": field 38 of envoy.config.cluster.v3.Cluster is not supported`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mesh{services: []string{"a.demo", "b.demo", "c.demo"}}.envoy(t)
			tc.mutate(r)
			_, err := r.subset()
			if err == nil || err.Error() != "xds: "+tc.want {
				t.Fatalf("error = %v\nwant xds: %s", err, tc.want)
			}
		})
	}
}

func TestDecodeTypes(t *testing.T) {
	c := mesh{}.envoy(t)[model.ClusterType]["BlackHoleCluster"]
	a := anyOf(t, c)
	if _, err := decode(model.ListenerType, a); err == nil || err.Error() != "a resource of type "+model.ClusterType+" in a response of type "+model.ListenerType {
		t.Errorf("decode(listener, cluster) = %v", err)
	}
	addr := "type.googleapis.com/envoy.config.core.v3.Address"
	if _, err := decode(addr, &anypb.Any{TypeUrl: addr}); err == nil || err.Error() != "type "+addr+" is not supported" {
		t.Errorf("decode(Address) = %v", err)
	}
	for url, want := range map[string]string{
		"type.googleapis.com/weft.certificate.v1.SignRequest":                   "type weft.certificate.v1.SignRequest is not one of Envoy's",
		"type.googleapis.com/envoy.config.cluster.v3.UpstreamConnectionOptions": "type envoy.config.cluster.v3.UpstreamConnectionOptions is not in the sidecar's subset of Envoy's API",
	} {
		if _, err := subsetMessage(url); err == nil || err.Error() != want {
			t.Errorf("subsetMessage(%s) = %v, want %s", url, err, want)
		}
	}
	m, err := subsetMessage(model.ClusterType)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(*subsetclusterv3.Cluster); !ok {
		t.Errorf("subsetMessage(%s) is a %T", model.ClusterType, m)
	}
	// unpack compares and reports Envoy's names.
	err = unpack(anyOf(t, c), &hcmv3.HttpConnectionManager{})
	if want := `typed_config type "envoy.config.cluster.v3.Cluster" is not supported (want ` +
		`envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager)`; err == nil || err.Error() != want {
		t.Errorf("unpack = %v\nwant %s", err, want)
	}
}

// TestResponseEnvelope: a field of Envoy's discovery response outside the
// subset (canary, resource TTLs, ...) is NACKed too.
func TestResponseEnvelope(t *testing.T) {
	c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial})
	if err != nil {
		t.Fatal(err)
	}
	res := mesh{}.envoy(t)[model.ClusterType]
	var resources []*anypb.Any
	for _, n := range []string{"BlackHoleCluster", "InboundPassthroughCluster", "PassthroughCluster", "inbound|8080", "weft-controlplane"} {
		resources = append(resources, anyOf(t, res[n]))
	}
	sotw := func(r *discoveryv3.DiscoveryResponse) error {
		var s sdiscoveryv3.DiscoveryResponse
		if err := convert(r, &s); err != nil {
			return err
		}
		_, err := c.applySotw(&sotwStream{subscriptions: newSubscriptions()}, &s)
		return err
	}
	delta := func(r *discoveryv3.DeltaDiscoveryResponse) error {
		var s sdiscoveryv3.DeltaDiscoveryResponse
		if err := convert(r, &s); err != nil {
			return err
		}
		_, err := c.applyDelta(newSubscriptions(), &s)
		return err
	}
	ok := &discoveryv3.DiscoveryResponse{TypeUrl: model.ClusterType, VersionInfo: "1", Nonce: "a", Resources: resources}
	if err := sotw(ok); err != nil {
		t.Fatalf("plain response: %v", err)
	}
	canary := proto.Clone(ok).(*discoveryv3.DiscoveryResponse)
	canary.Canary = true
	if err := sotw(canary); err == nil || err.Error() != "xds: response cluster: field 3 of envoy.service.discovery.v3.DiscoveryResponse is not supported" {
		t.Errorf("canary: %v", err)
	}
	var dres []*discoveryv3.Resource
	for _, a := range resources {
		m, _ := a.UnmarshalNew()
		dres = append(dres, &discoveryv3.Resource{Name: resourceName(m), Version: "1", Resource: a})
	}
	dres[1].Ttl = durationpb.New(time.Minute)
	err = delta(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: model.ClusterType, SystemVersionInfo: "1", Nonce: "a", Resources: dres})
	if want := "xds: response cluster: resources[1]: field 6 of envoy.service.discovery.v3.Resource is not supported"; err == nil || err.Error() != want {
		t.Errorf("resource TTL: %v\nwant %s", err, want)
	}
}

func nopDial(context.Context) (grpc.ClientConnInterface, error) { return nil, errors.New("unused") }

// convert re-reads m's bytes as into.
func convert(m, into proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, into)
}
