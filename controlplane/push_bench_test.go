package controlplane

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/xds"
	"github.com/weftmesh/weft/controlplane/xds/translate"
)

var (
	pushClients = flag.Int("push.clients", 100,
		"BenchmarkEndpointChurnPush: connected delta ADS clients (sidecars)")
	pushChanges = flag.Int("push.changes", 10,
		"BenchmarkEndpointChurnPush: EndpointSlice changes per iteration")
	pushMode = flag.String("push.change", "ready",
		"BenchmarkEndpointChurnPush: ready (flip an endpoint's ready condition: EDS only) or address (move an endpoint: EDS and the outbound listener)")
	pushInterval = flag.Duration("push.interval", 0,
		"BenchmarkEndpointChurnPush: 0 makes each change wait until every client has the previous one; >0 makes a change every interval (open-loop churn; changes then share rounds)")
	pushSubscribe = flag.Int("push.subscribe", 0,
		"BenchmarkEndpointChurnPush: 0 makes each client subscribe to every Service's endpoints (as sidecars do today); N>0 to N Services' only, the changes visiting those (what a sidecar scoped to the Services it reaches would cost)")
	pushScopeClusters = flag.Bool("push.scopeclusters", false,
		"BenchmarkEndpointChurnPush: with -push.subscribe, each client also subscribes to those Services' clusters by name instead of every cluster")
	pushLookup = flag.Bool("push.lookup", false,
		"BenchmarkEndpointChurnPush: with -push.subscribe, each client also looks destinations up as weft's sidecar does by default (client feature weft.destination_listeners; listeners by name: inbound, outbound and the scoped Services' ClusterIP and port)")
	pushCPUProfile = flag.String("push.cpuprofile", "",
		"BenchmarkEndpointChurnPush: write a CPU profile of the churn alone here (from the first change until the last round settled; -test.cpuprofile covers the set-up and the connections too)")
	pushHeapProfile = flag.String("push.heapprofile", "",
		"BenchmarkEndpointChurnPush: write a heap profile here when heap-MB is measured (every client still connected; -test.memprofile is written after they are gone), and the base heap's to <path>.base")
)

const (
	pushServices  = 1000
	pushEndpoints = 10
)

// pushBase are the baselines, measured directly on the same cluster.
type pushBase struct {
	registryMs float64 // Update → new snapshot published, nothing else running (p50)
	generateMs float64 // translate.Generator.Generate for one sidecar (p50)
	resources  int     // what Generate returns for one sidecar
	bytes      int
	heapBase   uint64 // HeapInuse after GC: fake API server + registry, no xDS
}

// BenchmarkEndpointChurnPush: 1,000 Services × 10 endpoints and 100 client
// pods (-push.clients) in a fake API server; a registry on it; the xDS
// server with translate.Generator, streamauth and the control plane's TLS on
// 127.0.0.1; one delta ADS client per client pod, each with its own SVID,
// all synced. Then -push.changes EndpointSlice updates through the fake
// clientset, each measured from the Update call until each client receives
// the EDS response carrying it (p50/p99 over clients × changes), with the
// default debounce (100ms) and with 1ms, so debounce and work separate.
// The clients run in a child process (-push.clientproc, the default), so
// the benchmark's process is the fake API server, the registry and the
// control plane: cpu-cores is its user+sys time over the churn's wall
// time, heap-MB its heap, clients-cpu-ms/change the child's CPU. With
// -push.clientproc=false the clients run in the benchmark's process and
// every CPU and heap figure includes theirs.
//
//	go test -run=NONE -bench=EndpointChurn -benchtime=1x ./controlplane/
func BenchmarkEndpointChurnPush(b *testing.B) {
	if *pushMode != "ready" && *pushMode != "address" {
		b.Fatalf("-push.change=%q: want ready or address", *pushMode)
	}
	t0 := time.Now()
	env := newPushEnv(b, pushServices, pushEndpoints, *pushClients, *pushMode)
	if n := *pushSubscribe; n > 0 {
		if n > pushServices {
			b.Fatalf("-push.subscribe=%d: there are %d Services", n, pushServices)
		}
		env.scope = n
		for k := range n {
			env.scopeNames = append(env.scopeNames, env.edsName(env.service(k)))
		}
		if *pushScopeClusters {
			env.scopeClusters = env.scopeNames
		}
		if env.lookup = *pushLookup; env.lookup {
			for k := range n {
				ip := netip.MustParseAddr(pushAddr(pushServiceBase, env.service(k)))
				env.scopeListeners = append(env.scopeListeners, names.DestinationListener(netip.AddrPortFrom(ip, 80)))
			}
		}
	}
	b.Logf("cluster of %d services × %d endpoints, %d client pods: registry synced in %v",
		pushServices, pushEndpoints, *pushClients, time.Since(t0).Round(time.Millisecond))
	base := env.baselines(b)
	b.Logf("baselines: registry Update→published p50 %.1f ms; Generate(one sidecar) p50 %.1f ms (%d resources, %d bytes); heap %d MB",
		base.registryMs, base.generateMs, base.resources, base.bytes, base.heapBase>>20)
	for _, d := range []time.Duration{100 * time.Millisecond, time.Millisecond} {
		b.Run(fmt.Sprintf("debounce=%v", d), func(b *testing.B) { env.churn(b, d, base) })
	}
}

