package envoy_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Envoy's API as go-control-plane generates it: the reference.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	_ "google.golang.org/genproto/googleapis/rpc/status"

	// The subset.
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/accesslog/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/cluster/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/endpoint/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/listener/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/rbac/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/config/route/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/data/accesslog/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/access_loggers/grpc/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/http/router/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/network/rbac/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/retry/host/previous_hosts/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/upstreams/http/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/google/rpc"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/service/accesslog/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/service/discovery/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/type/matcher/v3"
	_ "github.com/weftmesh/weft/sidecar/internal/envoy/type/v3"
)

const prefix = "weft."

// TestWireCompatible: every message, field and enum the subset declares is
// Envoy's, byte for byte on the wire: the same full name without "weft.",
// and per field the same number, name, kind, cardinality, packing, message
// or enum type and oneof; every enum has exactly Envoy's values.
func TestWireCompatible(t *testing.T) {
	var files int
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(fd.Package()), prefix) || !strings.HasPrefix(fd.Path(), "sidecar/internal/envoy/") {
			return true
		}
		files++
		for i := range fd.Messages().Len() {
			checkMessage(t, fd.Messages().Get(i))
		}
		for i := range fd.Enums().Len() {
			checkEnum(t, fd.Enums().Get(i))
		}
		return true
	})
	if files < 30 {
		t.Fatalf("only %d subset files registered: the imports above are incomplete", files)
	}
}

// envoy returns Envoy's descriptor of the subset's d.
func envoy(t *testing.T, d protoreflect.Descriptor) protoreflect.Descriptor {
	t.Helper()
	name := strings.TrimPrefix(string(d.FullName()), prefix)
	e, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		t.Errorf("%s: Envoy's API has no %s", d.ParentFile().Path(), name)
		return nil
	}
	return e
}

func checkMessage(t *testing.T, md protoreflect.MessageDescriptor) {
	t.Helper()
	if md.IsMapEntry() {
		return
	}
	e, _ := envoy(t, md).(protoreflect.MessageDescriptor)
	if e == nil {
		t.Errorf("%s is not a message of Envoy's", md.FullName())
		return
	}
	for i := range md.Fields().Len() {
		if err := sameField(md.Fields().Get(i), e); err != nil {
			t.Errorf("%s: %v", md.Fields().Get(i).FullName(), err)
		}
	}
	for i := range md.Messages().Len() {
		checkMessage(t, md.Messages().Get(i))
	}
	for i := range md.Enums().Len() {
		checkEnum(t, md.Enums().Get(i))
	}
}

func sameField(f protoreflect.FieldDescriptor, envoyMsg protoreflect.MessageDescriptor) error {
	e := envoyMsg.Fields().ByNumber(f.Number())
	if e == nil {
		return fmt.Errorf("Envoy's %s has no field %d", envoyMsg.FullName(), f.Number())
	}
	switch {
	case f.Name() != e.Name():
		return fmt.Errorf("field %d is %s in Envoy's API", f.Number(), e.Name())
	case f.Kind() != e.Kind():
		return fmt.Errorf("kind %s, Envoy's is %s", f.Kind(), e.Kind())
	case f.Cardinality() != e.Cardinality() || f.IsMap() != e.IsMap() || f.IsPacked() != e.IsPacked():
		return fmt.Errorf("cardinality %s (map %v, packed %v), Envoy's is %s (map %v, packed %v)",
			f.Cardinality(), f.IsMap(), f.IsPacked(), e.Cardinality(), e.IsMap(), e.IsPacked())
	case oneofName(f) != oneofName(e):
		return fmt.Errorf("in oneof %q, Envoy's in %q", oneofName(f), oneofName(e))
	}
	if f.IsMap() {
		if err := sameField(f.MapKey(), e.MapKey().ContainingMessage()); err != nil {
			return fmt.Errorf("map key: %w", err)
		}
		if err := sameField(f.MapValue(), e.MapValue().ContainingMessage()); err != nil {
			return fmt.Errorf("map value: %w", err)
		}
		return nil
	}
	if got, want := typeName(f), typeName(e); got != want {
		return fmt.Errorf("type %s, Envoy's is %s", got, want)
	}
	return nil
}

// typeName is the message or enum type of a field, as Envoy names it.
func typeName(f protoreflect.FieldDescriptor) string {
	switch {
	case f.Message() != nil:
		return strings.TrimPrefix(string(f.Message().FullName()), prefix)
	case f.Enum() != nil:
		return strings.TrimPrefix(string(f.Enum().FullName()), prefix)
	}
	return ""
}

func oneofName(f protoreflect.FieldDescriptor) string {
	if o := f.ContainingOneof(); o != nil && !o.IsSynthetic() {
		return string(o.Name())
	}
	return ""
}

// checkEnum: exactly Envoy's values, so that "defined" means the same.
func checkEnum(t *testing.T, ed protoreflect.EnumDescriptor) {
	t.Helper()
	e, _ := envoy(t, ed).(protoreflect.EnumDescriptor)
	if e == nil {
		t.Errorf("%s is not an enum of Envoy's", ed.FullName())
		return
	}
	for i := range e.Values().Len() {
		want := e.Values().Get(i)
		if got := ed.Values().ByNumber(want.Number()); got == nil || got.Name() != want.Name() {
			t.Errorf("%s: Envoy's value %s = %d is missing", ed.FullName(), want.Name(), want.Number())
		}
	}
	if ed.Values().Len() != e.Values().Len() {
		t.Errorf("%s has %d values, Envoy's %d", ed.FullName(), ed.Values().Len(), e.Values().Len())
	}
}
