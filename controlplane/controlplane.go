package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/api/admin"
	apiaudit "github.com/weftmesh/weft/api/audit"
	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/adminauth"
	"github.com/weftmesh/weft/controlplane/audit"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/controlplane/registry"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/controlplane/xds/ads"
	"github.com/weftmesh/weft/controlplane/xds/translate"
	"github.com/weftmesh/weft/internal/version"
)

// Config configures the control plane. Zero values get the defaults of
// weft's install (docs/architecture.md, "Names, ports and paths").
type Config struct {
	Kube           kubernetes.Interface // required
	Weft           dynamic.Interface    // required: weft.dev objects (CRDs)
	TrustDomain    string               // "cluster.local"
	Namespace      string               // "weft-system"
	ServiceAccount string               // "weft-controlplane"
	CASecret       string               // "weft-ca"
	GRPCAddr       string               // ":15012"
	HTTPAddr       string               // ":15014"
	SVIDTTL        time.Duration        // 24h: the longest SVID the service signs
	AuditDB        string               // "/var/lib/weft/audit.db": the egress audit store (bbolt)
	AuditRetention time.Duration        // 7 days: how long the store keeps an event (audit.StoreConfig.Retention)
	AuditMaxEvents int                  // 500,000: the store's cap (audit.StoreConfig.MaxEvents)
	OTLPEndpoint   string               // "": no export; else host:port of an OTLP/gRPC logs receiver
	OTLPInsecure   bool                 // plaintext OTLP (a collector sidecar on loopback)
	HTTPRouting    bool                 // false: route the requests of HTTP Service ports (translate.Generator.HTTPRouting; docs/l7.md)
	Debounce       time.Duration        // 100ms: quiet time before a change is pushed
	MaxDelay       time.Duration        // 1s: longest a change waits under continuous churn
	Logger         *slog.Logger
	Clock          clock.WithTicker
	// Ready, if set, receives the bound addresses once both ports listen
	// (tests bind port 0).
	Ready func(grpcAddr, httpAddr net.Addr)
}

