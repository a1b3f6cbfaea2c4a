package controlplane

// The clients of BenchmarkEndpointChurnPush: raw delta ADS streams, one per
// client pod, that ACK everything and time the arrival of each change they
// are told to await. By default they run in a child process (this test
// binary again, TestPushClientProcess), so that the CPU and heap the
// benchmark reads of its own process are the control plane's and the fake
// API server's alone; -push.clientproc=false runs them in the benchmark's
// process, as before 2026-12-06, where every figure included theirs.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/xds"
)

var pushClientProc = flag.Bool("push.clientproc", true,
	"BenchmarkEndpointChurnPush: run the ADS clients in a child process, so that cpu-ms/change and heap are the control plane's (and the fake API server's) alone; false runs them in the benchmark's process, their CPU and heap counted with the control plane's")

// pushClientEnv names the spec file of a client process; set only in the
// child that BenchmarkEndpointChurnPush starts.
const pushClientEnv = "WEFT_PUSH_CLIENT_SPEC"

// pushClientSet is the connected clients, wherever they run.
type pushClientSet interface {
	// await tells every client of c before the change is made; each
	// client's receipt is then reported to c.seen.
	await(c *pushChange) error
	// errors are the stream errors seen so far, one per failed client.
	errors() []string
	// cpu is the user+sys time the clients have used, when they run in a
	// process of their own (apart false: they share the benchmark's).
	cpu() (d time.Duration, apart bool, err error)
}

// pushClientSpec is what the clients need: where to connect, as whom, and
// what to subscribe to. JSON for a client process.
type pushClientSpec struct {
	Addr  string
	Roots [][]byte // DER
	Pods  []pushClientPod
	// AllEndpoints: subscribe to every outbound cluster's endpoints, as
	// the CDS response names them (-push.subscribe=0); else Endpoints.
	AllEndpoints bool
	Endpoints    []string
	Clusters     []string // by name; empty: every cluster (wildcard)
	Lookup       bool     // client feature weft.destination_listeners; LDS by name
	Listeners    []string // with Lookup: the destination listeners asked for
	Timeout      time.Duration
}

type pushClientPod struct {
	NS, Name string
	Chain    [][]byte // DER, leaf first
	Key      []byte   // PKCS #8
}

// clientChange is a change the clients await, as they see it.
type clientChange struct {
	name   string
	want   changeWant
	got    []atomic.Bool
	left   atomic.Int64
	report func(idx int, at time.Time) // once per client, when it has the change
}

// pushClient is one sidecar's delta ADS stream: clusters (by wildcard or
// by name), listeners (wildcard, or by name when it looks destinations
// up), the trust bundle and endpoints by name, like weft's sidecar. It
// ACKs every response and, on each EDS response, marks the awaited
// changes it carries.
type pushClient struct {
	idx     int
	spec    *pushClientSpec
	conn    *grpc.ClientConn
	stream  grpc.BidiStreamingClient[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]
	synced  chan struct{} // closed once CDS, LDS, EDS and SDS have each been answered and ACKed
	err     atomic.Pointer[error]
	pending *sync.Map // EDS resource name -> *clientChange
	onFail  func(idx int, err error)
}

func connectPushClient(ctx context.Context, spec *pushClientSpec, roots *x509.CertPool, cert tls.Certificate,
	idx int, pending *sync.Map, onFail func(int, error)) (*pushClient, error) {
	p := spec.Pods[idx]
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: "weft-controlplane.weft-system.svc",
		Certificates: []tls.Certificate{cert}}
	conn, err := grpc.NewClient(spec.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithPerRPCCredentials(pushToken(p.NS+"/"+p.Name)), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	c := &pushClient{idx: idx, spec: spec, conn: conn, synced: make(chan struct{}), pending: pending, onFail: onFail}
	c.stream, err = discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		conn.Close()
		return nil, err
	}
	node := &corev3.Node{Id: xds.NodeID(p.Name, p.NS)}
	var listeners []string
	if spec.Lookup {
		node.ClientFeatures = []string{names.FeatureDestinationListeners}
		listeners = append([]string{"inbound", "outbound"}, spec.Listeners...)
	}
	for _, r := range []*discovery.DeltaDiscoveryRequest{
		{Node: node, TypeUrl: resource.ClusterType, ResourceNamesSubscribe: spec.Clusters},
		{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: listeners},
		{TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{"trust_bundle"}},
	} {
		if err := c.stream.Send(r); err != nil {
			conn.Close()
			return nil, err
		}
	}
	go c.run()
	return c, nil
}

