package xds

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	// The subset's message types, registered under "weft." + Envoy's name.
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/cluster/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/endpoint/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/listener/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/route/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/transport_sockets/tls/v3"
)

// subsetPrefix turns Envoy's full names into the subset's (proto package
// "weft." + Envoy's), so that both can be linked into one binary.
const subsetPrefix = "weft."

// envoyName is Envoy's full name of a subset descriptor: what errors say and
// what type URLs carry.
func envoyName(d protoreflect.Descriptor) string {
	return strings.TrimPrefix(string(d.FullName()), subsetPrefix)
}

// decode unmarshals resource a of a response of type t (an Envoy type URL,
// one of the contract's five) into the sidecar's subset of Envoy's message
// and checks it with [conform]: a field outside the subset, an undefined
// enum value or a value Envoy's validation refuses is an error naming the
// resource, the path, Envoy's message and, for unknown fields, the number.
func decode(t string, a *anypb.Any) (proto.Message, error) {
	if !slices.Contains(subscribeOrder, t) {
		return nil, fmt.Errorf("type %s is not supported", t)
	}
	if a.GetTypeUrl() != t {
		return nil, fmt.Errorf("a resource of type %s in a response of type %s", a.GetTypeUrl(), t)
	}
	m, err := subsetMessage(t)
	if err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return nil, fmt.Errorf("%s: %w", kindName(t), err)
	}
	if err := conform(m); err != nil {
		return nil, fmt.Errorf("%s %q: %w", kindName(t), resourceName(m), err)
	}
	return m, nil
}

// subsetMessage returns an empty subset message for an Envoy type URL
// ("type.googleapis.com/envoy.config.listener.v3.Listener" →
// weft.envoy.config.listener.v3.Listener).
func subsetMessage(typeURL string) (proto.Message, error) {
	name := messageName(typeURL)
	if !strings.HasPrefix(name, "envoy.") {
		return nil, fmt.Errorf("type %s is not one of Envoy's", name)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(subsetPrefix + name))
	if err != nil {
		return nil, fmt.Errorf("type %s is not in the sidecar's subset of Envoy's API", name)
	}
	return mt.New().Interface(), nil
}

// unpack decodes a typed_config into m, which must be its exact type (by
// Envoy's name), and checks it with [conform].
func unpack(a *anypb.Any, m proto.Message) error {
	want := envoyName(m.ProtoReflect().Descriptor())
	if got := typeName(a); got != want {
		return fmt.Errorf("typed_config type %q is not supported (want %s)", got, want)
	}
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return fmt.Errorf("typed_config %s: %w", want, err)
	}
	if err := conform(m); err != nil {
		return fmt.Errorf("typed_config %s: %w", want, err)
	}
	return nil
}

// typeName is the message name of an Any's type URL.
func typeName(a *anypb.Any) string { return messageName(a.GetTypeUrl()) }

// messageName is the message name of a type URL: what follows the last "/".
func messageName(typeURL string) string { return typeURL[strings.LastIndexByte(typeURL, '/')+1:] }
