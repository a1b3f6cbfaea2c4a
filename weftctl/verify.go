package weftctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	adminapi "github.com/weftmesh/weft/api/admin"
	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/injector"
)

// Verdicts of weftctl verify, per pod.
const (
	verdictEncrypted    = "ENCRYPTED"
	verdictNotEncrypted = "NOT ENCRYPTED"
	verdictUnverified   = "UNVERIFIED"
)

// verifyReport is `weftctl verify -o json|yaml`.
type verifyReport struct {
	Namespace   string       `json:"namespace"`
	Probe       bool         `json:"probe"`
	Pods        []podVerify  `json:"pods"`
	Connections []connReport `json:"connections"`
	Encrypted   bool         `json:"encrypted"`
}

type podVerify struct {
	Pod            string          `json:"pod"`
	IP             string          `json:"ip"`
	Sidecar        bool            `json:"sidecar"`
	SidecarVersion string          `json:"sidecarVersion,omitempty"`
	Handshakes     *handshakeStats `json:"handshakes,omitempty"`
	Probes         []portProbe     `json:"probes,omitempty"`
	Verdict        string          `json:"verdict"`
	Reason         string          `json:"reason"`
	Errors         []string        `json:"errors,omitempty"`
}

// handshakeStats are a sidecar's cumulative counters: connections are
// often gone by the time anyone looks, the counters remain.
type handshakeStats struct {
	Inbound  int64 `json:"inbound"`
	Outbound int64 `json:"outbound"`
	// RefusedPlaintext counts inbound connections refused for not being
	// TLS (the probe's included).
	RefusedPlaintext int64 `json:"refusedPlaintext"`
	Failed           int64 `json:"failed"`
}

type portProbe struct {
	Port int `json:"port"`
	probeResult
}

// connReport is one live connection as one sidecar reports it.
type connReport struct {
	ReportedBy       string     `json:"reportedBy"`
	Direction        string     `json:"direction"`
	Peer             string     `json:"peer"` // a pod name when known
	PeerAddr         string     `json:"peerAddr"`
	MTLS             bool       `json:"mtls"`
	PeerSPIFFEID     string     `json:"peerSpiffeId,omitempty"`
	TLSVersion       string     `json:"tlsVersion,omitempty"`
	Cipher           string     `json:"cipher,omitempty"`
	PeerCertNotAfter *time.Time `json:"peerCertNotAfter,omitempty"`
	BytesIn          int64      `json:"bytesIn"`
	BytesOut         int64      `json:"bytesOut"`
}

type verifyOptions struct {
	noProbe bool
}

