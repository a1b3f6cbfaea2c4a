package injector

import (
	"cmp"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/version"
)

// RunConfig configures [Run], the injector's process (weft-injector). Kube,
// Weft and Identity are required; zero values get the defaults of weft's
// install (docs/architecture.md, "Names, ports and paths"). It is not
// [Config], which configures the admission handler Run builds.
type RunConfig struct {
	Kube kubernetes.Interface // required: Events, the webhook's caBundle, the API server's version
	Weft dynamic.Interface    // required: meshconfigs.weft.dev (the MeshConfig's settings)
	// Identity is the injector's own SVID, from the control plane's
	// certificate service: it serves the webhook, and its roots are the
	// webhook's caBundle. Run runs it.
	Identity Identity

	TrustDomain   string            // "cluster.local"
	Namespace     string            // "weft-system": never injected
	ControlPlane  string            // weft-controlplane.<Namespace>.svc:15012: where injected sidecars connect
	Addr          string            // DefaultAddr
	SidecarImage  string            // "weft/weft-sidecar:<version>": weft-init and weft-proxy
	PullPolicy    corev1.PullPolicy // IfNotPresent
	NativeSidecar string            // "auto" (Kubernetes >= 1.29), "true" or "false"
	ProxyLogLevel string            // "info"
	OutboundUDP   string            // OutboundUDPMesh
	WebhookConfig string            // WebhookConfiguration: the one whose caBundle Run keeps
	PodName       string            // "weft-injector": this replica, for Events
	Logger        *slog.Logger      // nil: discard
	// Ready, if set, is called with the webhook's address once it listens.
	Ready func(net.Addr)
}

// Identity is where the injector's serving certificate comes from: an
// X.509-SVID fetched from the control plane and renewed, and the trust
// bundle that came with it. sidecar/identity.Manager is one; the injector
// does not import it.
type Identity interface {
	x509svid.Source
	x509bundle.Source
	// Run fetches and renews the SVID until ctx ends.
	Run(ctx context.Context) error
	// Ready is closed once the first SVID is held.
	Ready() <-chan struct{}
	// Subscribe signals every renewal; cancel ends the subscription.
	Subscribe() (changed <-chan struct{}, cancel func())
}