func (env *pushEnv) baselines(b *testing.B) pushBase {
	var base pushBase
	ctx := context.Background()
	sub := env.reg.Subscribe()
	select {
	case <-sub: // the snapshot present at subscription
	default:
	}
	var reg []time.Duration
	for range 5 {
		c, err := env.change(ctx, 0)
		if err != nil {
			b.Fatal(err)
		}
		select {
		case <-sub:
			reg = append(reg, time.Since(c.start))
		case <-time.After(30 * time.Second):
			b.Fatal("registry published nothing 30s after an EndpointSlice update")
		}
	}
	base.registryMs = pctMs(reg, 0.5)

	p := env.clients[0]
	tr := &translate.Generator{Snapshot: env.reg.Current, Bundle: env.ca.BundlePEM, ControlPlaneAddr: pushCPAddr}
	node := xds.Node{Name: p.name, Namespace: p.ns, ID: p.id}
	res, err := tr.Generate(node)
	if err != nil {
		b.Fatal(err)
	}
	for _, items := range res {
		for _, r := range items {
			base.resources++
			base.bytes += proto.Size(r)
		}
	}
	var gen []time.Duration
	for range 10 {
		t := time.Now()
		if _, err := tr.Generate(node); err != nil {
			b.Fatal(err)
		}
		gen = append(gen, time.Since(t))
	}
	base.generateMs = pctMs(gen, 0.5)

	var ms runtime.MemStats
	// Twice: what sync.Pools held at the first collection (gRPC's buffers)
	// survives it in their victim caches; it is gone at the second.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if *pushHeapProfile != "" {
		// The base's own profile: pprof -diff_base path.base path shows
		// what the xDS server and its clients hold.
		writeHeapProfile(b, *pushHeapProfile+".base")
	}
	base.heapBase = ms.HeapInuse
	return base
}