func newVerify(g *globals) *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify [POD_OR_DEPLOYMENT...]",
		Short: "Prove from live state that pod-to-pod traffic is encrypted",
		Long: `For every running pod of a namespace (or the named pods or Deployments),
verify reports:

  - the live connections each sidecar holds, as it reports them on its admin
    port (peer SPIFFE ID, TLS version, cipher, peer certificate expiry), and
    the sidecar's cumulative mTLS handshake counters, since connections are
    often closed by the time anyone looks;
  - an active plaintext probe: weftctl opens TCP to the pod IP at each
    declared container port and sends "GET / HTTP/1.1". A STRICT sidecar
    must close the connection without an HTTP answer.

Each pod is ENCRYPTED, NOT ENCRYPTED (no sidecar, or plaintext answered) or
UNVERIFIED (the probe could not tell). The probe needs a network path from
where weftctl runs to the pod IPs (run it on a node, or in a pod outside the
mesh); without one it reports "probe skipped" and verify cannot claim STRICT.
--no-probe skips it on purpose and relies on the sidecars alone.

Exits non-zero when any pod is not ENCRYPTED.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.env(cmd.Context())
			if err != nil {
				return err
			}
			r, err := buildVerify(cmd.Context(), e, o, args)
			if err != nil {
				return err
			}
			fail := func() error {
				if r.Encrypted {
					return nil
				}
				return errFailed{"verify: not everything is encrypted"}
			}
			if ok, err := printStructured(g.out, g.output, r); ok || err != nil {
				if err != nil {
					return err
				}
				return fail()
			}
			printVerify(g, e, r)
			return fail()
		},
	}
	cmd.Flags().BoolVar(&o.noProbe, "no-probe", false, "skip the plaintext probe (verify then rests on the sidecars' own reports)")
	return cmd
}

// verifyPods resolves the pods to verify: the named pods or Deployments,
// or every running pod of the namespace.
func verifyPods(ctx context.Context, e *env, args []string) ([]corev1.Pod, []corev1.Pod, error) {
	all, err := e.kube.CoreV1().Pods(e.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("weftctl verify: list pods in %s: %w", e.namespace, err)
	}
	running := func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil }
	var out []corev1.Pod
	if len(args) == 0 {
		for _, p := range all.Items {
			if running(&p) {
				out = append(out, p)
			}
		}
		if len(out) == 0 {
			return nil, nil, fmt.Errorf("weftctl verify: no running pods in namespace %s", e.namespace)
		}
		return out, all.Items, nil
	}
	for _, a := range args {
		name := strings.TrimPrefix(strings.TrimPrefix(a, "pod/"), "deployment/")
		if p, err := e.kube.CoreV1().Pods(e.namespace).Get(ctx, name, metav1.GetOptions{}); err == nil && !strings.HasPrefix(a, "deployment/") {
			out = append(out, *p)
			continue
		} else if err != nil && !apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("weftctl verify: pod %s/%s: %w", e.namespace, name, err)
		}
		d, err := e.kube.AppsV1().Deployments(e.namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("weftctl verify: %q is neither a pod nor a Deployment in %s", a, e.namespace)
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			return nil, nil, fmt.Errorf("weftctl verify: deployment %s: %w", name, err)
		}
		n := 0
		for _, p := range all.Items {
			if running(&p) && sel.Matches(labels.Set(p.Labels)) {
				out = append(out, p)
				n++
			}
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("weftctl verify: deployment %s/%s has no running pods", e.namespace, name)
		}
	}
	return out, all.Items, nil
}

func buildVerify(ctx context.Context, e *env, o verifyOptions, args []string) (*verifyReport, error) {
	pods, all, err := verifyPods(ctx, e, args)
	if err != nil {
		return nil, err
	}
	byIP := map[string]string{}
	for _, p := range all {
		if p.Status.PodIP != "" && !p.Spec.HostNetwork {
			byIP[p.Status.PodIP] = p.Name
		}
	}
	selected := map[string]bool{}
	for _, p := range pods {
		selected[p.Name] = true
	}
	r := &verifyReport{Namespace: e.namespace, Probe: !o.noProbe, Encrypted: true}
	for i := range pods {
		p := &pods[i]
		v := podVerify{Pod: p.Name, IP: p.Status.PodIP, Sidecar: hasSidecar(p)}
		var live []adminapi.ConnInfo
		if v.Sidecar {
			v.SidecarVersion = injectedVersion(p)
			// Connections first: the probe's own connection must not be
			// among them.
			b, err := e.admin.podGet(ctx, p, sidecarAdminPort, adminapi.ConnectionsPath)
			var body adminapi.Connections
			if err == nil {
				err = json.Unmarshal(b, &body)
			}
			if err != nil {
				v.Errors = append(v.Errors, "connections: "+err.Error())
			}
			live = body.Connections
			for _, c := range live {
				cr := connReport{ReportedBy: p.Name, Direction: c.Direction, MTLS: c.MTLS, BytesIn: c.BytesIn, BytesOut: c.BytesOut}
				if ti := c.TLSInfo; ti != nil {
					cr.PeerSPIFFEID, cr.TLSVersion, cr.Cipher = ti.PeerID, ti.Version, ti.Cipher
					if !ti.PeerNotAfter.IsZero() {
						t := ti.PeerNotAfter
						cr.PeerCertNotAfter = &t
					}
				}
				cr.PeerAddr = c.Source
				if c.Direction == "outbound" {
					cr.PeerAddr = c.Destination
					if c.Upstream != "" {
						cr.PeerAddr = c.Upstream
					}
				}
				host, _, _ := net.SplitHostPort(cr.PeerAddr)
				cr.Peer = byIP[host]
				if len(args) > 1 && !selected[cr.Peer] {
					continue // only the connections between the named workloads
				}
				r.Connections = append(r.Connections, cr)
			}
		}
		if !o.noProbe && p.Status.PodIP != "" && !p.Spec.HostNetwork {
			for _, port := range probePorts(p) {
				res := e.probe(ctx, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port)))
				v.Probes = append(v.Probes, portProbe{Port: port, probeResult: res})
			}
		}
		if v.Sidecar {
			b, err := e.admin.podGet(ctx, p, sidecarHealthPort, "/metrics")
			if err != nil {
				v.Errors = append(v.Errors, "metrics: "+err.Error())
			} else {
				v.Handshakes = handshakes(b)
			}
		}
		v.Verdict, v.Reason = verdict(p, &v, live, o.noProbe)
		if v.Verdict != verdictEncrypted {
			r.Encrypted = false
		}
		r.Pods = append(r.Pods, v)
	}
	return r, nil
}

// probePorts are the declared TCP ports of the pod's app containers.
func probePorts(p *corev1.Pod) []int {
	var ports []int
	for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		if c.Name == injector.ProxyName || c.Name == injector.InitName {
			continue
		}
		for _, cp := range c.Ports {
			if (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) && !slices.Contains(ports, int(cp.ContainerPort)) {
				ports = append(ports, int(cp.ContainerPort))
			}
		}
	}
	slices.Sort(ports)
	return ports
}

func handshakes(metrics []byte) *handshakeStats {
	get := func(name string, match map[string]string) int64 {
		v, _ := metricValue(metrics, name, match)
		return int64(v)
	}
	return &handshakeStats{
		Inbound:          get(adminapi.TLSHandshakesMetric, map[string]string{"direction": "inbound"}),
		Outbound:         get(adminapi.TLSHandshakesMetric, map[string]string{"direction": "outbound"}),
		RefusedPlaintext: get(adminapi.HandshakeFailuresMetric, map[string]string{"direction": "inbound", "reason": adminapi.ReasonNotTLS}),
		Failed:           get(adminapi.HandshakeFailuresMetric, nil),
	}
}

// injectedVersion is the weft version the injector recorded on the pod.
func injectedVersion(p *corev1.Pod) string {
	var inj injector.Injection
	if err := json.Unmarshal([]byte(p.Annotations[names.AnnotationInjected]), &inj); err != nil || inj.Version == "" {
		return "unknown"
	}
	return inj.Version
}

// verdict decides one pod from what verify saw, with the reason in words.
func verdict(p *corev1.Pod, v *podVerify, live []adminapi.ConnInfo, noProbe bool) (string, string) {
	var answered, refused, unclear []string
	for _, pr := range v.Probes {
		s := fmt.Sprintf(":%d %s", pr.Port, pr.Detail)
		switch pr.Outcome {
		case probeAnswered:
			answered = append(answered, s)
		case probeRefused:
			refused = append(refused, fmt.Sprintf(":%d", pr.Port))
		default:
			unclear = append(unclear, s)
		}
	}
	if !v.Sidecar {
		why := "no weft sidecar: " + noSidecarReason(p)
		if len(answered) > 0 {
			why += "; " + strings.Join(answered, "; ")
		}
		return verdictNotEncrypted, why
	}
	if len(answered) > 0 {
		why := "the sidecar let plaintext through (PERMISSIVE mode"
		if p.Annotations[injector.AnnotationExcludeInboundPorts] != "" {
			why += ", or a port excluded by " + injector.AnnotationExcludeInboundPorts
		}
		return verdictNotEncrypted, why + "): " + strings.Join(answered, "; ")
	}
	for _, c := range live {
		if c.Direction == "inbound" && !c.MTLS {
			return verdictNotEncrypted, "live plaintext inbound connection from " + c.Source + " to " + c.Destination
		}
	}
	if !sidecarReady(p) {
		return verdictUnverified, "the sidecar is not ready: traffic to this pod is not served"
	}
	hs := ""
	if h := v.Handshakes; h != nil {
		hs = fmt.Sprintf("; %d mTLS handshakes in, %d out", h.Inbound, h.Outbound)
	}
	switch {
	case noProbe:
		return verdictEncrypted, "sidecar running" + hs + " (plaintext probe disabled: STRICT not proven)"
	case len(unclear) > 0:
		return verdictUnverified, strings.Join(unclear, "; ") + ": verify cannot claim STRICT (rerun where pod IPs are reachable, or --no-probe)"
	case len(v.Probes) == 0:
		return verdictEncrypted, "sidecar running, no declared TCP port to probe" + hs
	default:
		return verdictEncrypted, "plaintext refused on " + strings.Join(refused, ", ") + hs
	}
}

// sidecarReady reports whether weft-proxy's container is ready (a pod
// without container statuses, as in a fake clientset, counts as ready).
func sidecarReady(p *corev1.Pod) bool {
	for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		if cs.Name == injector.ProxyName {
			return cs.Ready
		}
	}
	return true
}

// noSidecarReason says in a few words why a pod runs without a sidecar.
func noSidecarReason(p *corev1.Pod) string {
	switch {
	case p.Annotations[injector.AnnotationInject] == injector.InjectDisabled || p.Labels[injector.AnnotationInject] == injector.InjectDisabled:
		return "opted out (weft.dev/inject: disabled)"
	case p.Spec.HostNetwork:
		return "hostNetwork pod"
	default:
		return "not injected (weftctl explain-injection " + p.Name + " -n " + p.Namespace + " says why)"
	}
}

func printVerify(g *globals, e *env, r *verifyReport) {
	now := e.now()
	t := newTable(g.out, "POD", "IP", "SIDECAR", "MTLS HANDSHAKES IN/OUT", "PLAINTEXT PROBE", "VERDICT")
	for _, p := range r.Pods {
		sc, hs := "none", ""
		if p.Sidecar {
			sc = p.SidecarVersion
			if p.Handshakes != nil {
				hs = fmt.Sprintf("%d/%d", p.Handshakes.Inbound, p.Handshakes.Outbound)
			}
		}
		var probes []string
		for _, pr := range p.Probes {
			probes = append(probes, fmt.Sprintf(":%d %s", pr.Port, pr.Outcome))
		}
		probe := strings.Join(probes, ", ")
		switch {
		case !r.Probe:
			probe = "disabled"
		case len(p.Probes) == 0:
			probe = "no ports"
		}
		t.row(p.Pod, p.IP, sc, hs, probe, p.Verdict)
	}
	t.flush()

	fmt.Fprintln(g.out, "\nLive connections, as each sidecar reports them:")
	if len(r.Connections) == 0 {
		fmt.Fprintln(g.out, "  none open right now (connections close when a request is done; the handshake counters above remain)")
	} else {
		t := newTable(g.out, "REPORTED BY", "DIRECTION", "PEER", "MTLS", "PEER SPIFFE ID", "TLS", "CIPHER", "PEER CERT EXPIRES")
		for _, c := range r.Connections {
			peer := c.PeerAddr
			if c.Peer != "" {
				peer = c.Peer + " (" + c.PeerAddr + ")"
			}
			mtls := "yes"
			if !c.MTLS {
				mtls = "NO"
				if c.Direction == "outbound" {
					mtls = "no (egress)"
				}
			}
			exp := ""
			if c.PeerCertNotAfter != nil {
				exp = until(*c.PeerCertNotAfter, now)
			}
			t.row(c.ReportedBy, c.Direction, peer, mtls, c.PeerSPIFFEID, c.TLSVersion, c.Cipher, exp)
		}
		t.flush()
	}

	fmt.Fprintln(g.out, "\nWhy:")
	for _, p := range r.Pods {
		fmt.Fprintf(g.out, "  %s: %s: %s\n", p.Pod, p.Verdict, p.Reason)
		if p.Handshakes != nil && p.Handshakes.RefusedPlaintext > 0 {
			fmt.Fprintf(g.out, "    its sidecar has refused %d plaintext connection(s) so far (handshake_failures_total{reason=\"not_tls\"})\n", p.Handshakes.RefusedPlaintext)
		}
		for _, err := range p.Errors {
			fmt.Fprintf(g.out, "    could not read %s\n", err)
		}
	}
	if r.Encrypted {
		fmt.Fprintf(g.out, "\nAll %d pod(s) encrypted.\n", len(r.Pods))
	} else {
		n := 0
		for _, p := range r.Pods {
			if p.Verdict != verdictEncrypted {
				n++
			}
		}
		fmt.Fprintf(g.out, "\n%d of %d pod(s) NOT proven encrypted.\n", n, len(r.Pods))
	}
}
