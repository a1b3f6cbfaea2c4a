package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/api/admin"
	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/api/names"
	wm "github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/version"
	"github.com/weftmesh/weft/sidecar/audit"
	"github.com/weftmesh/weft/sidecar/dnsproxy"
	"github.com/weftmesh/weft/sidecar/identity"
	"github.com/weftmesh/weft/sidecar/proxy"
	"github.com/weftmesh/weft/sidecar/xds"
)

// Config configures the sidecar. Paths default to where the injector mounts
// things.
type Config struct {
	ControlPlane   string // "weft-controlplane.weft-system.svc:15012"
	TrustDomain    string // "cluster.local"
	WeftNamespace  string // "weft-system"
	TokenPath      string // projected token, audience weft-ca
	BundlePath     string // weft-trust-bundle ConfigMap's bundle.pem
	WorkloadSocket string // SPIFFE Workload API socket shared with the app
	HealthAddr     string // ":15020"
	InboundAddr    string // ":15006": where capture sends inbound TCP
	OutboundAddr   string // "127.0.0.1:15001": where capture sends outbound TCP
	AdminAddr      string // "127.0.0.1:15000": /connections, /config_dump
	Pprof          bool   // /debug/pprof/ on the admin endpoint (weft-sidecar run --pprof)
	// OutboundAddr6 is where capture sends outbound IPv6 TCP:
	// "[::1]:15001" when OutboundAddr is left to its default as well,
	// none when OutboundAddr is set; "-" none. Optional: a pod without
	// IPv6 serves IPv4 alone (see proxy.Config.OutboundAddr6).
	OutboundAddr6 string
	// DNSAddrs are where capture sends the pod's DNS (UDP and TCP): the
	// DNS proxy that binds egress names to addresses. Default
	// 127.0.0.1:15053 and [::1]:15053 (the latter only where the pod has
	// IPv6); "-" alone serves no DNS (names are then bound by the
	// sidecar's own lookups only).
	DNSAddrs []string
	// ResolvConf names the pod's nameservers, which the DNS proxy forwards
	// to ("/etc/resolv.conf").
	ResolvConf string
	// OriginalDst overrides SO_ORIGINAL_DST (tests without capture rules).
	OriginalDst  func(*net.TCPConn) (netip.AddrPort, error)
	PodName      string
	PodNamespace string
	// AuditOut receives one JSON line per egress connection (stdout).
	AuditOut io.Writer
	// XDSDelta selects incremental xDS instead of state-of-the-world.
	XDSDelta bool
	// XDSOnDemand (with XDSDelta) learns the in-mesh Services' clusters and
	// endpoints when a connection first needs them, not the whole mesh's
	// (sidecar/xds.ClientConfig.OnDemand).
	XDSOnDemand bool
	// XDSDestinations (with XDSOnDemand) also looks up the in-mesh
	// destinations on demand: destination listeners subscribed by name at
	// a connection's first use of its address and port.
	XDSDestinations bool
	// AppProbes is the JSON of the app's original probes (WEFT_APP_PROBES,
	// from the weft.dev/probes annotation); served on /app-health/.
	AppProbes string
	// DrainTimeout bounds how long SIGTERM waits for in-flight work.
	DrainTimeout time.Duration
	// HandshakeTimeout, IdleTimeout and WriteTimeout bound a proxied
	// connection before it is established, while it is idle, and per
	// write (proxy.Config has their meaning; zero: the proxy's defaults,
	// 10s, 1h, 5m). weft-sidecar run --handshake-timeout, --idle-timeout,
	// --write-timeout, which the injector sets from the MeshConfig's
	// proxyTimeouts and the pod's weft.dev/proxy-*-timeout annotations.
	HandshakeTimeout, IdleTimeout, WriteTimeout time.Duration
	// MemoryLimit is the memory the sidecar runs under (bytes; 0: none
	// known): weft-sidecar run passes the Go runtime's soft limit that
	// internal/memtune set. The proxy caps its connections to fit it
	// (proxy.ConnectionsFor).
	MemoryLimit int64
	Logger      *slog.Logger
	Clock       clock.WithTicker
	// Ready, if set, is called with the health address once it listens.
	Ready func(health net.Addr)
}

