package injector

import (
	"slices"
	"strings"
	"testing"
)

// TestProxyTimeouts: the MeshConfig's proxyTimeouts reach weft-proxy as
// flags, a pod's weft.dev/proxy-*-timeout overrides them, nothing set
// passes nothing (weft-sidecar's defaults hold), and a value that is not
// a duration in range is refused (annotation) or left out (MeshConfig).
func TestProxyTimeouts(t *testing.T) {
	cfg := Config{ControlPlaneAddr: "cp:15012", TrustDomain: "cluster.local"}
	for _, tc := range []struct {
		name string
		ann  map[string]string
		mesh MeshSettings
		want []string
	}{
		{name: "nothing set"},
		{name: "mesh", mesh: MeshSettings{HandshakeTimeout: "5s", IdleTimeout: "30m", WriteTimeout: "90s"},
			want: []string{"--handshake-timeout=5s", "--idle-timeout=30m0s", "--write-timeout=1m30s"}},
		{name: "pod over mesh", ann: map[string]string{AnnotationProxyIdleTimeout: "2h"}, mesh: MeshSettings{IdleTimeout: "30m", WriteTimeout: "1m"},
			want: []string{"--idle-timeout=2h0m0s", "--write-timeout=1m0s"}},
		{name: "mesh value out of range left out", mesh: MeshSettings{IdleTimeout: "1ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseAnnotations(tc.ann, "info", OutboundUDPAllow)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range proxyArgs(cfg, o, tc.mesh) {
				if strings.Contains(a, "-timeout=") {
					got = append(got, a)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("timeout flags %q, want %q", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"10", "0s", "-1s", "1ms", "200h", "soon"} {
		if _, err := parseAnnotations(map[string]string{AnnotationProxyWriteTimeout: bad}, "info", OutboundUDPAllow); err == nil ||
			!strings.Contains(err.Error(), AnnotationProxyWriteTimeout) {
			t.Errorf("weft.dev/proxy-write-timeout %q: err %v, want a refusal naming it", bad, err)
		}
	}
}
