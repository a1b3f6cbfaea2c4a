// Command rsssidecar is the sidecar of BenchmarkSidecarRSS
// (test/integration): sidecar.Run as cmd/weft-sidecar runs it (the
// runtime's memory settings, free heap given back once quiet), on
// loopback ports of its own instead of capture's fixed ones, so that its
// resident memory is a weft-sidecar's and not a test binary's. Its config
// is JSON in $WEFT_RSS_SIDECAR; it writes "ready <health address>" to fd 3
// and runs until SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/weftmesh/weft/internal/memtune"
	"github.com/weftmesh/weft/sidecar"
)

// Config is what BenchmarkSidecarRSS passes.
type Config struct {
	ControlPlane, Token, Bundle, Socket string
	Delta, OnDemand, Destinations       bool
}

func main() {
	var c Config
	if err := json.Unmarshal([]byte(os.Getenv("WEFT_RSS_SIDECAR")), &c); err != nil {
		fmt.Fprintln(os.Stderr, "rsssidecar: $WEFT_RSS_SIDECAR:", err)
		os.Exit(2)
	}
	events := os.NewFile(3, "events")
	cfg := sidecar.Config{ControlPlane: c.ControlPlane, TokenPath: c.Token, BundlePath: c.Bundle,
		WorkloadSocket: c.Socket, HealthAddr: "127.0.0.1:0",
		InboundAddr: "127.0.0.1:0", OutboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", DNSAddrs: []string{"127.0.0.1:0"},
		PodName: "app-1", PodNamespace: "demo", XDSDelta: c.Delta, XDSOnDemand: c.OnDemand, XDSDestinations: c.Destinations,
		Ready: func(h net.Addr) { fmt.Fprintf(events, "ready %s\n", h) }}
	// As cmd/weft-sidecar: the runtime's memory settings, the limit they
	// found passed on.
	if mem := memtune.Apply(); mem.MemoryLimit != math.MaxInt64 {
		cfg.MemoryLimit = mem.MemoryLimit
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go memtune.ReleaseWhenQuiet(ctx, memtune.Quiet{}, nil)
	if err := sidecar.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "rsssidecar:", err)
		os.Exit(1)
	}
}
