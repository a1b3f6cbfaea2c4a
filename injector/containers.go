package injector

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/api/names"
)

// Names, ports and paths of what is injected (docs/architecture.md, "Names,
// ports and paths": "Ports" and "Inside an injected pod"). What the sidecar
// reads too is api/names'.
const (
	InitName      = "weft-init"
	ProxyName     = names.ProxyContainer
	SidecarBinary = "/usr/local/bin/weft-sidecar"

	AdminPort    = names.SidecarAdminPort // 127.0.0.1 only
	OutboundPort = names.SidecarOutboundPort
	InboundPort  = names.SidecarInboundPort
	HealthPort   = names.SidecarHealthPort // on the pod IP, excluded from capture
	ProxyUID     = 1337
	ReadyPath    = names.SidecarReadyPath

	TokenVolume    = "weft-token"
	TokenAudience  = names.TokenAudience
	TokenDir       = names.TokenDir             // file "token"
	BundleVolume   = names.TrustBundleConfigMap // the ConfigMap of the same name
	BundleKey      = names.TrustBundleKey
	BundleDir      = names.BundleDir
	WorkloadVolume = "weft-workload-api"
	WorkloadDir    = names.WorkloadDir // socket "socket"

	// SocketEnv tells SPIFFE libraries (go-spiffe, java-spiffe, py-spiffe)
	// in the app containers where the Workload API is.
	SocketEnv = "SPIFFE_ENDPOINT_SOCKET"
	// ProbesEnv hands weft-proxy the weft.dev/probes annotation.
	ProbesEnv   = names.AppProbesEnv
	SocketValue = "unix://" + names.WorkloadSocket
)

// tokenSeconds is the projected token's lifetime; the kubelet refreshes it
// at 80%.
const tokenSeconds = 3600

// reservedPorts are the sidecar's ports in the pod's network namespace.
var reservedPorts = []int32{AdminPort, OutboundPort, InboundPort, HealthPort}

