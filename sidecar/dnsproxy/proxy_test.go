package dnsproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	clocktesting "k8s.io/utils/clock/testing"

	wm "github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/testutil"
)

// upstream is a nameserver on loopback, UDP and TCP on one port, serving a
// fixed zone the way a real one does: CNAMEs with their targets, NXDOMAIN,
// and over UDP an answer over 512 bytes (or the EDNS size) truncated (TC) so the
// client retries over TCP.
type upstream struct {
	addr netip.AddrPort
	mu   sync.Mutex
	ids  []uint16 // query IDs as received
	// forge, when set, is sent (with the query's ID+1) before each UDP answer.
	forge atomic.Bool
}

var zone = map[string][]dnsmessage.Resource{}

func rrA(name string, ttl uint32, a string) dnsmessage.Resource {
	return dnsmessage.Resource{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: ttl},
		Body: &dnsmessage.AResource{A: netip.MustParseAddr(a).As4()}}
}

func rrAAAA(name string, ttl uint32, a string) dnsmessage.Resource {
	return dnsmessage.Resource{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET, TTL: ttl},
		Body: &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr(a).As16()}}
}

func rrCNAME(name string, ttl uint32, target string) dnsmessage.Resource {
	return dnsmessage.Resource{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeCNAME, Class: dnsmessage.ClassINET, TTL: ttl},
		Body: &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(target)}}
}

func init() {
	zone["api.example.test."] = []dnsmessage.Resource{rrA("api.example.test.", 60, "198.18.100.10"), rrAAAA("api.example.test.", 60, "2001:db8::10")}
	zone["alias.example.test."] = []dnsmessage.Resource{rrCNAME("alias.example.test.", 300, "api.example.test."), rrA("api.example.test.", 60, "198.18.100.10")}
	var big []dnsmessage.Resource
	for i := range 100 {
		big = append(big, rrA("big.example.test.", 60, netip.AddrFrom4([4]byte{198, 18, 101, byte(i + 1)}).String()))
	}
	zone["big.example.test."] = big
	// An answer that names an unrelated host: not the question's chain.
	zone["sneaky.example.test."] = []dnsmessage.Resource{rrA("api.example.test.", 60, "198.18.100.66"), rrA("sneaky.example.test.", 60, "198.18.100.11")}
}

func (u *upstream) answer(query []byte, udp bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	u.mu.Lock()
	u.ids = append(u.ids, h.ID)
	u.mu.Unlock()
	_ = p.SkipAllQuestions()
	_ = p.SkipAllAnswers()
	_ = p.SkipAllAuthorities()
	limit := 512
	if rr, err := p.AdditionalHeader(); err == nil && rr.Type == dnsmessage.TypeOPT {
		limit = int(rr.Class) // EDNS: the requester's UDP payload size
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	rrs, ok := zone[strings.ToLower(q.Name.String())]
	if !ok {
		rh.RCode = dnsmessage.RCodeNameError
	}
	var ans []dnsmessage.Resource
	for _, rr := range rrs {
		if rr.Header.Type == q.Type || rr.Header.Type == dnsmessage.TypeCNAME {
			ans = append(ans, rr)
		}
	}
	msg := dnsmessage.Message{Header: rh, Questions: []dnsmessage.Question{q}, Answers: ans}
	b, err := msg.Pack()
	if err != nil {
		return nil
	}
	if udp && len(b) > limit {
		rh.Truncated = true
		msg = dnsmessage.Message{Header: rh, Questions: []dnsmessage.Question{q}}
		b, _ = msg.Pack()
	}
	return b
}

// listenPair opens UDP and TCP on one loopback port, as a nameserver (and
// the proxy) listen.
func listenPair(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	pc, l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return pc, l
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	pc, l := listenPair(t)
	port := pc.LocalAddr().(*net.UDPAddr).Port
	u := &upstream{addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			resp := u.answer(buf[:n], true)
			if resp == nil {
				continue
			}
			if u.forge.Load() {
				f := append([]byte(nil), resp...)
				binary.BigEndian.PutUint16(f, binary.BigEndian.Uint16(f)+1)
				_, _ = pc.WriteTo(forgeAnswer(f), from)
			}
			_, _ = pc.WriteTo(resp, from)
		}
	}()
	testutil.Serve(t, l, func(c net.Conn) {
		for {
			msg, err := readTCPMsg(c)
			if err != nil {
				return
			}
			if resp := u.answer(msg, false); resp != nil {
				_ = writeTCPMsg(c, resp)
			}
		}
	})
	return u
}

// forgeAnswer turns an answer for api.example.test into one claiming an
// attacker's address.
func forgeAnswer(b []byte) []byte {
	var m dnsmessage.Message
	if m.Unpack(b) != nil {
		return b
	}
	for i, rr := range m.Answers {
		if a, ok := rr.Body.(*dnsmessage.AResource); ok {
			a.A = [4]byte{198, 18, 200, 66}
			m.Answers[i].Body = a
		}
	}
	out, _ := m.Pack()
	return out
}

type rig struct {
	up    *upstream
	names *Names
	srv   *Server
	reg   *wm.Registry
	udp   string // the proxy's address
	res   *net.Resolver
	clock *clocktesting.FakeClock // the name table's
}

func newRig(t testing.TB, mut func(*Config), srvMut ...func(*rig)) *rig {
	t.Helper()
	r := &rig{up: startUpstream(t), clock: testutil.FakeClock(t)}
	cfg := Config{Clock: r.clock, Lookup: func(context.Context, string) ([]netip.Addr, error) {
		return nil, errors.New("no lookup in this test")
	}}
	if mut != nil {
		mut(&cfg)
	}
	r.names = NewNames(cfg)
	r.reg = wm.NewRegistry()
	r.srv = &Server{Names: r.names, Upstreams: []netip.AddrPort{r.up.addr}, Timeout: 2 * time.Second}
	for _, f := range srvMut {
		f(r)
	}
	if err := r.srv.Register(r.reg); err != nil {
		t.Fatal(err)
	}
	pc, l := listenPair(t)
	r.udp = pc.LocalAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.srv.ServeUDP(ctx, pc) })
	wg.Go(func() { _ = r.srv.ServeTCP(ctx, l) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	// Go's own stub resolver, pointed at the proxy: search, AAAA, the TCP
	// retry after TC are its doing, as in an app.
	r.res = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, r.udp)
	}}
	return r
}

func (r *rig) count(transport, result string) float64 {
	v, _ := r.reg.Value("weft_sidecar_dns_queries_total", transport, result)
	return v
}

func lookup(t *testing.T, r *rig, name string) []netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := r.res.LookupNetIP(ctx, "ip", name)
	if err != nil {
		t.Fatalf("LookupNetIP(%s) through the proxy: %v", name, err)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs
}
