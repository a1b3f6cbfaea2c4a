package sidecar

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/api/names"
)

// appProbe is one of the app's original probes, as the injector recorded it
// in the weft.dev/probes annotation (handed over in WEFT_APP_PROBES). The
// kubelet asks weft-proxy on 15020 at the probe's path; weft-proxy runs the
// probe against the app on loopback, which capture never redirects, and
// answers with the app's verdict. That keeps probes working under STRICT
// mTLS, where the kubelet's plaintext connection to the app port would be
// refused.
type appProbe struct {
	HTTPGet *struct {
		Path        string `json:"path"`
		Port        int    `json:"port"`
		Scheme      string `json:"scheme"`
		HTTPHeaders []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"httpHeaders"`
	} `json:"httpGet"`
	GRPC *struct {
		Port    int     `json:"port"`
		Service *string `json:"service"`
	} `json:"grpc"`
	TimeoutSeconds int `json:"timeoutSeconds"`
}

// parseAppProbes reads the WEFT_APP_PROBES JSON: path → probe. Empty means
// none. A probe weft cannot run is an error, so the sidecar refuses to start
// rather than silently answering for a probe it never runs.
func parseAppProbes(s string) (map[string]appProbe, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var probes map[string]appProbe
	if err := json.Unmarshal([]byte(s), &probes); err != nil {
		return nil, fmt.Errorf("sidecar: app probes: %w", err)
	}
	for path, p := range probes {
		if !strings.HasPrefix(path, names.AppHealthPrefix) {
			return nil, fmt.Errorf("sidecar: app probe path %q is not under /app-health/", path)
		}
		switch {
		case p.HTTPGet != nil && p.GRPC == nil:
			if p.HTTPGet.Port < 1 || p.HTTPGet.Port > 65535 {
				return nil, fmt.Errorf("sidecar: app probe %s: port %d out of range", path, p.HTTPGet.Port)
			}
			if sc := strings.ToUpper(p.HTTPGet.Scheme); sc != "" && sc != "HTTP" && sc != "HTTPS" {
				return nil, fmt.Errorf("sidecar: app probe %s: scheme %q is not HTTP or HTTPS", path, p.HTTPGet.Scheme)
			}
		case p.GRPC != nil && p.HTTPGet == nil:
			if p.GRPC.Port < 1 || p.GRPC.Port > 65535 {
				return nil, fmt.Errorf("sidecar: app probe %s: port %d out of range", path, p.GRPC.Port)
			}
		default:
			return nil, fmt.Errorf("sidecar: app probe %s: want exactly one of httpGet and grpc", path)
		}
	}
	return probes, nil
}

// appHealth serves /app-health/<container>/<kind>.
type appHealth struct {
	probes map[string]appProbe
	host   string // "127.0.0.1"
}

func (a appHealth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, ok := a.probes[r.URL.Path]
	if !ok {
		http.Error(w, "no app probe at "+r.URL.Path, http.StatusNotFound)
		return
	}
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second // the kubelet's default
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	if p.GRPC != nil {
		code, msg := a.grpcProbe(ctx, p)
		http.Error(w, msg, code)
		return
	}
	code, msg := a.httpProbe(ctx, p)
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

func (a appHealth) httpProbe(ctx context.Context, p appProbe) (int, string) {
	g := p.HTTPGet
	scheme := "http"
	if strings.EqualFold(g.Scheme, "HTTPS") {
		scheme = "https"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(a.host, strconv.Itoa(g.Port))+path, nil)
	if err != nil {
		return http.StatusInternalServerError, err.Error()
	}
	req.Header.Set("User-Agent", "kube-probe/weft")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
		} else {
			req.Header.Add(h.Name, h.Value)
		}
	}
	client := &http.Client{
		// Like the kubelet: HTTPS probes do not verify the certificate,
		// and no redirect is followed off the pod.
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}, //nolint:gosec // kubelet semantics
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return http.StatusServiceUnavailable, "app probe failed: " + err.Error()
	}
	resp.Body.Close()
	return resp.StatusCode, "app answered " + resp.Status
}

func (a appHealth) grpcProbe(ctx context.Context, p appProbe) (int, string) {
	conn, err := grpc.NewClient(net.JoinHostPort(a.host, strconv.Itoa(p.GRPC.Port)), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return http.StatusServiceUnavailable, err.Error()
	}
	defer conn.Close()
	service := ""
	if p.GRPC.Service != nil {
		service = *p.GRPC.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return http.StatusServiceUnavailable, "app probe failed: " + err.Error()
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return http.StatusServiceUnavailable, "app reports " + resp.GetStatus().String()
	}
	return http.StatusOK, "app reports SERVING"
}