func (c *pushClient) fail(err error) {
	if c.err.CompareAndSwap(nil, &err) && c.onFail != nil {
		c.onFail(c.idx, err)
	}
}

func (c *pushClient) run() {
	seen := map[string]bool{}
	for {
		r, err := c.stream.Recv()
		if err != nil {
			c.fail(err)
			return
		}
		at := time.Now()
		t := r.GetTypeUrl()
		if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: r.GetNonce()}); err != nil {
			c.fail(err)
			return
		}
		switch t {
		case resource.ClusterType:
			if !seen[t] {
				eds := c.spec.Endpoints
				for _, res := range r.GetResources() {
					if c.spec.AllEndpoints && strings.HasPrefix(res.GetName(), "outbound|") {
						eds = append(eds, res.GetName())
					}
				}
				if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: eds}); err != nil {
					c.fail(err)
					return
				}
			}
		case resource.EndpointType:
			for _, res := range r.GetResources() {
				v, ok := c.pending.Load(res.GetName())
				if !ok {
					continue
				}
				cc := v.(*clientChange)
				if cc.got[c.idx].Load() {
					continue
				}
				cla := &endpointv3.ClusterLoadAssignment{}
				if err := res.GetResource().UnmarshalTo(cla); err != nil {
					c.fail(err)
					return
				}
				if cc.want.carriedBy(cla) && cc.got[c.idx].CompareAndSwap(false, true) {
					cc.report(c.idx, at)
					if cc.left.Add(-1) == 0 {
						c.pending.CompareAndDelete(cc.name, cc)
					}
				}
			}
		}
		if !seen[t] {
			seen[t] = true
			if seen[resource.ClusterType] && seen[resource.ListenerType] && seen[resource.EndpointType] && seen[resource.SecretType] {
				close(c.synced)
			}
		}
	}
}

// connectPushClients connects every pod of spec, a few at a time (each
// first request generates that sidecar's snapshot), and waits until all
// are synced. The clients are returned (to be closed) even with an error.
func connectPushClients(ctx context.Context, spec *pushClientSpec, roots *x509.CertPool, certs []tls.Certificate,
	pending *sync.Map, onFail func(int, error)) ([]*pushClient, error) {
	clients := make([]*pushClient, len(spec.Pods))
	errs := make([]error, len(spec.Pods))
	work := make(chan int)
	var wg sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range work {
				clients[i], errs[i] = connectPushClient(ctx, spec, roots, certs[i], i, pending, onFail)
			}
		})
	}
	for i := range spec.Pods {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return clients, err
	}
	deadline := time.After(spec.Timeout)
	for _, c := range clients {
		select {
		case <-c.synced:
		case <-deadline:
			return clients, fmt.Errorf("client %d not synced after %v (error: %v)", c.idx, spec.Timeout, c.errString())
		}
	}
	return clients, nil
}

func closePushClients(clients []*pushClient) {
	for _, c := range clients {
		if c != nil {
			c.conn.Close()
		}
	}
}

func (c *pushClient) errString() string {
	if e := c.err.Load(); e != nil {
		return (*e).Error()
	}
	return "none"
}

// clientSpec is what env's clients ask ps for.
func (env *pushEnv) clientSpec(ps *pushServer, timeout time.Duration) *pushClientSpec {
	spec := &pushClientSpec{Addr: ps.addr, AllEndpoints: env.scope == 0, Endpoints: env.scopeNames,
		Clusters: env.scopeClusters, Lookup: env.lookup, Listeners: env.scopeListeners, Timeout: timeout}
	for _, r := range env.ca.Roots() {
		spec.Roots = append(spec.Roots, r.Raw)
	}
	return spec
}

// connectClients connects a client per client pod of env to ps, in a
// child process or (-push.clientproc=false) in this one, waits until all
// are synced, and makes them env.clientSet.
func (env *pushEnv) connectClients(tb testing.TB, ps *pushServer, timeout time.Duration) pushClientSet {
	tb.Helper()
	spec := env.clientSpec(ps, timeout)
	var set pushClientSet
	if *pushClientProc {
		set = env.startClientProcess(tb, spec)
	} else {
		set = env.connectLocal(tb, ps, spec)
	}
	env.clientSet = set
	return set
}

// ---- clients in this process ----

type localClients struct {
	clients []*pushClient
	pending sync.Map
}