func (c *Config) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.ControlPlane, names.DefaultControlPlaneAddr)
	def(&c.TrustDomain, names.DefaultTrustDomain)
	def(&c.WeftNamespace, names.Namespace)
	def(&c.TokenPath, names.TokenPath)
	def(&c.BundlePath, names.BundlePath)
	def(&c.WorkloadSocket, names.WorkloadSocket)
	def(&c.HealthAddr, hostPort("", names.SidecarHealthPort))
	def(&c.InboundAddr, hostPort("", names.SidecarInboundPort))
	def(&c.ResolvConf, "/etc/resolv.conf")
	if len(c.DNSAddrs) == 0 {
		c.DNSAddrs = []string{hostPort("127.0.0.1", names.SidecarDNSPort), hostPort("::1", names.SidecarDNSPort)}
	}
	if c.OutboundAddr == "" {
		def(&c.OutboundAddr6, proxy.DefaultOutboundAddr6)
	}
	def(&c.OutboundAddr, hostPort("127.0.0.1", names.SidecarOutboundPort))
	def(&c.AdminAddr, hostPort("127.0.0.1", names.SidecarAdminPort))
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 20 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.AuditOut == nil {
		c.AuditOut = io.Discard
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
}

// Run runs the sidecar until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	log := cfg.Logger
	if soft, hard, err := raiseNoFile(); err != nil {
		log.Warn("cannot raise the open-file limit", "soft", soft, "hard", hard, "err", err)
	} else {
		log.Debug("open-file limit", "soft", soft, "hard", hard)
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("sidecar: trust domain %q: %w", cfg.TrustDomain, err)
	}
	bundle, err := newFileBundle(cfg.BundlePath, td)
	if err != nil {
		return err
	}
	cpID, err := spiffeid.FromSegments(td, "ns", cfg.WeftNamespace, "sa", names.ControlPlane)
	if err != nil {
		return fmt.Errorf("sidecar: control plane ID: %w", err)
	}
	conn, err := grpc.NewClient(cfg.ControlPlane,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(cpID)))),
		grpc.WithUserAgent("weft-sidecar/"+version.Version))
	if err != nil {
		return fmt.Errorf("sidecar: control plane %s: %w", cfg.ControlPlane, err)
	}
	defer conn.Close()
	ids, err := identity.New(identity.Config{
		Client: certificatev1.NewCertificateServiceClient(conn), TokenPath: cfg.TokenPath,
		Clock: cfg.Clock, Logger: log.With("component", "identity"),
	})
	if err != nil {
		return err
	}

	// ADS runs over its own mTLS connection: the pod's SVID as client
	// certificate (fetched per handshake, so renewals apply), the control
	// plane's SPIFFE ID checked under the bundle the SVID came with. Every
	// stream on it also carries the pod's token, which the app containers
	// do not have (they do have the SVID): the control plane requires it.
	adsConn, err := grpc.NewClient(cfg.ControlPlane,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.MTLSClientConfig(ids, ids, tlsconfig.AuthorizeID(cpID)))),
		grpc.WithPerRPCCredentials(identity.TokenCredentials(cfg.TokenPath)),
		grpc.WithUserAgent("weft-sidecar/"+version.Version))
	if err != nil {
		return fmt.Errorf("sidecar: control plane %s: %w", cfg.ControlPlane, err)
	}
	defer adsConn.Close()
	ads, err := xds.New(xds.ClientConfig{Conn: adsConn, NodeID: cfg.PodName + "." + cfg.PodNamespace, Delta: cfg.XDSDelta,
		OnDemand: cfg.XDSDelta && cfg.XDSOnDemand, DestinationListeners: cfg.XDSDelta && cfg.XDSOnDemand && cfg.XDSDestinations, TrustDomain: td, UserAgentVersion: version.Version, Logger: log.With("component", "xds"), Clock: cfg.Clock})
	if err != nil {
		return err
	}

	reg := wm.NewRegistry()
	if err := wm.RegisterRuntime(reg); err != nil {
		return err
	}
	if err := registerIdentity(reg, ids); err != nil {
		return err
	}
	if err := registerXDS(reg, ads); err != nil {
		return err
	}
	// Egress audit events: JSON lines on stdout and, over the same mTLS
	// connection as ADS (the control plane requires the SVID), Envoy's
	// access-log service protocol.
	rec, err := audit.New(audit.Config{SVID: ids, Pod: cfg.PodName, Namespace: cfg.PodNamespace, Out: cfg.AuditOut,
		Conn: adsConn, Logger: log.With("component", "audit"), Clock: cfg.Clock, Metrics: reg})
	if err != nil {
		return err
	}
	// The DNS proxy and the name table it fills: what binds an egress
	// name to the addresses a connection by that name may go to.
	bound := dnsproxy.NewNames(dnsproxy.Config{Clock: cfg.Clock})
	dns, dnsConns, err := listenDNS(cfg, bound, reg, log.With("component", "dns"))
	if err != nil {
		return err
	}
	px, err := proxy.New(proxy.Config{SVID: ids, Bundle: ids, TrustDomain: td, Config: ads.Current, Demand: ads.Demand, Destination: ads.Destination, Audit: rec.Record, Names: bound,
		InboundAddr: cfg.InboundAddr, OutboundAddr: cfg.OutboundAddr, OutboundAddr6: cfg.OutboundAddr6, AdminAddr: cfg.AdminAddr, Pprof: cfg.Pprof,
		OriginalDst: cfg.OriginalDst, Logger: log.With("component", "proxy"), Clock: cfg.Clock, Metrics: reg,
		DrainTimeout: cfg.DrainTimeout, HandshakeTimeout: cfg.HandshakeTimeout, IdleTimeout: cfg.IdleTimeout, WriteTimeout: cfg.WriteTimeout,
		MemoryLimit: cfg.MemoryLimit})
	if err != nil {
		return err
	}

	probes, err := parseAppProbes(cfg.AppProbes)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.HealthAddr)
	if err != nil {
		return fmt.Errorf("sidecar: listen %s: %w", cfg.HealthAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(names.SidecarReadyPath, func(w http.ResponseWriter, _ *http.Request) {
		if _, err := ids.GetX509SVID(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		select {
		case <-px.Ready():
		default:
			http.Error(w, "not ready: proxy listeners not up", http.StatusServiceUnavailable)
			return
		}
		if ads.Current() == nil {
			st := ads.Status()
			http.Error(w, fmt.Sprintf("not ready: no complete xDS configuration yet (connected %v, waiting for %v, last error %q)",
				st.Connected, st.Waiting, st.LastError), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	// Uncompressed: a sidecar's exposition is a few KB, and a gzip
	// compressor costs ~660 KB of heap per scrape (seen with
	// /debug/pprof/heap in a pod when promhttp served it), a tenth of an
	// idle sidecar's private memory.
	mux.Handle("/metrics", reg)
	mux.Handle(names.AppHealthPrefix, appHealth{probes: probes, host: "127.0.0.1"})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 8+len(dnsConns))
	var wg sync.WaitGroup
	for _, c := range dnsConns {
		wg.Go(func() {
			if err := c.serve(runCtx, dns); err != nil && runCtx.Err() == nil {
				errs <- err
			}
		})
	}
	wg.Go(func() {
		if err := ids.Run(runCtx); err != nil {
			errs <- err
		}
	})
	wg.Go(func() {
		if err := ids.ServeWorkloadAPI(runCtx, cfg.WorkloadSocket); err != nil {
			errs <- err
		}
	})
	wg.Go(func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("sidecar: health server: %w", err)
		}
	})
	log.Info("sidecar starting", "version", version.Version, "pod", cfg.PodNamespace+"/"+cfg.PodName,
		"control_plane", cfg.ControlPlane, "health", lis.Addr().String())
	if cfg.Ready != nil {
		cfg.Ready(lis.Addr())
	}
	wg.Go(func() {
		if err := rec.Run(runCtx); err != nil && runCtx.Err() == nil {
			errs <- err
		}
	})
	proxyDone := make(chan struct{})
	proxyCtx, proxyCancel := context.WithCancel(ctx)
	defer proxyCancel()
	wg.Go(func() {
		// The proxy drains on ctx (SIGTERM), before the identity and the
		// control-plane connection go away.
		defer close(proxyDone)
		if err := px.Run(proxyCtx); err != nil && proxyCtx.Err() == nil {
			errs <- err
		}
	})
	wg.Go(func() {
		// The ADS stream needs the SVID as its client certificate.
		select {
		case <-ids.Ready():
		case <-runCtx.Done():
			return
		}
		if err := ads.Run(runCtx); err != nil && runCtx.Err() == nil {
			errs <- err
		}
	})
	go func() {
		select {
		case <-ids.Ready():
			svid, err := ids.GetX509SVID()
			if err == nil {
				log.Info("identity ready", "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
			}
		case <-runCtx.Done():
		}
	}()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("draining", "timeout", cfg.DrainTimeout)
	case runErr = <-errs:
	}
	proxyCancel() // drain: stop accepting, finish open connections

	<-proxyDone
	sctx, scancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	_ = hs.Shutdown(sctx)
	scancel()
	cancel()
	wg.Wait()
	return runErr
}

// registerIdentity exports the identity's state.
func registerIdentity(reg *wm.Registry, m *identity.Manager) error {
	err := reg.NewFunc(admin.SVIDExpiryMetric, "When the current X.509-SVID expires (Unix time).", wm.GaugeType, nil,
		func(emit wm.Emit) {
			if na := m.NotAfter(); !na.IsZero() {
				emit(float64(na.Unix()))
			}
		})
	if err != nil {
		return err
	}
	err = reg.NewFunc("weft_sidecar_svid_renewals_total", "X.509-SVIDs obtained, the first included.", wm.CounterType, nil,
		func(emit wm.Emit) { emit(float64(m.Renewals())) })
	if err != nil {
		return err
	}
	return reg.NewFunc("weft_sidecar_svid_fetch_failures_total", "Failed attempts to obtain an X.509-SVID.", wm.CounterType, nil,
		func(emit wm.Emit) { emit(float64(m.Failures())) })
}

// registerXDS exports the xDS client's state.
func registerXDS(reg *wm.Registry, c *xds.Client) error {
	for _, f := range []struct {
		name, help string
		typ        wm.Type
		labels     []string
		collect    func(st xds.Status, emit wm.Emit)
	}{
		{"weft_sidecar_xds_acks_total", "xDS responses accepted.", wm.CounterType, nil,
			func(st xds.Status, emit wm.Emit) { emit(float64(st.Acks)) }},
		{"weft_sidecar_xds_nacks_total", "xDS responses rejected, by resource kind.", wm.CounterType, []string{"kind"},
			func(st xds.Status, emit wm.Emit) {
				for kind, n := range st.Nacks {
					emit(float64(n), kind)
				}
			}},
		{"weft_sidecar_xds_reconnects_total", "ADS streams re-established.", wm.CounterType, nil,
			func(st xds.Status, emit wm.Emit) { emit(float64(st.Reconnects)) }},
		{"weft_sidecar_xds_too_large_total", "ADS streams ended because a message was too large (ResourceExhausted); the reconnect backoff is not reset.", wm.CounterType, nil,
			func(st xds.Status, emit wm.Emit) { emit(float64(st.TooLarge)) }},
		{"weft_sidecar_xds_connected", "1 while the ADS stream is up.", wm.GaugeType, nil,
			func(st xds.Status, emit wm.Emit) {
				connected := 0.0
				if st.Connected {
					connected = 1
				}
				emit(connected)
			}},
		{"weft_sidecar_xds_demanded_clusters", "In-mesh Services' clusters asked for on demand and held or awaited (-xds-on-demand).", wm.GaugeType, nil,
			func(st xds.Status, emit wm.Emit) { emit(float64(len(st.Demanded))) }},
		{"weft_sidecar_xds_destinations", "Destinations (address and port) looked up and held or awaited (-xds-destinations).", wm.GaugeType, nil,
			func(st xds.Status, emit wm.Emit) { emit(float64(len(st.Destinations))) }},
	} {
		collect := f.collect
		if err := reg.NewFunc(f.name, f.help, f.typ, f.labels, func(emit wm.Emit) { collect(c.Status(), emit) }); err != nil {
			return err
		}
	}
	return nil
}

// raiseNoFile raises the soft limit on open files to the hard limit, as
// Envoy and Go's own net/http users are told to: every proxied connection
// holds two descriptors, and the runtime's soft default (1024) is reached
// long before memory is. It returns the limits in force.
func raiseNoFile() (soft, hard uint64, err error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return l.Cur, l.Max, err
		}
	}
	return l.Cur, l.Max, nil
}

// hostPort is host:port, the port one of api/names'.
func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
