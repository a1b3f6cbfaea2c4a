package injector

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// pointer escapes one JSON-Pointer (RFC 6901) segment: weft.dev/injected
// becomes weft.dev~1injected.
func pointer(segment string) string {
	return strings.ReplaceAll(strings.ReplaceAll(segment, "~", "~0"), "/", "~1")
}

// Injection is the value of the weft.dev/injected annotation: what this
// version of the injector put into the pod. weftctl check compares it with
// the running injector to find pods to restart after an upgrade.
type Injection struct {
	Version         string   `json:"version"`
	Image           string   `json:"image"`
	Native          bool     `json:"native"`
	Containers      []string `json:"containers"`
	ProbesRewritten int      `json:"probesRewritten"`
}

// inject validates pod and returns the patch that injects it. Operations
// are ordered so that every index refers to the document as it is at that
// point: app containers are patched before weft-proxy may be inserted in
// front of them.
func (i *Injector) inject(pod *corev1.Pod) ([]patchOp, Injection, error) {
	opts, err := parseAnnotations(pod.Annotations, i.cfg.ProxyLogLevel, i.outboundUDP())
	if err != nil {
		return nil, Injection{}, err
	}
	if err := checkPod(pod); err != nil {
		return nil, Injection{}, err
	}
	var ops []patchOp
	add := func(path string, v any) { ops = append(ops, patchOp{Op: "add", Path: path, Value: v}) }
	// addAll adds items to the array at path: the whole array when it is
	// absent, null or empty, otherwise one append ("/-") per item.
	addAll := func(path string, have int, items ...any) {
		if have == 0 {
			add(path, items)
			return
		}
		for _, it := range items {
			add(path+"/-", it)
		}
	}

	probes := map[string]AppProbe{}
	for n := range pod.Spec.Containers {
		c := &pod.Spec.Containers[n]
		base := "/spec/containers/" + strconv.Itoa(n)
		for _, rp := range rewriteProbes(c, probes) {
			ops = append(ops, patchOp{Op: "replace", Path: base + "/" + rp.field, Value: rp.probe})
		}
		addAll(base+"/volumeMounts", len(c.VolumeMounts), appMount)
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == SocketEnv }) {
			addAll(base+"/env", len(c.Env), corev1.EnvVar{Name: SocketEnv, Value: SocketValue})
		}
	}

	initC, proxy := i.initContainer(opts), i.proxyContainer(opts)
	switch {
	case len(pod.Spec.InitContainers) == 0 && i.cfg.NativeSidecar:
		add("/spec/initContainers", []corev1.Container{initC, proxy})
	case len(pod.Spec.InitContainers) == 0:
		add("/spec/initContainers", []corev1.Container{initC})
	default:
		add("/spec/initContainers/0", initC)
		if i.cfg.NativeSidecar {
			add("/spec/initContainers/1", proxy)
		}
	}
	if !i.cfg.NativeSidecar {
		add("/spec/containers/0", proxy)
	}
	vols := volumes()
	items := make([]any, len(vols))
	for n := range vols {
		items[n] = vols[n]
	}
	addAll("/spec/volumes", len(pod.Spec.Volumes), items...)

	summary := Injection{Version: i.cfg.Version, Image: i.cfg.SidecarImage, Native: i.cfg.NativeSidecar,
		Containers: []string{InitName, ProxyName}, ProbesRewritten: len(probes)}
	ann := map[string]string{}
	b, err := json.Marshal(summary)
	if err != nil {
		return nil, Injection{}, fmt.Errorf("injector: encode %s: %w", AnnotationInjected, err)
	}
	ann[AnnotationInjected] = string(b)
	if len(probes) > 0 {
		b, err := json.Marshal(probes) // map keys are sorted: stable output
		if err != nil {
			return nil, Injection{}, fmt.Errorf("injector: encode %s: %w", AnnotationProbes, err)
		}
		ann[AnnotationProbes] = string(b)
	}
	if len(pod.Annotations) == 0 {
		add("/metadata/annotations", ann)
	} else {
		for _, k := range slices.Sorted(maps.Keys(ann)) {
			add("/metadata/annotations/"+pointer(k), ann[k]) // add replaces an existing key
		}
	}
	return ops, summary, nil
}

// mountsReserved refuses a container of the pod's own that mounts one of
// the volumes weft adds by name. Above all weft-token: the pod's projected
// token is the credential that tells the sidecar's control-plane streams
// from the app's (which holds the SVID), so it is mounted into weft-proxy
// only; a container naming the volume would get it once the patch adds
// the volume (the API server validates after mutation).
func mountsReserved(c corev1.Container) error {
	for _, m := range c.VolumeMounts {
		if m.Name == TokenVolume || m.Name == BundleVolume || m.Name == WorkloadVolume {
			return refusal(fmt.Sprintf("injector: container %s mounts volume %s, which weft reserves (only weft-proxy may mount it)", c.Name, m.Name))
		}
	}
	return nil
}

// checkPod refuses pods that weft cannot mesh correctly: the API server
// would reject some of them after the patch with a less helpful message,
// and others would run with a hole in the mesh.
func checkPod(pod *corev1.Pod) error {
	if len(pod.Spec.Containers) == 0 {
		return refusal("injector: the pod has no containers")
	}
	if hasContainer(pod, InitName) {
		return refusal(fmt.Sprintf("injector: the pod already has a container named %s, a name weft reserves", InitName))
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == TokenVolume || v.Name == BundleVolume || v.Name == WorkloadVolume {
			return refusal(fmt.Sprintf("injector: the pod already has a volume named %s, a name weft reserves", v.Name))
		}
		// The weft-ca token is weft-proxy's alone (mountsReserved): a
		// volume of the pod's own that projects one under another name
		// would hand it to the app.
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if t := src.ServiceAccountToken; t != nil && t.Audience == TokenAudience {
					return refusal(fmt.Sprintf("injector: volume %s projects a ServiceAccount token for audience %s, which only weft-proxy may hold", v.Name, TokenAudience))
				}
			}
		}
	}
	var podUID *int64
	if pod.Spec.SecurityContext != nil {
		podUID = pod.Spec.SecurityContext.RunAsUser
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		uid := podUID
		if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
			uid = c.SecurityContext.RunAsUser
		}
		if uid != nil && *uid == ProxyUID {
			return refusal(fmt.Sprintf("injector: container %s runs as UID %d, the proxy's UID, whose traffic is not captured: "+
				"it would bypass mTLS and egress policy", c.Name, ProxyUID))
		}
		for _, p := range c.Ports {
			if slices.Contains(reservedPorts, p.ContainerPort) {
				return refusal(fmt.Sprintf("injector: container %s declares port %d, which weft-proxy uses (reserved: %v)",
					c.Name, p.ContainerPort, reservedPorts))
			}
		}
		if err := mountsReserved(c); err != nil {
			return err
		}
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(m.MountPath+"/", "/var/run/secrets/weft/") {
				return refusal(fmt.Sprintf("injector: container %s mounts %s, under /var/run/secrets/weft/ which weft reserves",
					c.Name, m.MountPath))
			}
		}
	}
	return nil
}