func (env *pushEnv) connectLocal(tb testing.TB, ps *pushServer, spec *pushClientSpec) *localClients {
	tb.Helper()
	l := &localClients{}
	certs := make([]tls.Certificate, len(env.clients))
	for i, p := range env.clients {
		spec.Pods = append(spec.Pods, pushClientPod{NS: p.ns, Name: p.name})
		certs[i] = p.cert
	}
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	l.clients, err = connectPushClients(ctx, spec, ps.roots, certs, &l.pending, nil)
	tb.Cleanup(func() {
		cancel()
		closePushClients(l.clients)
	})
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func (l *localClients) await(c *pushChange) error {
	cc := &clientChange{name: c.cluster, want: c.want, got: make([]atomic.Bool, len(l.clients)), report: c.seen}
	cc.left.Store(int64(len(l.clients)))
	l.pending.Store(c.cluster, cc)
	return nil
}

func (l *localClients) errors() []string {
	var errs []string
	for _, c := range l.clients {
		if e := c.err.Load(); e != nil {
			errs = append(errs, fmt.Sprintf("client %d: %v", c.idx, *e))
		}
	}
	return errs
}

func (l *localClients) cpu() (time.Duration, bool, error) { return 0, false, nil }

// ---- clients in a child process ----
//
// The child is this test binary running TestPushClientProcess, with the
// spec in a file named by $WEFT_PUSH_CLIENT_SPEC. It reads commands on fd 4
// and writes events on fd 3, a line each:
//
//	parent → child   await <id> <EDS name> <address> <health> <any-health 0|1>
//	child → parent   synced | fail <quoted error> | awaiting <id> |
//	                 seen <id> <client> <unix ns> | error <client> <quoted error>
//
// The parent closing fd 4 tells the child to close every stream and exit.
// Receipt times are the wall clock's (one machine, one clock), taken as
// each response is read, as in this process.

type procClients struct {
	cmd      *exec.Cmd
	commands *os.File
	mu       sync.Mutex
	changes  map[int]*pushChange
	errs     []string
	awaiting chan int
	synced   chan error
	exited   chan struct{}
}

// TestPushClientProcess is BenchmarkEndpointChurnPush's client process;
// it does nothing in a test run.
func TestPushClientProcess(t *testing.T) {
	path := os.Getenv(pushClientEnv)
	if path == "" {
		t.Skip("BenchmarkEndpointChurnPush's client process (-push.clientproc); nothing to do in a test run")
	}
	if err := runPushClientProcess(path, os.NewFile(3, "events"), os.NewFile(4, "commands")); err != nil {
		t.Fatal(err)
	}
}

type eventWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (e *eventWriter) line(format string, a ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fmt.Fprintf(e.w, format+"\n", a...)
	e.w.Flush()
}

func runPushClientProcess(path string, events io.Writer, commands io.Reader) error {
	out := &eventWriter{w: bufio.NewWriter(events)}
	fail := func(err error) error {
		out.line("fail %s", strconv.Quote(err.Error()))
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fail(err)
	}
	var spec pushClientSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fail(err)
	}
	roots := x509.NewCertPool()
	for _, der := range spec.Roots {
		r, err := x509.ParseCertificate(der)
		if err != nil {
			return fail(err)
		}
		roots.AddCert(r)
	}
	certs := make([]tls.Certificate, len(spec.Pods))
	for i, p := range spec.Pods {
		key, err := x509.ParsePKCS8PrivateKey(p.Key)
		if err != nil {
			return fail(fmt.Errorf("pod %d: %w", i, err))
		}
		certs[i] = tls.Certificate{Certificate: p.Chain, PrivateKey: key}
	}
	var pending sync.Map
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clients, err := connectPushClients(ctx, &spec, roots, certs, &pending, func(idx int, err error) {
		out.line("error %d %s", idx, strconv.Quote(err.Error()))
	})
	defer closePushClients(clients)
	if err != nil {
		return fail(err)
	}
	out.line("synced")
	sc := bufio.NewScanner(commands)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 6 || f[0] != "await" {
			return fail(fmt.Errorf("command %q: want await <id> <name> <address> <health> <any>", sc.Text()))
		}
		id, err1 := strconv.Atoi(f[1])
		health, err2 := strconv.Atoi(f[4])
		if err := errors.Join(err1, err2); err != nil {
			return fail(fmt.Errorf("command %q: %w", sc.Text(), err))
		}
		cc := &clientChange{name: f[2], got: make([]atomic.Bool, len(clients)),
			want:   changeWant{Addr: f[3], Health: corev3.HealthStatus(health), AnyHealth: f[5] == "1"},
			report: func(idx int, at time.Time) { out.line("seen %d %d %d", id, idx, at.UnixNano()) }}
		cc.left.Store(int64(len(clients)))
		pending.Store(cc.name, cc)
		out.line("awaiting %d", id)
	}
	return sc.Err()
}

