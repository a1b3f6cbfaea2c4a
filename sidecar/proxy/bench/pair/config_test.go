package main

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Envoy's own types (go-control-plane), for protojson to read the
	// golden YAML and the typed_configs in it.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
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
	_ "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// The L7 pair must measure the configuration the control plane sends, not
// one made up for the benchmark: its client side is compared with the
// translator's golden output for an HTTP service port (client-http:
// server.demo:80) and its server side with the golden of the server pod of
// that port (server-v1-http: 8080), both read as the sidecar reads them
// (sidecar/xds.Build). Names are the benchmark's (server.demo → server.bench,
// ns/demo → ns/bench); what the pair leaves out is named below.

const goldenDir = "../../../../controlplane/xds/translate/testdata/golden"

// loadGolden reads one golden directory as the sidecar would receive it:
// Envoy's messages marshalled, decoded into the sidecar's subset types
// (registered as "weft." + Envoy's name), built into a model.Config.
func loadGolden(t *testing.T, name string) *model.Config {
	t.Helper()
	res := xds.Resources{}
	for typ, msgs := range testutil.XDSGolden(t, filepath.Join(goldenDir, name)) {
		envoyType, err := protoregistry.GlobalTypes.FindMessageByURL(typ)
		if err != nil {
			t.Fatal(err)
		}
		subsetType, err := protoregistry.GlobalTypes.FindMessageByName("weft." + envoyType.Descriptor().FullName())
		if err != nil {
			t.Fatal(err)
		}
		res[typ] = map[string]proto.Message{}
		for i, m := range msgs {
			wire, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			sub := subsetType.New().Interface()
			if err := proto.Unmarshal(wire, sub); err != nil {
				t.Fatalf("%s/%s item %d: %v", name, testutil.XDSGoldenFiles[typ], i, err)
			}
			res[typ][resourceName(sub)] = sub
		}
	}
	cfg, err := xds.Build(td, res)
	if err != nil {
		t.Fatalf("golden %s: %v", name, err)
	}
	return cfg
}

// resourceName is a resource's name (cluster_name for endpoints).
func resourceName(m proto.Message) string {
	r := m.ProtoReflect()
	for _, f := range []protoreflect.Name{"cluster_name", "name"} {
		if fd := r.Descriptor().Fields().ByName(f); fd != nil {
			return r.Get(fd).String()
		}
	}
	return ""
}

// sameAs fails unless got and the golden's want, as JSON, are equal once
// the golden's names are the benchmark's.
func sameAs(t *testing.T, what string, got, want any) {
	t.Helper()
	g, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	w, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	ws := strings.NewReplacer("server.demo", "server.bench", "/ns/demo/", "/ns/bench/").Replace(string(w))
	if string(g) != ws {
		t.Errorf("%s: the pair's\n%s\nthe translator's (golden, names replaced)\n%s", what, g, ws)
	}
}

func chain(t *testing.T, l *model.Listener, name string) (int, *model.FilterChain) {
	t.Helper()
	i := slices.IndexFunc(l.Chains, func(c *model.FilterChain) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("listener %s has no chain %s", l.Name, name)
	}
	return i, l.Chains[i]
}

func TestL7ClientConfigIsTheTranslators(t *testing.T) {
	golden := loadGolden(t, "client-http")
	const gsvc = "outbound|80|server.demo"
	got := l7ClientConfig(netip.MustParseAddrPort("127.0.0.1:15006"))

	_, gc := chain(t, got.Outbound, serviceCluster)
	_, wc := chain(t, golden.Outbound, gsvc)
	// The chain's match names the service's addresses: the benchmark's
	// service address, the golden's ClusterIP.
	gc, wc = clone(gc), clone(wc)
	gc.Match.Prefixes, wc.Match.Prefixes = nil, nil
	sameAs(t, "chain "+serviceCluster, gc, wc)
	sameAs(t, "route configuration "+serviceCluster, got.Routes[serviceCluster], golden.Routes[gsvc])
	sameAs(t, "cluster "+serviceCluster, got.Clusters[serviceCluster], golden.Clusters[gsvc])
}

func TestL7ServerConfigIsTheTranslators(t *testing.T) {
	golden := loadGolden(t, "server-v1-http")
	// The golden's port 8080 is http (HTTP/1.1 to the app); h2c (grpc)
	// differs in the cluster's HTTP field alone.
	for _, proto := range []model.HTTPProtocol{model.HTTP1, model.HTTP2} {
		got := l7ServerConfig(netip.MustParseAddrPort("127.0.0.1:8080"), proto)
		const name = "inbound|8080"
		hi, gh := chain(t, got.Inbound, name+"|h2")
		li, _ := chain(t, got.Inbound, name+"|tls")
		if hi > li {
			t.Errorf("the h2 chain (%d) must come before the L4 TLS chain (%d)", hi, li)
		}
		_, wh := chain(t, golden.Inbound, name+"|h2")
		// The golden's pod has AuthorizationPolicies; the pair has none (as
		// its L4 side: peers are checked against the trust domain only).
		wh = clone(wh)
		wh.RBAC, wh.HTTPRBAC = nil, nil
		sameAs(t, "chain "+name+"|h2", gh, wh)
		sameAs(t, "route configuration "+name, got.Routes[name], golden.Routes[name])
		// On loopback there is no pod address to deliver to as the original
		// destination: the pair's cluster is the app's static address (as
		// its L4 side's), the rest as the translator's.
		gcl, wcl := clone(got.Clusters[name]), clone(golden.Clusters[name])
		if gcl.HTTP != proto {
			t.Errorf("cluster %s: HTTP %v, want %v", name, gcl.HTTP, proto)
		}
		gcl.HTTP = wcl.HTTP
		gcl.Kind, gcl.StaticEndpoints, gcl.LB = wcl.Kind, wcl.StaticEndpoints, wcl.LB
		sameAs(t, "cluster "+name, gcl, wcl)
	}
}

// clone is a shallow copy of *v.
func clone[T any](v *T) *T {
	c := *v
	return &c
}

func TestAppProtocol(t *testing.T) {
	for in, want := range map[string]model.HTTPProtocol{"": model.HTTPNone, "tcp": model.HTTPNone, "http": model.HTTP1,
		"http2": model.HTTP2, "grpc": model.HTTP2} {
		if got, err := appProtocol(in); err != nil || got != want {
			t.Errorf("appProtocol(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := appProtocol("h2"); err == nil || !strings.Contains(err.Error(), `-app-protocol "h2"`) {
		t.Errorf("appProtocol(h2): %v", err)
	}
}
