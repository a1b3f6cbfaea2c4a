package weftctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/weftmesh/weft/api/names"
)

// Ports of weft's admin endpoints (docs/architecture.md, "Ports").
const (
	sidecarAdminPort  = names.SidecarAdminPort  // 127.0.0.1 inside the pod: /connections, /config_dump
	sidecarHealthPort = names.SidecarHealthPort // pod IP: /healthz/ready, /metrics
	controlPlanePort  = names.ControlPlaneAdmin // /metrics, /healthz; over TLS with credentials /debug/status, /audit/* (cpadmin.go)
	maxAdminBody      = 8 << 20
)

// env is what the mesh commands (status, verify, check, explain-injection)
// work with. The real one talks to the cluster; tests put a fake one in
// the command's context (see withEnv).
type env struct {
	kube   kubernetes.Interface
	admin  admin
	probe  prober
	now    func() time.Time
	weftNS string
	// namespace is the one -n names, or the context's; explicitNS says
	// whether -n was given.
	namespace  string
	explicitNS bool
}

// admin fetches weft's HTTP admin endpoints.
type admin interface {
	// podGet GETs path from a port of a pod: the sidecar's loopback-only
	// admin port through a port-forward, any other port through the API
	// server's pod proxy.
	podGet(ctx context.Context, pod *corev1.Pod, port int, path string) ([]byte, error)
	// serviceGet GETs path from a port of a Service through the API
	// server's service proxy, with scheme "http" or "https".
	serviceGet(ctx context.Context, namespace, name, scheme string, port int, path string) ([]byte, error)
	// controlPlaneGet GETs path from a control-plane pod's admin port over
	// TLS, with the user's own credentials (cpadmin.go).
	controlPlaneGet(ctx context.Context, pod *corev1.Pod, path string, query url.Values) ([]byte, error)
}

// prober opens a TCP connection to addr from where weftctl runs, sends a
// plaintext HTTP request and says how the other end reacted.
type prober func(ctx context.Context, addr string) probeResult

type envKey struct{}

// withEnv makes the commands run under ctx use e instead of the cluster
// that the kubeconfig names.
func withEnv(ctx context.Context, e *env) context.Context {
	return context.WithValue(ctx, envKey{}, e)
}

// env returns the environment of a command run.
func (g *globals) env(ctx context.Context) (*env, error) {
	if e, ok := ctx.Value(envKey{}).(*env); ok {
		c := *e
		if g.namespace != "" {
			c.namespace, c.explicitNS = g.namespace, true
		}
		if c.namespace == "" {
			c.namespace = "default"
		}
		return &c, nil
	}
	c, err := g.clients()
	if err != nil {
		return nil, err
	}
	return &env{kube: c.kube, admin: newKubeAdmin(c, names.Namespace), probe: probePlaintext, now: time.Now,
		weftNS: names.Namespace, namespace: c.namespace, explicitNS: g.namespace != ""}, nil
}

// kubeAdmin reaches admin endpoints through the API server.
type kubeAdmin struct {
	kube kubernetes.Interface
	rest *rest.Config
	cp   *cpAdmin
}

var _ admin = (*kubeAdmin)(nil)

func newKubeAdmin(c *clients, weftNS string) *kubeAdmin {
	a := &kubeAdmin{kube: c.kube, rest: c.rest}
	a.cp = &cpAdmin{kube: c.kube, rest: c.rest, weftNS: weftNS, forward: a.forward}
	return a
}

func (a *kubeAdmin) controlPlaneGet(ctx context.Context, pod *corev1.Pod, path string, query url.Values) ([]byte, error) {
	b, err := a.cp.get(ctx, pod, path, query)
	if err != nil {
		return nil, fmt.Errorf("weftctl: control plane %s/%s %s: %w", pod.Namespace, pod.Name, path, err)
	}
	return b, nil
}

func (a *kubeAdmin) podGet(ctx context.Context, pod *corev1.Pod, port int, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if port == sidecarAdminPort {
		return a.forwardGet(ctx, pod, port, path)
	}
	fail := func(err error) ([]byte, error) {
		return nil, fmt.Errorf("weftctl: pod %s/%s port %d %s: %w", pod.Namespace, pod.Name, port, path, err)
	}
	// Whatever listens on the pod's port answers (the app shares the
	// sidecar's network namespace): read at most maxAdminBody of it.
	rc, err := a.kube.CoreV1().Pods(pod.Namespace).ProxyGet("http", pod.Name, strconv.Itoa(port), path, nil).Stream(ctx)
	if err != nil {
		return fail(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxAdminBody+1))
	if err != nil {
		return fail(err)
	}
	if len(b) > maxAdminBody {
		return fail(fmt.Errorf("answer larger than %d bytes", maxAdminBody))
	}
	return b, nil
}