func (c *Config) defaults() error {
	if c.Kube == nil || c.Weft == nil {
		return errors.New("controlplane: Config.Kube and Config.Weft are required")
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.TrustDomain, names.DefaultTrustDomain)
	def(&c.Namespace, names.Namespace)
	def(&c.ServiceAccount, names.ControlPlane)
	def(&c.CASecret, identity.CASecretName)
	def(&c.GRPCAddr, ":"+strconv.Itoa(names.ControlPlaneGRPC))
	def(&c.HTTPAddr, ":"+strconv.Itoa(names.ControlPlaneAdmin))
	def(&c.AuditDB, audit.DefaultStorePath)
	if c.SVIDTTL == 0 {
		c.SVIDTTL = 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	return nil
}

// ServerNames are the DNS names weft's own servers get next to their SPIFFE
// IDs: the Service name in its short and fully qualified forms.
func ServerNames(td spiffeid.TrustDomain, namespace string, servers ...string) map[spiffeid.ID][]string {
	out := map[spiffeid.ID][]string{}
	for _, s := range servers {
		id := spiffeid.RequireFromSegments(td, "ns", namespace, "sa", s)
		out[id] = []string{s + "." + namespace + ".svc", s + "." + namespace + ".svc.cluster.local"}
	}
	return out
}

// Run serves until ctx ends, then drains and returns.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	log := cfg.Logger
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("controlplane: trust domain %q: %w", cfg.TrustDomain, err)
	}
	ca, err := identity.CAStore{Client: cfg.Kube, Namespace: cfg.Namespace, Name: cfg.CASecret, Logger: log}.
		LoadOrCreate(ctx, certs.CAConfig{TrustDomain: td, Clock: cfg.Clock, WorkloadTTL: cfg.SVIDTTL})
	if err != nil {
		return err
	}
	serverNames := ServerNames(td, cfg.Namespace, names.ControlPlane, names.Injector)
	self := spiffeid.RequireFromSegments(td, "ns", cfg.Namespace, "sa", cfg.ServiceAccount)
	serving := &servingCert{ca: ca, id: self, dns: serverNames[self], ttl: cfg.SVIDTTL, clock: cfg.Clock, log: log}
	if err := serving.issue(); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	meshRegistry, err := registry.New(registry.Config{Client: cfg.Kube, Weft: cfg.Weft, TrustDomain: td.String(),
		Logger: log.With("component", "registry"), Clock: cfg.Clock, GatewayAPI: cfg.HTTPRouting})
	if err != nil {
		return err
	}
	// One TokenReview cache for the certificate service and the streams
	// (ADS, audit), which present the same pod token. The pod a token is
	// bound to is checked in the registry's informer cache when it holds
	// it: a new pod costs the API server one request, not two.
	authn := &identity.CachingAuthenticator{Next: &identity.TokenReviewer{Client: cfg.Kube, Pods: meshRegistry.Pod}, Clock: cfg.Clock}
	svc, err := identity.New(identity.Config{
		CA: ca, Authenticator: authn, Logger: log.With("component", "identity"),
		Clock: cfg.Clock, Registerer: reg, MaxTTL: cfg.SVIDTTL, ServerNames: serverNames,
	})
	if err != nil {
		return err
	}
	gen := &translate.Generator{Snapshot: meshRegistry.Current, Bundle: ca.BundlePEM,
		ControlPlaneAddr: names.ControlPlaneAddr(cfg.Namespace), HTTPRouting: cfg.HTTPRouting}
	// Who may hold a pod's ADS and audit streams: its SVID, its token
	// (which its app containers do not have), from its IP; until the pod
	// goes or the SVID expires.
	streams, err := streamauth.New(streamauth.Config{Authenticator: authn, Pods: registryPods{meshRegistry}, Bundle: caBundle{ca},
		Clock: cfg.Clock, Logger: log.With("component", "streamauth")})
	if err != nil {
		return err
	}
	xs, err := ads.New(ads.Config{Generator: gen, Authorizer: streams, Bundle: caBundle{ca},
		Logger: log.With("component", "xds"), Clock: cfg.Clock, Registerer: reg, Debounce: cfg.Debounce, MaxDelay: cfg.MaxDelay})
	if err != nil {
		return err
	}

	store, err := audit.OpenStore(audit.StoreConfig{Path: cfg.AuditDB, Retention: cfg.AuditRetention, MaxEvents: cfg.AuditMaxEvents,
		Logger: log.With("component", "audit"), Clock: cfg.Clock})
	if err != nil {
		return err
	}
	defer store.Close()
	var exporter *audit.OTLPExporter
	var onStored func(apiaudit.Event)
	if cfg.OTLPEndpoint != "" {
		exporter, err = audit.NewOTLPExporter(audit.OTLPConfig{Endpoint: cfg.OTLPEndpoint, Insecure: cfg.OTLPInsecure,
			Logger: log.With("component", "audit"), Registerer: reg})
		if err != nil {
			return err
		}
		onStored = exporter.Export
	}
	asvc, err := audit.NewService(audit.ServiceConfig{Store: store, Authorizer: streams, Registerer: reg, Logger: log.With("component", "audit"), OnStored: onStored,
		Clock: cfg.Clock})
	if err != nil {
		return err
	}

	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("controlplane: listen %s: %w", cfg.GRPCAddr, err)
	}
	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("controlplane: listen %s: %w", cfg.HTTPAddr, err)
	}
	// A connection ends when its client certificate expires: a sidecar
	// then reconnects with its renewed SVID (a new stream on the old
	// connection would be refused).
	gs := grpc.NewServer(serverOptions(expiringCreds{credentials.NewTLS(serverTLS(ca, serving)), cfg.Clock}, xs.StreamInterceptor())...)
	certificatev1.RegisterCertificateServiceServer(gs, svc)
	xs.Register(gs)
	asvc.Register(gs)

	started := cfg.Clock.Now()
	// /metrics and /healthz are open, over plain HTTP or TLS; /audit and
	// /debug need TLS, a caller the API server vouches for and RBAC
	// (adminauth, adminport.go).
	clientCAs := &adminauth.ClientCAs{Client: cfg.Kube, Clock: cfg.Clock, Logger: log.With("component", "adminauth")}
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	caErr := clientCAs.Load(lctx)
	lcancel()
	if err := caErr; err != nil {
		log.Warn("admin port: no client CA yet, bearer tokens only until it is read", "err", err)
	}
	guard, err := adminauth.New(adminauth.Config{Client: cfg.Kube, Namespace: cfg.Namespace, Clock: cfg.Clock, Logger: log.With("component", "adminauth")})
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return err
	}
	debug := http.NewServeMux()
	debug.HandleFunc("GET "+admin.StatusPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		st := status(ca, serving, started)
		st.Sidecars = xs.Status()
		_ = json.NewEncoder(w).Encode(st)
	})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/audit/", guard.Protect(adminauth.ResourceAuditEvents, asvc.Handler()))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("/debug/", guard.Protect(adminauth.ResourceDebug, debug))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	adminLis := newSniffListener(httpLis, adminTLS(serving, clientCAs), 10*time.Second, cfg.Clock)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	wg.Go(func() { serving.renew(ctx) })
	wg.Go(func() { clientCAs.Run(ctx, caErr != nil) })
	wg.Go(func() {
		if err := meshRegistry.Run(ctx); err != nil && ctx.Err() == nil {
			errs <- err
		}
	})
	wg.Go(func() {
		if err := store.Run(ctx, asvc.Pruned); err != nil && ctx.Err() == nil {
			errs <- err
		}
	})
	if exporter != nil {
		wg.Go(func() {
			if err := exporter.Run(ctx); err != nil && ctx.Err() == nil {
				errs <- err
			}
		})
	}
	wg.Go(func() {
		if err := xs.Run(ctx); err != nil && ctx.Err() == nil {
			errs <- err
		}
	})
	wg.Go(func() {
		// Streams whose pod was deleted or replaced end.
		streams.Run(ctx, meshRegistry.Subscribe())
	})
	wg.Go(func() {
		// Every new mesh model is pushed (debounced) to the sidecars it
		// changes.
		changes := meshRegistry.Subscribe()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changes:
				xs.Changed()
			}
		}
	})
	wg.Go(func() {
		pub := &identity.BundlePublisher{Client: cfg.Kube, Bundle: ca.BundlePEM, HomeNamespace: cfg.Namespace, Logger: log.With("component", "bundle")}
		if err := pub.Run(ctx); err != nil && ctx.Err() == nil {
			errs <- err
		}
	})
	wg.Go(func() {
		if err := gs.Serve(grpcLis); err != nil {
			errs <- fmt.Errorf("controlplane: gRPC: %w", err)
		}
	})
	wg.Go(func() {
		if err := hs.Serve(adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("controlplane: HTTP: %w", err)
		}
	})
	log.Info("control plane serving", "version", version.Version, "grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(),
		"trust_domain", td.String(), "spiffe_id", self.String())
	if cfg.Ready != nil {
		cfg.Ready(grpcLis.Addr(), httpLis.Addr())
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	cancel()
	shutdownGRPC(gs, 10*time.Second, cfg.Clock)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = hs.Shutdown(sctx)
	scancel()
	wg.Wait()
	return runErr
}

// shutdownGRPC lets in-flight calls finish, then cuts long streams
// once grace has passed on clk.
func shutdownGRPC(gs *grpc.Server, grace time.Duration, clk clock.Clock) {
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-clk.After(grace):
		gs.Stop()
		<-done
	}
}

// Status is what /debug/status reports (read by weftctl status); Cert
// describes one CA certificate in it.
type (
	Status = admin.Status
	Cert   = admin.Cert
)

func status(ca *certs.CA, serving *servingCert, started time.Time) Status {
	s := Status{Version: version.Version, TrustDomain: ca.TrustDomain().String(), Started: started,
		ServingCertAfter: serving.cur.Load().Leaf.NotAfter}
	for _, r := range ca.Roots() {
		fp := certs.Fingerprint(r)
		s.Roots = append(s.Roots, Cert{Fingerprint: fmt.Sprintf("%x", fp), NotBefore: r.NotBefore, NotAfter: r.NotAfter})
	}
	im := ca.Intermediate()
	fp := certs.Fingerprint(im)
	s.Intermediate = Cert{Fingerprint: fmt.Sprintf("%x", fp), NotBefore: im.NotBefore, NotAfter: im.NotAfter}
	s.IntermediateOnly = ca.IntermediateOnly()
	return s
}
