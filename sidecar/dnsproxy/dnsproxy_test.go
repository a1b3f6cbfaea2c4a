package dnsproxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/weftmesh/weft/internal/testutil"
)

var (
	apiV4    = netip.MustParseAddr("198.18.100.10")
	apiV6    = netip.MustParseAddr("2001:db8::10")
	attacker = netip.MustParseAddr("198.18.100.99")
)

// TestProxyAnswersAndBinds: a real stub resolver (Go's) through the proxy
// gets the nameserver's answers unchanged (A and AAAA, a CNAME chain, an
// answer too big for UDP retried over TCP, NXDOMAIN), and the table binds
// exactly the names asked to the addresses answered.
func TestProxyAnswersAndBinds(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxAddrsPerName = 128 })
	ctx := context.Background()

	if got := lookup(t, r, "api.example.test"); !slices.Equal(got, []netip.Addr{apiV4, apiV6}) {
		t.Fatalf("api.example.test through the proxy: %v, want [%v %v]", got, apiV4, apiV6)
	}
	for _, a := range []netip.Addr{apiV4, apiV6} {
		if b := r.names.Bind(ctx, "API.example.test.", a); !b.Bound || b.Source != SourceDNS {
			t.Errorf("api.example.test -> %v after the app's lookup: %+v, want bound by dns", a, b)
		}
	}
	if b := r.names.Bind(ctx, "api.example.test", attacker); b.Bound || !slices.Contains(b.Known, apiV4) {
		t.Errorf("api.example.test -> %v (an address it never resolved to): %+v, want unbound, known %v", attacker, b, apiV4)
	}

	if got := lookup(t, r, "alias.example.test"); !slices.Contains(got, apiV4) {
		t.Fatalf("alias.example.test: %v", got)
	}
	if b := r.names.Bind(ctx, "alias.example.test", apiV4); !b.Bound {
		t.Errorf("alias.example.test (CNAME to api.example.test) -> %v: %+v, want bound", apiV4, b)
	}

	big := lookup(t, r, "big.example.test")
	if len(big) != 100 {
		t.Fatalf("big.example.test: %d addresses, want 100 (the TCP retry after a truncated UDP answer)", len(big))
	}
	if r.count("udp", resultAnswered) == 0 || r.count("tcp", resultAnswered) == 0 {
		t.Fatalf("answered udp %v tcp %v: the truncated answer was not retried over TCP through the proxy", r.count("udp", resultAnswered), r.count("tcp", resultAnswered))
	}
	for _, a := range big {
		if !r.names.Bind(ctx, "big.example.test", a).Bound {
			t.Fatalf("big.example.test -> %v not bound", a)
		}
	}

	_, err := r.res.LookupNetIP(ctx, "ip", "nx.example.test")
	var dnsErr *net.DNSError
	if !errorsAs(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Fatalf("nx.example.test: %v, want NXDOMAIN (not found) passed through", err)
	}

	// An answer that carries records of another name binds only the name
	// asked: sneaky.example.test cannot bind api.example.test.
	lookup(t, r, "sneaky.example.test")
	if b := r.names.Bind(ctx, "api.example.test", netip.MustParseAddr("198.18.100.66")); b.Bound {
		t.Fatalf("a record of another name in sneaky.example.test's answer bound api.example.test: %+v", b)
	}
	if !r.names.Bind(ctx, "sneaky.example.test", netip.MustParseAddr("198.18.100.11")).Bound {
		t.Fatal("sneaky.example.test's own record not bound")
	}
}

