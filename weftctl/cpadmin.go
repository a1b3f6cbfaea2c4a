package weftctl

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weftmesh/weft/api/names"
)

// How weftctl reads the control plane's guarded admin endpoints (/audit/*,
// /debug/*; controlplane/adminauth): through a port-forward to a replica's
// admin port it speaks TLS end to end with the control plane, verifies
// the control plane's certificate against weft's trust bundle (ConfigMap
// weft-trust-bundle in the weft namespace) for the name
// weft-controlplane.<ns>.svc, and presents the kubeconfig's own
// credentials: its client certificate (as the API server would see it) or
// its bearer token (static, file, exec plugin or auth provider). The
// control plane asks the API server who that is (TokenReview, or the
// cluster's client CA) and whether they may read (SubjectAccessReview).
//
// Not the API server's pod or service proxy: the API server terminates
// the user's TLS and drops their Authorization header, so the control
// plane would see the API server, not the user. The port-forward needs
// create pods/portforward in the weft namespace; the ClusterRoles
// weft-audit-reader and weft-status-reader grant it with the rest.

// controlPlaneName is the DNS name on the control plane's certificate.
func controlPlaneName(ns string) string { return "weft-controlplane." + ns + ".svc" }

// forwardFunc opens a tunnel to port of pod and returns the local address
// that reaches it, and how to close it.
type forwardFunc func(ctx context.Context, pod *corev1.Pod, port int) (addr string, stop func(), err error)

// cpAdmin GETs the control plane's admin endpoints over TLS with the
// user's credentials.
type cpAdmin struct {
	kube    kubernetes.Interface
	rest    *rest.Config // the user's kubeconfig: credentials
	weftNS  string
	forward forwardFunc
}

// get GETs path with query from the admin port of control-plane pod.
func (a *cpAdmin) get(ctx context.Context, pod *corev1.Pod, path string, query url.Values) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if a.rest.Impersonate.UserName != "" || len(a.rest.Impersonate.Groups) > 0 || a.rest.Impersonate.UID != "" {
		return nil, errors.New("the kubeconfig impersonates another user; the control plane's admin port authenticates the credential itself and does not honour impersonation")
	}
	cm, err := a.kube.CoreV1().ConfigMaps(a.weftNS).Get(ctx, names.TrustBundleConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading weft's trust bundle (to verify the control plane): %w", err)
	}
	bundle := cm.Data[names.TrustBundleKey]
	if !x509.NewCertPool().AppendCertsFromPEM([]byte(bundle)) {
		return nil, fmt.Errorf("ConfigMap %s/weft-trust-bundle holds no certificate", a.weftNS)
	}
	addr, stop, err := a.forward(ctx, pod, controlPlanePort)
	if err != nil {
		return nil, err
	}
	defer stop()
	rt, err := a.transport(addr, []byte(bundle))
	if err != nil {
		return nil, err
	}
	u := url.URL{Scheme: "https", Host: net.JoinHostPort(controlPlaneName(a.weftNS), fmt.Sprint(controlPlanePort)), Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminBody))
	if err != nil {
		return nil, err
	}
	msg := strings.TrimSpace(string(b))
	switch resp.StatusCode {
	case http.StatusOK:
		return b, nil
	case http.StatusUnauthorized:
		return nil, fmt.Errorf("%s: the control plane did not accept the kubeconfig's credentials (a client certificate of the cluster's CA or a token the API server accepts): %s", resp.Status, msg)
	case http.StatusForbidden:
		return nil, fmt.Errorf("%s: %s", resp.Status, msg)
	default:
		return nil, fmt.Errorf("%s: %s", resp.Status, msg)
	}
}

// transport carries the kubeconfig's credentials to addr, trusting only
// weft's bundle for the control plane's name.
func (a *cpAdmin) transport(addr string, bundle []byte) (http.RoundTripper, error) {
	c := rest.CopyConfig(a.rest)
	// Keep Host: an exec plugin that is given cluster information gets the
	// API server's, the audience its token is for.
	c.TLSClientConfig.Insecure = false
	c.TLSClientConfig.CAFile = ""
	c.TLSClientConfig.CAData = bundle
	c.TLSClientConfig.ServerName = controlPlaneName(a.weftNS)
	c.TLSClientConfig.NextProtos = []string{"http/1.1"}
	c.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	c.Dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	c.UserAgent = a.rest.UserAgent
	return rest.TransportFor(c)
}