func (c *RunConfig) defaults() error {
	if c.Kube == nil || c.Weft == nil || c.Identity == nil {
		return errors.New("injector: RunConfig.Kube, RunConfig.Weft and RunConfig.Identity are required")
	}
	c.TrustDomain = cmp.Or(c.TrustDomain, names.DefaultTrustDomain)
	c.Namespace = cmp.Or(c.Namespace, names.Namespace)
	c.ControlPlane = cmp.Or(c.ControlPlane, names.ControlPlaneAddr(c.Namespace))
	c.Addr = cmp.Or(c.Addr, DefaultAddr)
	c.SidecarImage = cmp.Or(c.SidecarImage, "weft/weft-sidecar:"+version.Version)
	c.PullPolicy = cmp.Or(c.PullPolicy, corev1.PullIfNotPresent)
	c.NativeSidecar = cmp.Or(c.NativeSidecar, "auto")
	c.ProxyLogLevel = cmp.Or(c.ProxyLogLevel, "info")
	c.OutboundUDP = cmp.Or(c.OutboundUDP, OutboundUDPMesh)
	c.WebhookConfig = cmp.Or(c.WebhookConfig, WebhookConfiguration)
	c.PodName = cmp.Or(c.PodName, "weft-injector")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Run serves the webhook until ctx ends: it follows the MeshConfig, waits
// for the serving certificate, keeps the webhook's caBundle equal to
// weft's roots, records an Event for each skipped pod, and serves HTTPS
// ([Serve]). On the way out the server drains first, then the caBundle
// keeper, the Events and the identity stop.
func Run(ctx context.Context, cfg RunConfig) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	log := cfg.Logger
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("-trust-domain %q: %w", cfg.TrustDomain, err)
	}
	mesh, err := watchMesh(ctx, cfg.Weft, log)
	if err != nil {
		return err
	}
	var native bool
	switch cfg.NativeSidecar {
	case "auto":
		if native, err = NativeSidecarSupported(cfg.Kube.Discovery()); err != nil {
			return err
		}
	case "true", "false":
		native = cfg.NativeSidecar == "true"
	default:
		return fmt.Errorf("-native-sidecar %q: want auto, true or false", cfg.NativeSidecar)
	}
	inj, err := New(Config{
		Version: version.Version, SidecarImage: cfg.SidecarImage, PullPolicy: cfg.PullPolicy,
		ControlPlaneAddr: cfg.ControlPlane, TrustDomain: td.Name(), Namespace: cfg.Namespace, NativeSidecar: native,
		ProxyLogLevel: cfg.ProxyLogLevel, OutboundUDP: cfg.OutboundUDP, Mesh: mesh, Logger: log.With("component", "injector"),
	})
	if err != nil {
		return err
	}

	svids := cfg.Identity
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { _ = svids.Run(ctx) })
	log.Info("waiting for the serving certificate", "control_plane", cfg.ControlPlane)
	select {
	case <-svids.Ready():
	case <-ctx.Done():
		return nil
	}
	if svid, err := svids.GetX509SVID(); err == nil {
		log.Info("serving certificate obtained", "spiffe_id", svid.ID.String(), "dns", svid.Certificates[0].DNSNames,
			"not_after", svid.Certificates[0].NotAfter)
	}
	renewed, unsubscribe := svids.Subscribe()
	defer unsubscribe()

	events := NewKubeEvents(cfg.Kube, cfg.PodName, log.With("component", "events"))
	wg.Go(func() { events.Run(ctx) })
	wg.Go(func() {
		KeepCABundle(ctx, CABundleConfig{
			Client: cfg.Kube, WebhookName: cfg.WebhookConfig, Changed: renewed, Logger: log.With("component", "cabundle"),
			Bundle: func() ([]byte, error) { return rootsPEM(svids, td) },
		})
	})
	log.Info("weft-injector starting", "version", version.Version, "native_sidecar", native, "sidecar_image", cfg.SidecarImage)
	return Serve(ctx, ServerConfig{
		Addr: cfg.Addr, Injector: inj, Certificates: SVIDCertificates(svids), Observer: events, Logger: log, Ready: cfg.Ready,
	})
}

// rootsPEM is the trust domain's roots as src has them, as PEM: the
// webhook's caBundle.
func rootsPEM(src x509bundle.Source, td spiffeid.TrustDomain) ([]byte, error) {
	b, err := src.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, c := range b.X509Authorities() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out, nil
}

// watchMesh follows the MeshConfig's settings (outbound mode,
// captureBypass, proxyTimeouts) with an informer on meshconfigs/default, synced before it
// returns (so the first pod admitted is decided by the mesh's settings,
// not by an empty cache).
func watchMesh(ctx context.Context, dyn dynamic.Interface, log *slog.Logger) (func() MeshSettings, error) {
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 10*time.Minute, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.FieldSelector = "metadata.name=" + v1alpha1.DefaultMeshConfigName
	})
	inf := f.ForResource(v1alpha1.MeshConfigResource)
	lister := inf.Lister()
	f.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), inf.Informer().HasSynced) {
		return nil, errors.New("meshconfigs: informer did not sync in a minute (RBAC: weft-injector needs get, list and watch on meshconfigs.weft.dev)")
	}
	return func() MeshSettings {
		obj, err := lister.Get(v1alpha1.DefaultMeshConfigName)
		if err != nil {
			return MeshSettings{} // none: the defaults
		}
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			log.Warn("unexpected object in the meshconfigs cache", "type", fmt.Sprintf("%T", obj))
			return MeshSettings{}
		}
		var m MeshSettings
		m.Outbound, _, _ = unstructured.NestedString(u.Object, "spec", "outboundTrafficPolicy", "mode")
		m.CaptureBypass, _, _ = unstructured.NestedString(u.Object, "spec", "captureBypass")
		m.HandshakeTimeout, _, _ = unstructured.NestedString(u.Object, "spec", "proxyTimeouts", "handshake")
		m.IdleTimeout, _, _ = unstructured.NestedString(u.Object, "spec", "proxyTimeouts", "idle")
		m.WriteTimeout, _, _ = unstructured.NestedString(u.Object, "spec", "proxyTimeouts", "write")
		return m
	}, nil
}
