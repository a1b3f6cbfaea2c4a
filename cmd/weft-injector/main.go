// Command weft-injector runs weft's sidecar injector: the mutating
// admission webhook that adds weft-init and weft-proxy to pods in
// namespaces labelled weft.dev/inject=enabled.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/injector"
	"github.com/weftmesh/weft/internal/version"
)

// options are the flags.
type options struct {
	addr, controlPlane, trustDomain, namespace string
	sidecarImage, pullPolicy, nativeSidecar    string
	proxyLogLevel, webhookConfig, outboundUDP  string
	tokenPath, bundlePath, kubeconfig          string
	podName                                    string
}

func main() {
	var o options
	var logLevel string
	fs := flagSet(&o, &logLevel)
	_ = fs.Parse(os.Args[1:]) // ExitOnError

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "weft-injector: -log-level: %v\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("exiting", "error", err.Error())
		os.Exit(1)
	}
}

// flagSet defines the flags into o and logLevel.
func flagSet(o *options, logLevel *string) *flag.FlagSet {
	fs := flag.NewFlagSet("weft-injector", flag.ExitOnError)
	fs.StringVar(&o.addr, "addr", injector.DefaultAddr, "HTTPS address of the webhook (and /healthz)")
	fs.StringVar(&o.controlPlane, "control-plane", "", "control plane gRPC address; empty means weft-controlplane.<namespace>.svc:15012")
	fs.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain")
	fs.StringVar(&o.namespace, "namespace", envOr("POD_NAMESPACE", names.Namespace), "namespace weft is installed in (never injected)")
	fs.StringVar(&o.sidecarImage, "sidecar-image", "weft/weft-sidecar:"+version.Version, "image of weft-init and weft-proxy")
	fs.StringVar(&o.pullPolicy, "sidecar-pull-policy", "IfNotPresent", "pull policy of the sidecar image")
	fs.StringVar(&o.nativeSidecar, "native-sidecar", "auto", "run weft-proxy as a native sidecar: auto (Kubernetes >= 1.29), true or false")
	fs.StringVar(&o.proxyLogLevel, "proxy-log-level", "info", "weft-proxy's log level unless a pod's weft.dev/log-level says otherwise")
	fs.StringVar(&o.outboundUDP, "outbound-udp", injector.OutboundUDPMesh, "weft-init's --outbound-udp unless a pod's weft.dev/outbound-udp says otherwise: "+
		"mesh (drop while the MeshConfig's outbound mode is REGISTRY_ONLY, else allow), drop (outbound UDP other than DNS is rejected) or allow (leaves, unaudited)")
	fs.StringVar(&o.webhookConfig, "webhook-config", injector.WebhookConfiguration, "MutatingWebhookConfiguration whose caBundle the injector keeps")
	fs.StringVar(&o.tokenPath, "token-path", injector.TokenDir+"/token", "projected ServiceAccount token (audience weft-ca)")
	fs.StringVar(&o.bundlePath, "bundle-path", injector.BundleDir+"/"+injector.BundleKey, "weft's trust bundle, to verify the control plane")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig path; empty means in-cluster")
	fs.StringVar(&o.podName, "pod-name", envOr("POD_NAME", "weft-injector"), "this replica's name, for Events")
	fs.StringVar(logLevel, "log-level", "info", "debug, info, warn or error")
	return fs
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
