// Command weft-controlplane runs weft's control plane: the SPIFFE CA, the
// certificate service, the mesh registry, the xDS server, the egress audit
// store and the admin port (see package controlplane).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/internal/kubeconfig"
)

func main() {
	var (
		cfg        controlplane.Config
		kubeconfig string
		logLevel   string
		api        apiLimits
	)
	flag.StringVar(&cfg.TrustDomain, "trust-domain", names.DefaultTrustDomain, "SPIFFE trust domain; set once at install")
	flag.StringVar(&cfg.Namespace, "namespace", envOr("POD_NAMESPACE", names.Namespace), "namespace weft is installed in")
	flag.StringVar(&cfg.ServiceAccount, "service-account", envOr("SERVICE_ACCOUNT", names.ControlPlane), "service account the control plane runs as")
	flag.StringVar(&cfg.CASecret, "ca-secret", identity.CASecretName, "Secret holding the CA")
	flag.StringVar(&cfg.GRPCAddr, "grpc-addr", ":"+strconv.Itoa(names.ControlPlaneGRPC), "TLS gRPC address: certificate service and ADS")
	flag.StringVar(&cfg.HTTPAddr, "http-addr", ":"+strconv.Itoa(names.ControlPlaneAdmin), "admin address, plain HTTP and HTTPS on one port: /metrics, /healthz open; /audit/*, /debug/status over HTTPS to callers RBAC allows")
	flag.DurationVar(&cfg.SVIDTTL, "svid-ttl", 24*time.Hour, "longest X.509-SVID lifetime signed")
	flag.DurationVar(&cfg.Debounce, "xds-debounce", 100*time.Millisecond, "quiet time before a mesh change is pushed to sidecars")
	flag.DurationVar(&cfg.MaxDelay, "xds-max-delay", time.Second, "longest a mesh change waits under continuous churn")
	flag.StringVar(&cfg.AuditDB, "audit-db", "/var/lib/weft/audit.db", "egress audit store (bbolt file on a volume)")
	flag.DurationVar(&cfg.AuditRetention, "audit-retention", 7*24*time.Hour, "how long the audit store keeps an event (by receive time)")
	flag.IntVar(&cfg.AuditMaxEvents, "audit-max-events", 500_000, "the audit store's cap: past it the oldest events are evicted (size it to the volume: ~1 KiB per event)")
	flag.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "", "export egress audit events as OTLP logs to this gRPC endpoint (host:port)")
	flag.BoolVar(&cfg.OTLPInsecure, "otlp-insecure", false, "plaintext OTLP (e.g. a collector on the same node)")
	flag.BoolVar(&cfg.HTTPRouting, "http-routing", false, "route the requests of Service ports that declare http, http2 or grpc one by one between sidecars (HTTP/2 over mTLS; docs/l7.md); in development, off by default")
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig path; empty means in-cluster")
	flag.Float64Var(&api.qps, "kube-api-qps", controlplane.KubeQPS, "requests per second to the Kubernetes API server (client-side limit; see controlplane.KubeQPS)")
	flag.IntVar(&api.burst, "kube-api-burst", controlplane.KubeBurst, "burst of requests to the Kubernetes API server (client-side limit)")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "weft-controlplane: -log-level: %v\n", err)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(cfg, kubeconfig, api); err != nil {
		cfg.Logger.Error("exiting", "err", err.Error())
		os.Exit(1)
	}
}

// apiLimits is the client-side rate limit of the control plane's API
// client.
type apiLimits struct {
	qps   float64
	burst int
}

func run(cfg controlplane.Config, kubeconfigPath string, api apiLimits) error {
	rc, err := kubeconfig.Load(kubeconfigPath, names.ControlPlane)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = float32(api.qps), api.burst
	if cfg.Kube, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	if cfg.Weft, err = dynamic.NewForConfig(rc); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return controlplane.Run(ctx, cfg)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
