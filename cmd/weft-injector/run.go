package main

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/injector"
	"github.com/weftmesh/weft/internal/kubeconfig"
	"github.com/weftmesh/weft/internal/version"
	"github.com/weftmesh/weft/sidecar/identity"
)

// run wires the injector: an SVID from the control plane's certificate
// service (its serving certificate), the webhook's caBundle kept equal to
// weft's roots, Events for skipped pods, and the HTTPS server.
func run(ctx context.Context, o options, log *slog.Logger) error {
	td, err := spiffeid.TrustDomainFromString(o.trustDomain)
	if err != nil {
		return fmt.Errorf("-trust-domain %q: %w", o.trustDomain, err)
	}
	if o.controlPlane == "" {
		o.controlPlane = names.ControlPlaneAddr(o.namespace)
	}
	kube, rc, err := kubeClient(o.kubeconfig)
	if err != nil {
		return err
	}
	mesh, err := watchMesh(ctx, rc, log)
	if err != nil {
		return err
	}
	var native bool
	switch o.nativeSidecar {
	case "auto":
		if native, err = injector.NativeSidecarSupported(kube.Discovery()); err != nil {
			return err
		}
	case "true", "false":
		native = o.nativeSidecar == "true"
	default:
		return fmt.Errorf("-native-sidecar %q: want auto, true or false", o.nativeSidecar)
	}
	inj, err := injector.New(injector.Config{
		Version: version.Version, SidecarImage: o.sidecarImage, PullPolicy: corev1.PullPolicy(o.pullPolicy),
		ControlPlaneAddr: o.controlPlane, TrustDomain: td.Name(), Namespace: o.namespace, NativeSidecar: native,
		ProxyLogLevel: o.proxyLogLevel, OutboundUDP: o.outboundUDP, Mesh: mesh, Logger: log.With("room", "injector"),
	})
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
		Client: certificatev1.NewCertificateServiceClient(conn), TokenPath: o.tokenPath, Logger: log.With("room", "identity"),
	})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { _ = svids.Run(ctx) })
	log.Info("waiting for the serving certificate", "controlPlane", o.controlPlane)
	select {
	case <-svids.Ready():
	case <-ctx.Done():
		return nil
	}
	if svid, err := svids.GetX509SVID(); err == nil {
		log.Info("serving certificate obtained", "spiffeID", svid.ID.String(), "dns", svid.Certificates[0].DNSNames,
			"notAfter", svid.Certificates[0].NotAfter)
	}
	renewed, unsubscribe := svids.Subscribe()
	defer unsubscribe()

	events := injector.NewKubeEvents(kube, o.podName, log.With("room", "events"))
	wg.Go(func() { events.Run(ctx) })
	wg.Go(func() {
		injector.KeepCABundle(ctx, injector.CABundleConfig{
			Client: kube, WebhookName: o.webhookConfig, Changed: renewed, Logger: log.With("room", "cabundle"),
			Bundle: func() ([]byte, error) { return rootsPEM(svids, td) },
		})
	})
	log.Info("weft-injector starting", "version", version.Version, "nativeSidecar", native, "sidecarImage", o.sidecarImage)
	return injector.Serve(ctx, injector.ServerConfig{
		Addr: o.addr, Injector: inj, Certificates: injector.SVIDCertificates(svids), Observer: events, Logger: log,
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

// fileBundle reads the trust bundle from disk at every call.
type fileBundle string

func (f fileBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return x509bundle.Load(td, string(f))
}

func kubeClient(path string) (kubernetes.Interface, *rest.Config, error) {
	rc, err := kubeconfig.Load(path, names.Injector)
	if err != nil {
		return nil, nil, err
	}
	kube, err := kubernetes.NewForConfig(rc)
	return kube, rc, err
}

// watchMesh follows the MeshConfig's settings (outbound mode,
// captureBypass, proxyTimeouts) with an informer on meshconfigs/default, synced before it
// returns (so the first pod admitted is decided by the mesh's settings,
// not by an empty cache).
func watchMesh(ctx context.Context, rc *rest.Config, log *slog.Logger) (func() injector.MeshSettings, error) {
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
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
	return func() injector.MeshSettings {
		obj, err := lister.Get(v1alpha1.DefaultMeshConfigName)
		if err != nil {
			return injector.MeshSettings{} // none: the defaults
		}
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			log.Warn("meshconfigs: unexpected object in the cache", "type", fmt.Sprintf("%T", obj))
			return injector.MeshSettings{}
		}
		var m injector.MeshSettings
		m.Outbound, _, _ = unstructured.NestedString(u.Object, "spec", "outboundTrafficPolicy", "mode")
		m.CaptureBypass, _, _ = unstructured.NestedString(u.Object, "spec", "captureBypass")
		m.HandshakeTimeout, _, _ = unstructured.NestedString(u.Object, "spec", "proxyTimeouts", "handshake")
		m.IdleTimeout, _, _ = unstructured.NestedString(u.Object, "spec", "proxyTimeouts", "idle")
		m.WriteTimeout, _, _ = unstructured.NestedString(u.Object, "spec", "proxyTimeouts", "write")
		return m
	}, nil
}