func (env *pushEnv) churn(b *testing.B, debounce time.Duration, base pushBase) {
	ps := env.startXDS(b, debounce)
	n := len(env.clients)
	timeout := 60*time.Second + time.Duration(n)*100*time.Millisecond
	t0 := time.Now()
	clients := env.connectClients(b, ps, timeout)
	// The snapshot present at Subscribe makes one round; let it pass.
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if _, rounds := ps.metric(b, "weft_xds_regenerate_duration_seconds"); rounds >= 1 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("no xDS round after connecting")
		}
	}
	b.Logf("debounce %v: %d delta clients connected and synced in %v", debounce, n, time.Since(t0).Round(time.Millisecond))

	roundSum0, rounds0 := ps.metric(b, "weft_xds_regenerate_duration_seconds")
	eds0, _ := ps.metric(b, "weft_xds_pushes_total", "type", "endpoint")
	lds0, _ := ps.metric(b, "weft_xds_pushes_total", "type", "listener")
	cds0, _ := ps.metric(b, "weft_xds_pushes_total", "type", "cluster")

	// Peak heap, sampled (ReadMemStats stops the world for microseconds).
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
	})

	wait := func(c *pushChange) {
		select {
		case <-c.done:
		case <-time.After(timeout):
			b.Fatalf("%s: %d of %d clients still without the change after %v; stream errors: %v",
				c.cluster, c.left.Load(), n, timeout, clients.errors())
		}
	}
	ctx := context.Background()
	var each, last, reg, upd []time.Duration
	changes := 0
	var ru0, ru1 syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru0); err != nil {
		b.Fatal(err)
	}
	ccpu0, apart, err := clients.cpu()
	if err != nil {
		b.Fatal(err)
	}
	if *pushCPUProfile != "" {
		f, err := os.Create(*pushCPUProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
	}
	wall0 := time.Now()
	env.slipped = 0
	for b.Loop() {
		var batch []*pushChange
		start := time.Now()
		for k := range *pushChanges {
			if *pushInterval > 0 {
				time.Sleep(time.Until(start.Add(time.Duration(k) * *pushInterval)))
			}
			c, err := env.change(ctx, n)
			if err != nil {
				b.Fatal(err)
			}
			upd = append(upd, time.Since(c.start))
			batch = append(batch, c)
			if *pushInterval == 0 {
				wait(c)
				if p := env.pubAt.Load(); p != 0 {
					reg = append(reg, time.Unix(0, p).Sub(c.start))
				}
			}
		}
		for _, c := range batch {
			wait(c)
			var worst time.Duration
			for i := range c.got {
				d := time.Duration(c.got[i].Load())
				each = append(each, d)
				worst = max(worst, d)
			}
			last = append(last, worst)
		}
		changes += len(batch)
	}
	// Every change is delivered, but the rounds the changes started may
	// still be regenerating the sidecars (endpoints reach the clients
	// before the round that carries them has visited every node): the CPU
	// below counts that work too, and settle-ms says how long it went on.
	settle0 := time.Now()
	for ps.xs.Regenerating() {
		if time.Since(settle0) > timeout {
			b.Fatalf("still regenerating %v after the last change was delivered", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	settle := time.Since(settle0)
	wall := time.Since(wall0)
	if *pushCPUProfile != "" {
		pprof.StopCPUProfile()
	}
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru1); err != nil {
		b.Fatal(err)
	}
	ccpu1, _, err := clients.cpu()
	if err != nil {
		b.Fatal(err)
	}
	close(stop)
	wg.Wait()
	var ms runtime.MemStats
	// Twice: what sync.Pools held at the first collection (gRPC's buffers)
	// survives it in their victim caches; it is gone at the second.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if *pushHeapProfile != "" {
		writeHeapProfile(b, *pushHeapProfile)
	}

	roundSum1, rounds1 := ps.metric(b, "weft_xds_regenerate_duration_seconds")
	eds1, _ := ps.metric(b, "weft_xds_pushes_total", "type", "endpoint")
	lds1, _ := ps.metric(b, "weft_xds_pushes_total", "type", "listener")
	cds1, _ := ps.metric(b, "weft_xds_pushes_total", "type", "cluster")
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime) - syscall.TimevalToNsec(ru0.Utime) +
		syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Stime))
	fc := float64(changes)
	p50 := pctMs(each, 0.5)

	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(pctMs(each, 0.99), "p99-ms")
	b.ReportMetric(pctMs(last, 0.5), "last-p50-ms") // until the last client of a change has it
	if len(reg) > 0 {
		b.ReportMetric(pctMs(reg, 0.5), "reg-ms") // Update → snapshot published, in the pipeline
	}
	b.ReportMetric(pctMs(upd, 0.5), "update-ms") // the fake API server's Update call
	b.ReportMetric(float64(settle.Microseconds())/1000, "settle-ms")
	if rounds1 > rounds0 {
		b.ReportMetric((roundSum1-roundSum0)/(rounds1-rounds0)*1000, "round-ms") // regenerate every node, mean
	}
	b.ReportMetric((rounds1-rounds0)/fc, "rounds/change")
	b.ReportMetric((eds1-eds0)/fc, "eds-pushes/change")
	b.ReportMetric((lds1-lds0)/fc, "lds-pushes/change")
	if *pushInterval > 0 {
		b.ReportMetric(float64(env.slipped), "slipped") // changes that waited for their Service's previous one
	}
	b.ReportMetric((cds1-cds0)/fc, "cds-pushes/change")
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cpu-cores")
	b.ReportMetric(float64(cpu.Milliseconds())/fc, "cpu-ms/change")
	if apart {
		b.ReportMetric(float64((ccpu1-ccpu0).Milliseconds())/fc, "clients-cpu-ms/change")
		b.ReportMetric(1, "clients-apart") // cpu and heap figures are the control plane's and the fake API server's
	} else {
		b.ReportMetric(0, "clients-apart") // cpu and heap figures include the clients'
	}
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
	b.ReportMetric(float64(peak)/(1<<20), "heap-peak-MB")
	b.ReportMetric(float64(base.heapBase)/(1<<20), "base-heap-MB")
	b.ReportMetric(base.registryMs, "base-reg-ms")
	b.ReportMetric(base.generateMs, "base-gen-ms")
	b.ReportMetric(p50/base.generateMs, "p50/gen")
	b.ReportMetric(float64(n), "clients")
	b.ReportMetric(fc, "changes")
	b.ReportMetric(float64(env.scope), "subscribed")                       // Services whose endpoints each client subscribes to; 0: all
	b.ReportMetric(float64(len(env.scopeClusters)), "clusters-subscribed") // 0: every cluster (wildcard)
	b.ReportMetric(float64(len(env.scopeListeners)), "destinations")       // destination listeners subscribed (-push.lookup)
}

// pctMs is the p-th percentile of ds in milliseconds.
func pctMs(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
}

// writeHeapProfile writes the heap profile (in-use figures as of the last
// collection) to path.
func writeHeapProfile(b *testing.B, path string) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}