func errorsAs(err error, target **net.DNSError) bool {
	for err != nil {
		if e, ok := err.(*net.DNSError); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// TestProxyUsesItsOwnQueryID: the nameserver never sees the app's ID (an
// app that forges answers blind must guess the proxy's), the app gets its
// own ID back, and a forged datagram with another ID that arrives first is
// neither returned nor recorded.
func TestProxyUsesItsOwnQueryID(t *testing.T) {
	r := newRig(t, nil)
	r.up.forge.Store(true)
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 0x4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("api.example.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	b, _ := q.Pack()
	c, err := net.Dial("udp", r.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var resp dnsmessage.Message
	if err := resp.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if resp.Header.ID != 0x4242 || len(resp.Answers) != 1 || resp.Answers[0].Body.(*dnsmessage.AResource).A != apiV4.As4() {
		t.Fatalf("answer %+v, want ID 0x4242 and %v", resp, apiV4)
	}
	r.up.mu.Lock()
	ids := slices.Clone(r.up.ids)
	r.up.mu.Unlock()
	if len(ids) != 1 || ids[0] == 0x4242 {
		t.Fatalf("the nameserver saw IDs %#x: want one, not the app's", ids)
	}
	if b := r.names.Bind(context.Background(), "api.example.test", netip.MustParseAddr("198.18.200.66")); b.Bound {
		t.Fatalf("the forged answer was recorded: %+v", b)
	}
}

// TestProxySurvivesMalformedQueries: garbage, a response sent as a query,
// two questions, a short packet: each is dropped and counted, and the next
// real query is answered.
func TestProxySurvivesMalformedQueries(t *testing.T) {
	r := newRig(t, nil)
	c, err := net.Dial("udp", r.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	two := dnsmessage.Message{Header: dnsmessage.Header{ID: 1}, Questions: []dnsmessage.Question{
		{Name: dnsmessage.MustNewName("a.example.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
		{Name: dnsmessage.MustNewName("b.example.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	twoB, _ := two.Pack()
	asResp := dnsmessage.Message{Header: dnsmessage.Header{ID: 2, Response: true}, Questions: two.Questions[:1]}
	respB, _ := asResp.Pack()
	bad := [][]byte{{}, {0x00}, []byte("GET / HTTP/1.1\r\n\r\n"), twoB, respB, make([]byte, 12)}
	for _, b := range bad {
		_, _ = c.Write(b)
	}
	// TCP: a frame that is not a query closes that connection only.
	tc, err := net.Dial("tcp", r.udp)
	if err != nil {
		t.Fatal(err)
	}
	_ = writeTCPMsg(tc, []byte("junk junk junk"))
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := readTCPMsg(tc); err == nil {
		t.Fatal("a junk TCP frame got an answer")
	}
	tc.Close()
	if got := lookup(t, r, "api.example.test"); len(got) != 2 {
		t.Fatalf("after malformed queries: %v", got)
	}
	waitCount(t, func() float64 { return r.count("udp", resultMalformed) }, float64(len(bad)))
	if got := r.count("tcp", resultMalformed); got != 1 {
		t.Fatalf("tcp malformed = %v, want 1", got)
	}
}

func waitCount(t *testing.T, f func() float64, want float64) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("the counter to reach %v", want), func() bool { return f() == want })
}

// TestProxyUpstreamDown: no nameserver answers: the query goes unanswered
// (the app's resolver times out as with a lost packet) and is counted; the
// table stays empty.
func TestProxyUpstreamDown(t *testing.T) {
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	deadAddr := netip.MustParseAddrPort(dead.LocalAddr().String())
	dead.Close()
	r := newRig(t, nil, func(r *rig) {
		r.srv.Upstreams = []netip.AddrPort{deadAddr}
		r.srv.Timeout = 200 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := r.res.LookupNetIP(ctx, "ip4", "api.example.test"); err == nil {
		t.Fatal("an answer with no nameserver")
	}
	waitCount(t, func() float64 { return min(r.count("udp", resultUpstream), 1) }, 1)
	if r.names.Len() != 0 {
		t.Fatalf("names %d after no answer", r.names.Len())
	}
	// The next nameserver in resolv.conf order answers.
	r2 := newRig(t, nil, func(r *rig) {
		r.srv.Upstreams = []netip.AddrPort{deadAddr, r.up.addr}
		r.srv.Timeout = 200 * time.Millisecond
	})
	if got := lookup(t, r2, "api.example.test"); len(got) != 2 {
		t.Fatalf("with a second nameserver: %v", got)
	}
}
