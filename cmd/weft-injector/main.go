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

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/injector"
	"github.com/weftmesh/weft/internal/kubeconfig"
	"github.com/weftmesh/weft/internal/version"
	"github.com/weftmesh/weft/sidecar/identity"
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
		log.Error("exiting", "err", err.Error())
		os.Exit(1)
	}
}

// run builds the clients (the API server, the control plane's certificate
// service) and runs the injector.
func run(ctx context.Context, o options, log *slog.Logger) error {
	td, err := spiffeid.TrustDomainFromString(o.trustDomain)
	if err != nil {
		return fmt.Errorf("-trust-domain %q: %w", o.trustDomain, err)
	}
	if o.controlPlane == "" {
		o.controlPlane = names.ControlPlaneAddr(o.namespace)
	}
	rc, err := kubeconfig.Load(o.kubeconfig, names.Injector)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	weft, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	// The control plane is verified against the mounted bundle, re-read at
	// every handshake so that a rotated root (the kubelet refreshes the
	// ConfigMap) is picked up on reconnect.
	cpID, err := spiffeid.FromSegments(td, "ns", o.namespace, "sa", names.ControlPlane)
	if err != nil {
		return fmt.Errorf("control plane SPIFFE ID: %w", err)
	}
	creds := credentials.NewTLS(tlsconfig.TLSClientConfig(fileBundle(o.bundlePath), tlsconfig.AuthorizeID(cpID)))
	conn, err := grpc.NewClient(o.controlPlane, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("control plane %s: %w", o.controlPlane, err)
	}
	defer conn.Close()
	svids, err := identity.New(identity.Config{
		Client: certificatev1.NewCertificateServiceClient(conn), TokenPath: o.tokenPath, Logger: log.With("component", "identity"),
	})
	if err != nil {
		return err
	}
	return injector.Run(ctx, injector.RunConfig{
		Kube: kube, Weft: weft, Identity: svids, TrustDomain: o.trustDomain, Namespace: o.namespace, ControlPlane: o.controlPlane,
		Addr: o.addr, SidecarImage: o.sidecarImage, PullPolicy: corev1.PullPolicy(o.pullPolicy), NativeSidecar: o.nativeSidecar,
		ProxyLogLevel: o.proxyLogLevel, OutboundUDP: o.outboundUDP, WebhookConfig: o.webhookConfig, PodName: o.podName, Logger: log,
	})
}

// fileBundle reads the trust bundle from disk at every call.
type fileBundle string

func (f fileBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return x509bundle.Load(td, string(f))
}

// flagSet defines the flags into o and logLevel.
func flagSet(o *options, logLevel *string) *flag.FlagSet {
	fs := flag.NewFlagSet("weft-injector", flag.ExitOnError)
	fs.StringVar(&o.addr, "addr", injector.DefaultAddr, "HTTPS address of the webhook (and /healthz)")
	fs.StringVar(&o.controlPlane, "control-plane", "", "control plane gRPC address; empty means weft-controlplane.<namespace>.svc:15012")
	fs.StringVar(&o.trustDomain, "trust-domain", names.DefaultTrustDomain, "SPIFFE trust domain")
	fs.StringVar(&o.namespace, "namespace", envOr("POD_NAMESPACE", names.Namespace), "namespace weft is installed in (never injected)")
	fs.StringVar(&o.sidecarImage, "sidecar-image", "weft/weft-sidecar:"+version.Version, "image of weft-init and weft-proxy")
	fs.StringVar(&o.pullPolicy, "sidecar-pull-policy", "IfNotPresent", "pull policy of the sidecar image")
	fs.StringVar(&o.nativeSidecar, "native-sidecar", "auto", "run weft-proxy as a native sidecar: auto (Kubernetes >= 1.29), true or false")
	fs.StringVar(&o.proxyLogLevel, "proxy-log-level", "info", "weft-proxy's log level unless a pod's weft.dev/log-level says otherwise")
	fs.StringVar(&o.outboundUDP, "outbound-udp", injector.OutboundUDPMesh, "weft-init's --outbound-udp unless a pod's weft.dev/outbound-udp says otherwise: "+
		"mesh (drop while the MeshConfig's outbound mode is REGISTRY_ONLY, else allow), drop (outbound UDP other than DNS is rejected) or allow (leaves, unaudited)")
	fs.StringVar(&o.webhookConfig, "webhook-config", injector.WebhookConfiguration, "MutatingWebhookConfiguration whose caBundle the injector keeps")
	fs.StringVar(&o.tokenPath, "token-path", names.TokenPath, "projected ServiceAccount token (audience weft-ca)")
	fs.StringVar(&o.bundlePath, "bundle-path", names.BundlePath, "weft's trust bundle, to verify the control plane")
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
