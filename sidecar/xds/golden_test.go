package xds

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// goldenDir is where the control plane's translator writes its golden
// output: one directory per sidecar, one YAML list of protojson resources
// per type.
const goldenDir = "../../controlplane/xds/translate/testdata/golden"

// TestGoldenAccepted: the sidecar accepts the control plane's golden output
// whole, and it is complete.
func TestGoldenAccepted(t *testing.T) {
	dirs, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatalf("the translator's golden output: %v", err)
	}
	n := 0
	defer func() {
		if n == 0 {
			t.Errorf("no golden directory in %s", goldenDir)
		}
	}()
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		n++
		t.Run(d.Name(), func(t *testing.T) {
			for _, gs := range goldenSets(t, filepath.Join(goldenDir, d.Name())) {
				cfg, err := buildEnvoy(gs.envoy)
				if err != nil {
					t.Fatalf("%s: the sidecar would NACK: %v", gs.name, err)
				}
				if m := cfg.Missing(); gs.complete && len(m) > 0 {
					t.Errorf("%s: incomplete: missing %v", gs.name, m)
				}
			}
		})
	}
}

// goldenSet is a set of resources from a golden directory, as Build
// judges them.
type goldenSet struct {
	name     string
	envoy    envoySet
	complete bool // every resource a sidecar gets: nothing may be missing
}

// goldenSets reads a golden directory as the sets Build judges. A directory
// with every type of resource is one complete set. The translator's GAMMA
// goldens hold only what the routes change: their route configurations
// and maybe their listeners. With listeners, the directory is one set
// whose clusters and secrets are missing (they are the complete goldens'
// kind). Without, each in-mesh route configuration is one set: the l7
// builders' resources, whose outbound HTTP chain names it.
func goldenSets(t testing.TB, dir string) []goldenSet {
	t.Helper()
	s := loadGolden(t, dir)
	name := "golden/" + filepath.Base(dir)
	complete := true
	for typ := range testutil.XDSGoldenFiles {
		if _, ok := s[typ]; !ok {
			complete = false
		}
	}
	if complete || s[model.ListenerType] != nil {
		return []goldenSet{{name: name, envoy: s, complete: complete}}
	}
	var out []goldenSet
	for _, rcName := range slices.Sorted(maps.Keys(s[model.RouteType])) {
		if strings.HasPrefix(rcName, "egress|") {
			continue // the complete goldens have them
		}
		set := mesh{services: []string{"server.demo"}, httpEgress: true, l7: true}.envoy(t)
		l := set[model.ListenerType][model.OutboundListener].(*listenerv3.Listener)
		l.FilterChains[0].Filters = []*listenerv3.Filter{hcmFilter(t, rcName)}
		delete(set[model.RouteType], "outbound|80|server.demo")
		set[model.RouteType][rcName] = s[model.RouteType][rcName]
		out = append(out, goldenSet{name: name + "/" + rcName, envoy: set})
	}
	return out
}

// realRoots checks that the golden trust bundle holds real roots.
func realRoots(t testing.TB, s *tlsv3.Secret) {
	ca := s.GetValidationContext().GetTrustedCa()
	if ca == nil {
		return
	}
	if _, err := x509bundle.Parse(spiffeid.RequireTrustDomainFromString("cluster.local"), ca.GetInlineBytes()); err != nil {
		t.Errorf("secret %q: the golden trust bundle is not a real root: %v", s.GetName(), err)
	}
}

// loadGolden reads one golden directory into go-control-plane's types.
func loadGolden(t testing.TB, dir string) envoySet {
	t.Helper()
	res := envoySet{}
	for typ, msgs := range testutil.XDSGolden(t, dir) {
		res[typ] = map[string]proto.Message{}
		for _, m := range msgs {
			if s, ok := m.(*tlsv3.Secret); ok {
				realRoots(t, s)
			}
			res[typ][resourceName(m)] = m
		}
	}
	return res
}