func (a *kubeAdmin) serviceGet(ctx context.Context, ns, name, scheme string, port int, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	b, err := a.kube.CoreV1().Services(ns).ProxyGet(scheme, name, strconv.Itoa(port), path, nil).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("weftctl: service %s/%s %s port %d %s: %w", ns, name, scheme, port, path, err)
	}
	return b, nil
}

// forwardGet port-forwards a local loopback port to the pod's port (the
// kubelet dials it on localhost inside the pod's network namespace) and
// GETs path through it.
func (a *kubeAdmin) forwardGet(ctx context.Context, pod *corev1.Pod, port int, path string) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		return nil, fmt.Errorf("weftctl: port-forward to %s/%s:%d %s: %w", pod.Namespace, pod.Name, port, path, err)
	}
	addr, stop, err := a.forward(ctx, pod, port)
	if err != nil {
		return nil, fmt.Errorf("weftctl: %w (GET %s)", err, path)
	}
	defer stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return fail(err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminBody))
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b))))
	}
	return b, nil
}

// forward port-forwards a local loopback port to the pod's port and
// returns the local address; stop ends the forward.
func (a *kubeAdmin) forward(ctx context.Context, pod *corev1.Pod, port int) (string, func(), error) {
	fail := func(err error) (string, func(), error) {
		return "", nil, fmt.Errorf("port-forward to %s/%s:%d: %w", pod.Namespace, pod.Name, port, err)
	}
	transport, upgrader, err := spdy.RoundTripperFor(a.rest)
	if err != nil {
		return fail(err)
	}
	url := a.kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return fail(err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	end := func() {
		close(stop)
		<-done
	}
	select {
	case <-ready:
	case err := <-done:
		if err == nil {
			err = errors.New("port-forward ended before it was ready")
		}
		return fail(err)
	case <-ctx.Done():
		end()
		return fail(ctx.Err())
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		end()
		return fail(fmt.Errorf("no local port: %v", err))
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local))), end, nil
}

// Outcomes of a plaintext probe.
const (
	probeRefused  = "refused"  // closed, reset, or answered only with TLS: plaintext is not accepted
	probeAnswered = "answered" // something answered the plaintext request: not encrypted
	probeSilent   = "silent"   // accepted and said nothing: cannot tell
	probeNoPath   = "no-path"  // weftctl cannot reach the pod IP: probe skipped
)

// probeResult is what a plaintext probe of one address saw.
type probeResult struct {
	Outcome string `json:"outcome"`
	Detail  string `json:"detail"`
}

// probeTimeout bounds each step of a probe.
const probeTimeout = 3 * time.Second

// probePlaintext is the real prober: what a client outside the mesh sees.
func probePlaintext(ctx context.Context, addr string) probeResult {
	d := net.Dialer{Timeout: probeTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return probeResult{probeRefused, "connection refused: nothing accepts plaintext"}
		}
		return probeResult{probeNoPath, "probe skipped: no network path from here to the pod IP (" + err.Error() + ")"}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(probeTimeout))
	host, _, _ := net.SplitHostPort(addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\nUser-Agent: weftctl-verify\r\nConnection: close\r\n\r\n"); err != nil {
		return probeResult{probeRefused, "connection closed before the request was sent (" + err.Error() + ")"}
	}
	buf := make([]byte, 512)
	n, err := io.ReadAtLeast(c, buf, 1)
	return classifyProbe(buf[:n], err)
}

// classifyProbe decides what an answer (or its absence) to a plaintext
// request means.
func classifyProbe(reply []byte, err error) probeResult {
	var ne net.Error
	switch {
	case len(reply) >= 2 && (reply[0] == 0x15 || reply[0] == 0x16) && reply[1] == 0x03:
		return probeResult{probeRefused, "answered only with a TLS record: plaintext refused"}
	case len(reply) > 0:
		line, _, _ := strings.Cut(string(reply), "\n")
		return probeResult{probeAnswered, fmt.Sprintf("plaintext answered: %q", strings.TrimSpace(line))}
	case errors.As(err, &ne) && ne.Timeout():
		return probeResult{probeSilent, fmt.Sprintf("connection accepted, no answer in %s: cannot tell whether plaintext is accepted", probeTimeout)}
	case errors.Is(err, syscall.ECONNRESET):
		return probeResult{probeRefused, "connection reset without an answer"}
	default:
		return probeResult{probeRefused, "connection closed without an answer"}
	}
}