// initContainer is weft-init: it installs the capture rules and exits. It
// runs as root with NET_ADMIN and NET_RAW only: enough to program
// nftables/iptables in the pod's network namespace and nothing else.
func (i *Injector) initContainer(o options) corev1.Container {
	return corev1.Container{
		Name:            InitName,
		Image:           i.cfg.SidecarImage,
		ImagePullPolicy: i.cfg.PullPolicy,
		Command:         []string{SidecarBinary, "init"},
		Args: []string{
			"--inbound-port=" + strconv.Itoa(InboundPort),
			"--outbound-port=" + strconv.Itoa(OutboundPort),
			"--proxy-uid=" + strconv.Itoa(ProxyUID),
			// Every inbound port, not only the declared containerPorts:
			// declaring a port is optional, and an undeclared one left
			// uncaptured would be reachable in plaintext under STRICT.
			"--include-inbound-ports=*",
			"--exclude-inbound-ports=" + strings.Join(o.excludeInboundPorts, ","),
			"--exclude-outbound-ports=" + strings.Join(o.excludeOutboundPorts, ","),
			"--exclude-outbound-cidrs=" + strings.Join(o.excludeOutboundCIDRs, ","),
			"--outbound-udp=" + o.outboundUDP,
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			RunAsUser:                ptr.To[int64](0),
			RunAsNonRoot:             ptr.To(false),
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// proxyContainer is weft-proxy. As a native sidecar it is an init
// container with restartPolicy Always: the kubelet starts the next
// container only once its startup probe passes, and does not wait for it
// when the app containers have finished (so Jobs complete).
func (i *Injector) proxyContainer(o options) corev1.Container {
	ready := func(period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: ReadyPath, Port: intstr.FromInt32(HealthPort), Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 1,
		}
	}
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	c := corev1.Container{
		Name:            ProxyName,
		Image:           i.cfg.SidecarImage,
		ImagePullPolicy: i.cfg.PullPolicy,
		Command:         []string{SidecarBinary},
		Args:            proxyArgs(i.cfg, o, i.mesh()),
		Env: []corev1.EnvVar{
			fieldEnv(names.PodNameEnv, "metadata.name"),
			fieldEnv(names.PodNamespaceEnv, "metadata.namespace"),
			fieldEnv("POD_IP", "status.podIP"),
			fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
			// The app's original probes, which weft-proxy runs for the
			// kubelet on /app-health/...; empty when none were rewritten.
			fieldEnv(ProbesEnv, "metadata.annotations['"+AnnotationProbes+"']"),
		},
		Ports: []corev1.ContainerPort{{Name: "weft-health", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP}},
		// Up to 5 minutes to obtain the first SVID, polled every second so
		// that the app starts as soon as the proxy is ready.
		StartupProbe:   ready(1, 300),
		ReadinessProbe: ready(5, 3),
		Resources:      i.proxyResources(o),
		VolumeMounts: []corev1.VolumeMount{
			{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
			{Name: BundleVolume, MountPath: BundleDir, ReadOnly: true},
			{Name: WorkloadVolume, MountPath: WorkloadDir},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To[int64](ProxyUID),
			RunAsGroup:               ptr.To[int64](ProxyUID),
			RunAsNonRoot:             ptr.To(true),
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if i.cfg.NativeSidecar {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	}
	return c
}

// proxyResources are the configured defaults, with weft.dev/proxy-cpu and
// weft.dev/proxy-memory each setting both the request and the limit of
// their resource: an explicit size is a guarantee (Guaranteed-style for
// that resource), not a hint.
func (i *Injector) proxyResources(o options) corev1.ResourceRequirements {
	r := *i.cfg.ProxyResources.DeepCopy()
	set := func(name corev1.ResourceName, q *resource.Quantity) {
		if q == nil {
			return
		}
		if r.Requests == nil {
			r.Requests = corev1.ResourceList{}
		}
		if r.Limits == nil {
			r.Limits = corev1.ResourceList{}
		}
		r.Requests[name], r.Limits[name] = *q, *q
	}
	set(corev1.ResourceCPU, o.cpu)
	set(corev1.ResourceMemory, o.memory)
	return r
}

// volumes are the projected token (for the certificate service), the trust
// bundle (to verify the control plane before the first SVID) and the
// memory-backed directory holding the Workload API socket.
func volumes() []corev1.Volume {
	return []corev1.Volume{
		{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: TokenAudience, ExpirationSeconds: ptr.To[int64](tokenSeconds), Path: "token"}}},
		}}},
		{Name: BundleVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: BundleVolume},
			Items:                []corev1.KeyToPath{{Key: BundleKey, Path: BundleKey}},
		}}},
		{Name: WorkloadVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Mi"))}}},
	}
}

// appMount gives an app container the Workload API socket.
var appMount = corev1.VolumeMount{Name: WorkloadVolume, MountPath: WorkloadDir, ReadOnly: true}

// proxyArgs are weft-proxy's arguments. A proxy timeout is passed when the
// pod's annotation or else the MeshConfig's proxyTimeouts sets it (the
// MeshConfig's value is checked here: one the CRD let through but that is
// not a positive duration is left out, and weft-sidecar's default holds).
func proxyArgs(cfg Config, o options, mesh MeshSettings) []string {
	args := []string{"run", "--control-plane=" + cfg.ControlPlaneAddr, "--trust-domain=" + cfg.TrustDomain, "--log-level=" + o.logLevel}
	if o.pprof {
		args = append(args, "--pprof")
	}
	if o.xdsDestinations != "" {
		args = append(args, "--xds-destinations="+o.xdsDestinations)
	}
	for _, t := range []struct{ flag, pod, mesh string }{
		{"handshake-timeout", o.handshakeTimeout, mesh.HandshakeTimeout},
		{"idle-timeout", o.idleTimeout, mesh.IdleTimeout},
		{"write-timeout", o.writeTimeout, mesh.WriteTimeout},
	} {
		v := t.pod
		if v == "" {
			v, _ = parseTimeout(t.mesh)
		}
		if v != "" {
			args = append(args, "--"+t.flag+"="+v)
		}
	}
	return args
}
