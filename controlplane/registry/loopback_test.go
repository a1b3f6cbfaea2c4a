package registry

import (
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/controlplane/mesh"
)

// TestInboundLoopbackPorts: weft.dev/inbound-loopback-ports becomes the
// workload's InboundLoopbackPorts, sorted and unique; a value the injector
// would refuse opens no port to loopback.
func TestInboundLoopbackPorts(t *testing.T) {
	for _, tc := range []struct {
		value string
		set   bool
		want  []uint16
	}{
		{"", false, nil},
		{"", true, nil},
		{"8080", true, []uint16{8080}},
		{" 9090, 8080 ,9090", true, []uint16{8080, 9090}},
		{"8080,", true, nil},
		{"8080,http", true, nil},
		{"0", true, nil},
		{"65536", true, nil},
		{"*", true, nil},
	} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
		if tc.set {
			p.Annotations = map[string]string{AnnotationInboundLoopbackPorts: tc.value}
		}
		if got := workload(p, &ids{cache: map[mesh.Key]spiffeid.ID{}}).InboundLoopbackPorts; !slices.Equal(got, tc.want) {
			t.Errorf("%q: InboundLoopbackPorts %v, want %v", tc.value, got, tc.want)
		}
	}
}
