package injector

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/api/names"
)

// Why probes are rewritten: the kubelet probes from the node's IP, so its
// connection to an app port is redirected to the proxy's inbound port
// 15006, which under STRICT refuses anything without a client certificate.
// The health port 15020 is excluded from capture, so the kubelet is told to
// ask weft-proxy there instead, at /app-health/<container>/<kind>; the proxy
// calls the app over loopback (never captured) exactly as the kubelet would
// have, and answers with the app's status code.
//
// What is rewritten:
//   - httpGet probes, named ports resolved against the container's ports.
//     A probe with an explicit host is left alone: it does not probe the
//     pod. A named port that resolves to nothing is left alone: the kubelet
//     reports the same error as without weft.
//   - grpc probes: they are plaintext gRPC from the node and would be
//     refused under STRICT like HTTP ones. The proxy runs the
//     grpc.health.v1 Check for the recorded port and service.
//
// What is left alone:
//   - tcpSocket probes: the redirected connect reaches the proxy's inbound
//     listener, which accepts before it looks at the connection, so the
//     probe keeps passing while the proxy runs. It no longer proves that
//     the app listens; it never proved more than that anyway. Users who
//     need the stronger check use an httpGet or exec probe.
//   - exec probes run inside the container and never touch the network.

// AppProbe is one original probe as recorded in the weft.dev/probes
// annotation, keyed by the path the kubelet now asks weft-proxy for. Ports
// are always numbers. The annotation is read by weft-proxy.
type AppProbe struct {
	HTTPGet        *corev1.HTTPGetAction `json:"httpGet,omitempty"`
	GRPC           *corev1.GRPCAction    `json:"grpc,omitempty"`
	TimeoutSeconds int32                 `json:"timeoutSeconds,omitempty"`
}

// AppHealthPath is where weft-proxy serves one app probe; kind is livez,
// readyz or startupz.
func AppHealthPath(container, kind string) string {
	return names.AppHealthPrefix + container + "/" + kind
}

// rewrittenProbe is the new probe of one app container: field is its JSON
// name in the container (for the patch).
type rewrittenProbe struct {
	field string
	probe *corev1.Probe
}

// rewriteProbes returns the container's probes to replace and records the
// originals in recorded.
func rewriteProbes(c *corev1.Container, recorded map[string]AppProbe) []rewrittenProbe {
	var out []rewrittenProbe
	for _, p := range []struct {
		field, kind string
		probe       *corev1.Probe
	}{
		{"livenessProbe", "livez", c.LivenessProbe},
		{"readinessProbe", "readyz", c.ReadinessProbe},
		{"startupProbe", "startupz", c.StartupProbe},
	} {
		orig, ok := appProbe(c, p.probe)
		if !ok {
			continue
		}
		path := AppHealthPath(c.Name, p.kind)
		recorded[path] = orig
		np := p.probe.DeepCopy()
		np.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromInt32(HealthPort), Scheme: corev1.URISchemeHTTP}}
		out = append(out, rewrittenProbe{field: p.field, probe: np})
	}
	return out
}

// appProbe is what weft-proxy must do for p, or false if p is left alone.
func appProbe(c *corev1.Container, p *corev1.Probe) (AppProbe, bool) {
	switch {
	case p == nil:
		return AppProbe{}, false
	case p.HTTPGet != nil:
		if p.HTTPGet.Host != "" {
			return AppProbe{}, false
		}
		port, ok := resolvePort(c, p.HTTPGet.Port)
		if !ok {
			return AppProbe{}, false
		}
		h := p.HTTPGet.DeepCopy()
		h.Port = intstr.FromInt32(port)
		if h.Scheme == "" {
			h.Scheme = corev1.URISchemeHTTP
		}
		return AppProbe{HTTPGet: h, TimeoutSeconds: p.TimeoutSeconds}, true
	case p.GRPC != nil:
		return AppProbe{GRPC: p.GRPC.DeepCopy(), TimeoutSeconds: p.TimeoutSeconds}, true
	}
	return AppProbe{}, false
}

// resolvePort turns a probe's port into a number, looking names up among
// the container's ports as the kubelet does.
func resolvePort(c *corev1.Container, port intstr.IntOrString) (int32, bool) {
	if port.Type == intstr.Int {
		return port.IntVal, port.IntVal > 0 && port.IntVal < 65536
	}
	for _, cp := range c.Ports {
		if cp.Name == port.StrVal && port.StrVal != "" {
			return cp.ContainerPort, cp.ContainerPort > 0 && cp.ContainerPort < 65536
		}
	}
	return 0, false
}
