package xds

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
)

// conform checks a decoded message tree of the subset (sidecar/internal/envoy)
// before anything reads it:
//
//   - no unknown field: every field of Envoy's that the subset does not
//     declare arrives as one, so this is where configuration the sidecar
//     cannot honour is refused;
//   - no enum value Envoy does not define;
//   - every protoc-gen-validate constraint Envoy's API declares on the fields
//     of the subset ([envoyRules], [requiredOneofs]): what Envoy's own
//     validation would refuse, the sidecar refuses too.
//
// Errors name the path from m, Envoy's message and, for unknown fields, the
// field number. Any payloads are opaque here; [unpack] checks them when it
// decodes them.
func conform(m proto.Message) error {
	return conformMessage(m.ProtoReflect(), "")
}

func conformMessage(m protoreflect.Message, path string) error {
	d := m.Descriptor()
	if err := unknownFields(m, path); err != nil {
		return err
	}
	for i := range d.Oneofs().Len() {
		od := d.Oneofs().Get(i)
		if requiredOneofs[envoyName(od)] && m.WhichOneof(od) == nil {
			return fmt.Errorf("%s%s is required", at(path), members(od))
		}
	}
	for i := range d.Fields().Len() {
		fd := d.Fields().Get(i)
		if c, ok := envoyRules[envoyName(fd)]; ok {
			if err := c.check(m, fd, join(path, string(fd.Name()))); err != nil {
				return err
			}
		}
		// Below: messages (maps are lists of entry messages) and enums.
		if !m.Has(fd) || fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.EnumKind {
			continue
		}
		p := join(path, string(fd.Name()))
		v := m.Get(fd)
		switch {
		case fd.IsMap():
			mp := v.Map()
			for _, k := range mapKeys(mp) {
				if err := conformValue(fd.MapValue(), mp.Get(k), fmt.Sprintf("%s[%q]", p, k.String())); err != nil {
					return err
				}
			}
		case fd.IsList():
			l := v.List()
			for j := range l.Len() {
				if err := conformValue(fd, l.Get(j), fmt.Sprintf("%s[%d]", p, j)); err != nil {
					return err
				}
			}
		default:
			if err := conformValue(fd, v, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// conformValue checks one value of field fd: a message's tree, or that an
// enum value is one Envoy defines.
func conformValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	switch fd.Kind() {
	case protoreflect.MessageKind:
		return conformMessage(v.Message(), path)
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByNumber(v.Enum()) == nil {
			return fmt.Errorf("%s: %d is not a value of %s", path, v.Enum(), envoyName(fd.Enum()))
		}
	}
	return nil
}

// unknownFields refuses the fields of m that the subset does not declare.
func unknownFields(m protoreflect.Message, path string) error {
	raw := m.GetUnknown()
	if len(raw) == 0 {
		return nil
	}
	var nums []protowire.Number
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			return fmt.Errorf("%s%s: %w", at(path), envoyName(m.Descriptor()), protowire.ParseError(n))
		}
		raw = raw[n:]
		n = protowire.ConsumeFieldValue(num, typ, raw)
		if n < 0 {
			return fmt.Errorf("%s%s: field %d: %w", at(path), envoyName(m.Descriptor()), num, protowire.ParseError(n))
		}
		raw = raw[n:]
		if !slices.Contains(nums, num) {
			nums = append(nums, num)
		}
	}
	slices.Sort(nums)
	name := envoyName(m.Descriptor())
	// A declared field lands here when its wire type is not the declared one.
	for _, n := range nums {
		if fd := m.Descriptor().Fields().ByNumber(n); fd != nil {
			return fmt.Errorf("%sfield %d (%s) of %s has the wrong wire type", at(path), n, fd.Name(), name)
		}
	}
	if len(nums) == 1 {
		return fmt.Errorf("%sfield %d of %s is not supported", at(path), nums[0], name)
	}
	s := make([]string, len(nums))
	for i, n := range nums {
		s[i] = fmt.Sprint(n)
	}
	return fmt.Errorf("%sfields %s of %s are not supported", at(path), strings.Join(s, ", "), name)
}

// at prefixes an error message with a non-empty path.
func at(path string) string {
	if path == "" {
		return ""
	}
	return path + ": "
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// members names a oneof by its fields in the subset: "socket_address" or
// "one of exact, prefix".
func members(od protoreflect.OneofDescriptor) string {
	var names []string
	for i := range od.Fields().Len() {
		names = append(names, string(od.Fields().Get(i).Name()))
	}
	if len(names) == 1 {
		return names[0]
	}
	return "one of " + strings.Join(names, ", ")
}

// constraint is a protoc-gen-validate rule of Envoy's API on one field, in
// the forms Envoy uses on the fields of the subset. Rules on a wrapper
// (google.protobuf.UInt32Value) apply to its value when it is set; rules on
// a oneof member only when it is the one set. Every enum's defined_only is
// implied: conform refuses undefined values of every enum.
type constraint struct {
	required bool                      // message: must be set
	minLen   int                       // string: at least this many characters
	maxBytes int                       // string: at most this many bytes (0: no limit)
	header   bool                      // string: HTTP_HEADER_NAME or _VALUE, not strict: no NUL, CR or LF (one regex)
	pattern  string                    // string: matches this RE2 expression
	minItems int                       // repeated: at least this many items
	maxItems int                       // repeated: at most this many items (0: no limit)
	items    *constraint               // repeated: each item
	keys     *constraint               // map: each key
	between  *bounds                   // unsigned integer: inclusive range
	within   *floatBounds              // double: inclusive range (NaN refused, which Envoy's check lets pass)
	notIn    []protoreflect.EnumNumber // enum: refused values
	isTrue   bool                      // bool: must be true
	positive bool                      // duration: valid and > 0
}

// bounds is an inclusive range of an unsigned integer.
type bounds struct{ min, max uint64 }

// floatBounds is an inclusive range of a double.
type floatBounds struct{ min, max float64 }

func (c constraint) check(m protoreflect.Message, fd protoreflect.FieldDescriptor, path string) error {
	switch {
	case fd.IsMap():
		if c.keys == nil {
			return nil
		}
		for _, k := range mapKeys(m.Get(fd).Map()) {
			if err := c.keys.value(fd.MapKey(), k.Value(), fmt.Sprintf("%s key %q", path, k.String())); err != nil {
				return err
			}
		}
		return nil
	case fd.IsList():
		l := m.Get(fd).List()
		if l.Len() < c.minItems {
			if c.minItems == 1 {
				return fmt.Errorf("%s: must not be empty", path)
			}
			return fmt.Errorf("%s: must have at least %d items", path, c.minItems)
		}
		if c.maxItems > 0 && l.Len() > c.maxItems {
			return fmt.Errorf("%s: %d items, at most %d allowed", path, l.Len(), c.maxItems)
		}
		if c.items != nil {
			for i := range l.Len() {
				if err := c.items.value(fd, l.Get(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
		return nil
	case fd.ContainingOneof() != nil && !m.Has(fd):
		return nil
	case fd.Message() != nil:
		if !m.Has(fd) {
			if c.required {
				return fmt.Errorf("%s: is required", path)
			}
			return nil
		}
		msg := m.Get(fd).Message()
		if c.positive {
			d, ok := msg.Interface().(*durationpb.Duration)
			if !ok {
				return fmt.Errorf("%s: not a google.protobuf.Duration", path)
			}
			if d.CheckValid() != nil {
				return fmt.Errorf("%s: invalid duration {seconds: %d, nanos: %d}", path, d.GetSeconds(), d.GetNanos())
			}
			if d.AsDuration() <= 0 {
				return fmt.Errorf("%s: must be positive", path)
			}
		}
		if c.between != nil { // a wrapper: the rule is its value's
			vf := msg.Descriptor().Fields().ByName("value")
			if vf == nil {
				return fmt.Errorf("%s: not a wrapper", path)
			}
			return c.value(vf, msg.Get(vf), path)
		}
		return nil
	default:
		return c.value(fd, m.Get(fd), path)
	}
}

// value checks a scalar.
func (c constraint) value(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		s := v.String()
		switch n := utf8.RuneCountInString(s); {
		case n < c.minLen && c.minLen == 1:
			return fmt.Errorf("%s: must not be empty", path)
		case n < c.minLen:
			return fmt.Errorf("%s: must be at least %d characters", path, c.minLen)
		case c.maxBytes > 0 && len(s) > c.maxBytes:
			return fmt.Errorf("%s: %d bytes, at most %d allowed", path, len(s), c.maxBytes)
		case c.header && strings.ContainsAny(s, "\x00\r\n"):
			return fmt.Errorf("%s: %q contains NUL, CR or LF", path, s)
		case c.pattern != "" && !compiledPattern(c.pattern).MatchString(s):
			return fmt.Errorf("%s: %q does not match %s", path, s, c.pattern)
		}
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		if b := c.between; b != nil && (v.Uint() < b.min || v.Uint() > b.max) {
			return fmt.Errorf("%s: %d is not in [%d, %d]", path, v.Uint(), b.min, b.max)
		}
	case protoreflect.DoubleKind:
		if b := c.within; b != nil && !(v.Float() >= b.min && v.Float() <= b.max) {
			return fmt.Errorf("%s: %v is not in [%v, %v]", path, v.Float(), b.min, b.max)
		}
	case protoreflect.EnumKind:
		if slices.Contains(c.notIn, v.Enum()) {
			name := fmt.Sprint(v.Enum())
			if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
				name = string(ev.Name())
			}
			return fmt.Errorf("%s: %s is not allowed", path, name)
		}
	case protoreflect.BoolKind:
		if c.isTrue && !v.Bool() {
			return fmt.Errorf("%s: must be true", path)
		}
	}
	return nil
}

// requiredOneofs are the oneofs of the subset that Envoy declares
// (validate.required) must be set, by Envoy's full name.
var requiredOneofs = map[string]bool{
	"envoy.config.core.v3.Address.address":                                                              true,
	"envoy.config.core.v3.ConfigSource.config_source_specifier":                                         true,
	"envoy.config.core.v3.DataSource.specifier":                                                         true,
	"envoy.config.core.v3.GrpcService.target_specifier":                                                 true,
	"envoy.config.core.v3.SocketAddress.port_specifier":                                                 true,
	"envoy.config.rbac.v3.Permission.rule":                                                              true,
	"envoy.config.rbac.v3.Principal.identifier":                                                         true,
	"envoy.config.route.v3.Route.action":                                                                true,
	"envoy.config.route.v3.RouteAction.cluster_specifier":                                               true,
	"envoy.config.route.v3.RouteMatch.path_specifier":                                                   true,
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.route_specifier": true,
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.cluster_specifier":                          true,
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.upstream_protocol_options":                  true,
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig.protocol_config":         true,
	"envoy.type.matcher.v3.PathMatcher.rule":                                                            true,
	"envoy.type.matcher.v3.StringMatcher.match_pattern":                                                 true,
}

// envoyRules are the protoc-gen-validate constraints Envoy's API declares on
// the fields of the subset the sidecar decodes, by Envoy's full field name,
// transcribed from Envoy's .proto annotations (TestEnvoyRulesComplete
// compares them with go-control-plane's descriptors).
var envoyRules = map[string]constraint{
	// envoy/config/core/v3
	"envoy.config.core.v3.CidrRange.address_prefix":           {minLen: 1},
	"envoy.config.core.v3.CidrRange.prefix_len":               {between: &bounds{0, 128}},
	"envoy.config.core.v3.ExtraSourceAddress.address":         {required: true},
	"envoy.config.core.v3.GrpcService.EnvoyGrpc.cluster_name": {minLen: 1},
	"envoy.config.core.v3.HeaderValue.key":                    {minLen: 1, maxBytes: 16384, header: true},
	"envoy.config.core.v3.HeaderValue.value":                  {maxBytes: 16384, header: true},
	"envoy.config.core.v3.HeaderValueOption.header":           {required: true},
	"envoy.config.core.v3.Metadata.filter_metadata":           {keys: &constraint{minLen: 1}},
	"envoy.config.core.v3.SocketAddress.address":              {minLen: 1},
	"envoy.config.core.v3.SocketAddress.port_value":           {between: &bounds{0, 65535}},
	"envoy.config.core.v3.TransportSocket.name":               {minLen: 1},

	// envoy/config/cluster/v3, envoy/config/endpoint/v3
	"envoy.config.cluster.v3.Cluster.name":                          {minLen: 1},
	"envoy.config.cluster.v3.Cluster.connect_timeout":               {positive: true},
	"envoy.config.cluster.v3.OutlierDetection.base_ejection_time":   {positive: true},
	"envoy.config.cluster.v3.OutlierDetection.interval":             {positive: true},
	"envoy.config.cluster.v3.OutlierDetection.max_ejection_percent": {between: &bounds{0, 100}},
	"envoy.config.cluster.v3.OutlierDetection.max_ejection_time":    {positive: true},
	"envoy.config.endpoint.v3.ClusterLoadAssignment.cluster_name":   {minLen: 1},

	// envoy/config/listener/v3
	"envoy.config.listener.v3.Filter.name":                       {minLen: 1},
	"envoy.config.listener.v3.FilterChainMatch.destination_port": {between: &bounds{1, 65535}},
	"envoy.config.listener.v3.ListenerFilter.name":               {minLen: 1},

	// envoy/config/route/v3
	"envoy.config.route.v3.DirectResponseAction.status":         {between: &bounds{200, 599}},
	"envoy.config.route.v3.HeaderMatcher.name":                  {minLen: 1, header: true},
	"envoy.config.route.v3.QueryParameterMatcher.name":          {minLen: 1, maxBytes: 1024},
	"envoy.config.route.v3.QueryParameterMatcher.string_match":  {required: true},
	"envoy.config.route.v3.RedirectAction.host_redirect":        {header: true},
	"envoy.config.route.v3.RedirectAction.path_redirect":        {header: true},
	"envoy.config.route.v3.RedirectAction.prefix_rewrite":       {header: true},
	"envoy.config.route.v3.RetryPolicy.RetryHostPredicate.name": {minLen: 1},
	"envoy.config.route.v3.Route.match":                         {required: true},
	"envoy.config.route.v3.Route.request_headers_to_add":        {maxItems: 1000},
	"envoy.config.route.v3.Route.request_headers_to_remove":     {items: &constraint{minLen: 1, header: true}},
	"envoy.config.route.v3.Route.response_headers_to_add":       {maxItems: 1000},
	"envoy.config.route.v3.Route.response_headers_to_remove":    {items: &constraint{minLen: 1, header: true}},
	"envoy.config.route.v3.RouteAction.cluster":                 {minLen: 1},
	"envoy.config.route.v3.RouteAction.host_rewrite_literal":    {header: true},
	"envoy.config.route.v3.RouteAction.prefix_rewrite":          {header: true},
	"envoy.config.route.v3.RouteMatch.path_separated_prefix":    {pattern: "^[^?#]+[^?#/]$"},
	"envoy.config.route.v3.VirtualHost.domains":                 {minItems: 1, items: &constraint{header: true}},
	"envoy.config.route.v3.VirtualHost.name":                    {minLen: 1},
	"envoy.config.route.v3.WeightedCluster.clusters":            {minItems: 1},

	// envoy/config/rbac/v3
	"envoy.config.rbac.v3.Permission.Set.rules":        {minItems: 1},
	"envoy.config.rbac.v3.Permission.any":              {isTrue: true},
	"envoy.config.rbac.v3.Permission.destination_port": {between: &bounds{0, 65535}},
	"envoy.config.rbac.v3.Policy.permissions":          {minItems: 1},
	"envoy.config.rbac.v3.Policy.principals":           {minItems: 1},
	"envoy.config.rbac.v3.Principal.Set.ids":           {minItems: 1},
	"envoy.config.rbac.v3.Principal.any":               {isTrue: true},

	// envoy/type/v3, envoy/type/matcher/v3
	"envoy.type.v3.Percent.value":                                {within: &floatBounds{0, 100}},
	"envoy.type.matcher.v3.PathMatcher.path":                     {required: true},
	"envoy.type.matcher.v3.RegexMatchAndSubstitute.pattern":      {required: true},
	"envoy.type.matcher.v3.RegexMatchAndSubstitute.substitution": {header: true},
	"envoy.type.matcher.v3.RegexMatcher.regex":                   {minLen: 1},
	"envoy.type.matcher.v3.StringMatcher.prefix":                 {minLen: 1},

	// envoy/extensions/transport_sockets/tls/v3
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext.default_validation_context":           {required: true},
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext.validation_context_sds_secret_config": {required: true},
	"envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig.name":                                                                       {minLen: 1},
	"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher.matcher":                                                              {required: true},
	"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher.san_type":                                                             {notIn: []protoreflect.EnumNumber{0}},
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext.sni":                                                                     {maxBytes: 255},

	// envoy/extensions/filters/network/*, envoy/extensions/access_loggers/grpc/v3
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.stat_prefix": {minLen: 1},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter.name":                   {minLen: 1},
	"envoy.extensions.filters.network.rbac.v3.RBAC.stat_prefix":                                     {minLen: 1},
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.stat_prefix":                            {minLen: 1},
	"envoy.extensions.access_loggers.grpc.v3.CommonGrpcAccessLogConfig.grpc_service":                {required: true},
	"envoy.extensions.access_loggers.grpc.v3.CommonGrpcAccessLogConfig.log_name":                    {minLen: 1},
	"envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig.common_config":                 {required: true},
	"envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig.common_config":                  {required: true},
}

// patterns caches the compiled string patterns of envoyRules.
var patterns sync.Map // string -> *regexp.Regexp

func compiledPattern(p string) *regexp.Regexp {
	if re, ok := patterns.Load(p); ok {
		return re.(*regexp.Regexp)
	}
	re, _ := patterns.LoadOrStore(p, regexp.MustCompile(p))
	return re.(*regexp.Regexp)
}

// mapKeys returns the keys of a map field in order, for deterministic errors.
func mapKeys(mp protoreflect.Map) []protoreflect.MapKey {
	var keys []protoreflect.MapKey
	mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	slices.SortFunc(keys, func(a, b protoreflect.MapKey) int { return strings.Compare(a.String(), b.String()) })
	return keys
}