// startClientProcess starts the child with spec (every client pod's
// SVID and key written to a file only this benchmark reads) and waits
// until its clients are synced.
func (env *pushEnv) startClientProcess(tb testing.TB, spec *pushClientSpec) *procClients {
	tb.Helper()
	for _, p := range env.clients {
		key, err := x509.MarshalPKCS8PrivateKey(p.cert.PrivateKey)
		if err != nil {
			tb.Fatal(err)
		}
		spec.Pods = append(spec.Pods, pushClientPod{NS: p.ns, Name: p.name, Chain: p.cert.Certificate, Key: key})
	}
	b, err := json.Marshal(spec)
	if err != nil {
		tb.Fatal(err)
	}
	path := tb.TempDir() + "/clients.json"
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	p := &procClients{commands: cmdW, changes: map[int]*pushChange{}, awaiting: make(chan int, 1),
		synced: make(chan error, 1), exited: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestPushClientProcess$", "-test.timeout=0")
	p.cmd.Env = append(os.Environ(), pushClientEnv+"="+path)
	p.cmd.ExtraFiles = []*os.File{evW, cmdR} // fd 3, fd 4
	p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	evW.Close()
	cmdR.Close()
	go p.read(evR)
	tb.Cleanup(func() {
		cmdW.Close()
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
		}
		p.cmd.Wait()
	})
	select {
	case err := <-p.synced:
		if err != nil {
			tb.Fatalf("client process: %v", err)
		}
	case <-p.exited:
		tb.Fatal("client process exited before its clients synced")
	case <-time.After(spec.Timeout + 30*time.Second):
		tb.Fatalf("client process not synced after %v", spec.Timeout+30*time.Second)
	}
	return p
}

// read handles the child's events until it closes fd 3 (its exit).
func (p *procClients) read(r io.ReadCloser) {
	defer close(p.exited)
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		kind, rest, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "synced":
			p.synced <- nil
		case "fail":
			msg, err := strconv.Unquote(rest)
			if err != nil {
				msg = rest
			}
			select {
			case p.synced <- errors.New(msg):
			default:
			}
			p.mu.Lock()
			p.errs = append(p.errs, "client process: "+msg)
			p.mu.Unlock()
		case "awaiting":
			id, _ := strconv.Atoi(rest)
			p.awaiting <- id
		case "seen":
			var id, idx int
			var ns int64
			if _, err := fmt.Sscan(rest, &id, &idx, &ns); err != nil {
				continue
			}
			p.mu.Lock()
			c := p.changes[id]
			p.mu.Unlock()
			if c != nil && idx >= 0 && idx < len(c.got) {
				c.seen(idx, time.Unix(0, ns))
			}
		case "error":
			p.mu.Lock()
			p.errs = append(p.errs, "client "+rest)
			p.mu.Unlock()
		}
	}
}

func (p *procClients) await(c *pushChange) error {
	p.mu.Lock()
	p.changes[c.id] = c
	p.mu.Unlock()
	anyHealth := 0
	if c.want.AnyHealth {
		anyHealth = 1
	}
	if _, err := fmt.Fprintf(p.commands, "await %d %s %s %d %d\n", c.id, c.cluster, c.want.Addr, int(c.want.Health), anyHealth); err != nil {
		return fmt.Errorf("client process: %w", err)
	}
	select {
	case id := <-p.awaiting:
		if id != c.id {
			return fmt.Errorf("client process awaits change %d, want %d", id, c.id)
		}
		return nil
	case <-p.exited:
		return errors.New("client process exited")
	case <-time.After(30 * time.Second):
		return fmt.Errorf("client process did not take change %d in 30s", c.id)
	}
}

func (p *procClients) errors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errs...)
}

// cpu reads the child's user+sys time from /proc/<pid>/stat (fields 14
// and 15, in USER_HZ ticks: 100 a second on Linux).
func (p *procClients) cpu() (time.Duration, bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, true, fmt.Errorf("client process CPU: %w", err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, true, fmt.Errorf("client process CPU: /proc/%d/stat: %q", p.cmd.Process.Pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, true, fmt.Errorf("client process CPU: /proc/%d/stat: %q", p.cmd.Process.Pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, true, fmt.Errorf("client process CPU: %w", err)
	}
	return time.Duration(ut+st) * time.Second / 100, true, nil
}
