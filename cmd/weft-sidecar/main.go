// Command weft-sidecar is weft's proxy beside every meshed app.
//
//	weft-sidecar run    the sidecar: identity, Workload API, xDS, proxy, DNS proxy, audit, health (:15020)
//	weft-sidecar init   install the traffic-capture rules (the weft-init container)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/internal/memtune"
	"github.com/weftmesh/weft/sidecar"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "init":
		err = initCapture(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "weft-sidecar: unknown command %q\n", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft-sidecar:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: weft-sidecar run|init [flags]  (weft-sidecar <command> -h lists the flags)")
	os.Exit(2)
}

func logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: l})), nil
}

func run(args []string) error {
	var cfg sidecar.Config
	var level string
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&cfg.ControlPlane, "control-plane", names.DefaultControlPlaneAddr, "control plane address")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", names.DefaultTrustDomain, "SPIFFE trust domain")
	fs.StringVar(&cfg.WeftNamespace, "weft-namespace", names.Namespace, "namespace weft is installed in")
	fs.StringVar(&cfg.TokenPath, "token", names.TokenPath, "projected ServiceAccount token (audience weft-ca)")
	fs.StringVar(&cfg.BundlePath, "bundle", names.BundlePath, "trust bundle (PEM)")
	fs.StringVar(&cfg.WorkloadSocket, "workload-socket", names.WorkloadSocket, "SPIFFE Workload API socket")
	fs.StringVar(&cfg.HealthAddr, "health-addr", ":"+strconv.Itoa(names.SidecarHealthPort), "health and metrics address")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 20*time.Second, "how long SIGTERM waits for in-flight work")
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&cfg.XDSDelta, "xds-delta", true, "incremental (delta) xDS; false selects state-of-the-world")
	fs.BoolVar(&cfg.XDSOnDemand, "xds-on-demand", true,
		"with -xds-delta: learn an in-mesh Service's cluster and endpoints when a connection first needs them, not every Service's")
	fs.BoolVar(&cfg.XDSDestinations, "xds-destinations", true,
		"with -xds-on-demand: look each destination (address and port) up when a connection first goes to it, instead of holding a chain for every Service address and endpoint")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve Go's profiles at /debug/pprof/ on the admin port (127.0.0.1:15000)")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", 10*time.Second,
		"how long a proxied connection may take, from accept, to be established (its first bytes, first HTTP request head, TLS handshake)")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", time.Hour, "close a proxied connection that moved no byte either way for this long")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", 5*time.Minute, "close a proxied connection whose peer did not take a write for this long")
	_ = fs.Parse(args)
	for name, d := range map[string]time.Duration{"handshake-timeout": cfg.HandshakeTimeout, "idle-timeout": cfg.IdleTimeout, "write-timeout": cfg.WriteTimeout} {
		if d <= 0 {
			return fmt.Errorf("--%s %v: must be positive", name, d)
		}
	}
	log, err := logger(level)
	if err != nil {
		return err
	}
	cfg.Logger = log
	mem := memtune.Apply()
	log.Info("runtime memory settings", "settings", mem.String())
	if mem.MemoryLimit != math.MaxInt64 {
		cfg.MemoryLimit = mem.MemoryLimit
	}
	cfg.PodName, cfg.PodNamespace = os.Getenv(names.PodNameEnv), os.Getenv(names.PodNamespaceEnv)
	cfg.AppProbes = os.Getenv(names.AppProbesEnv)
	cfg.AuditOut = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go memtune.ReleaseWhenQuiet(ctx, memtune.Quiet{}, func(before, after uint64) {
		log.Debug("returned free heap to the OS after a quiet period", "heap_before_bytes", before, "heap_after_bytes", after)
	})
	return sidecar.Run(ctx, cfg)
}
