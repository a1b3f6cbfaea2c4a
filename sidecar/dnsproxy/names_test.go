package dnsproxy

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

func addrN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(100 + i/256), byte(i % 256)})
}

// TestNamesExpire: an answer counts for its TTL (at least MinTTL) plus the
// grace, and not a second longer.
func TestNamesExpire(t *testing.T) {
	clk := testutil.FakeClock(t)
	n := NewNames(Config{Clock: clk, MinTTL: 30 * time.Second, Grace: time.Minute,
		Lookup: func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("none") }})
	n.Record("api.example.test.", apiV4, 10*time.Second)  // below MinTTL: 30s + 1m
	n.Record("long.example.test", apiV4, 600*time.Second) // 10m + 1m
	n.Record("API.Example.Test", apiV6, 3600*time.Second) // the same name, spelled otherwise
	bound := func(name string, a netip.Addr) bool { return n.Bind(context.Background(), name, a).Bound }
	clk.Step(90*time.Second - time.Nanosecond)
	if !bound("api.example.test", apiV4) {
		t.Fatal("expired before MinTTL + Grace")
	}
	clk.Step(time.Nanosecond)
	if bound("api.example.test", apiV4) {
		t.Fatal("still bound at MinTTL + Grace")
	}
	if !bound("api.example.test", apiV6) || !bound("long.example.test", apiV4) {
		t.Fatal("a longer TTL expired with the short one")
	}
	clk.Step(10 * time.Minute)
	if bound("long.example.test", apiV4) {
		t.Fatal("bound after its TTL + Grace")
	}
}

// TestNamesBounds: a pod that floods the table keeps it within MaxNames
// and MaxAddrsPerName; the entries that expire first go, the newest stay.
func TestNamesBounds(t *testing.T) {
	clk := testutil.FakeClock(t)
	n := NewNames(Config{Clock: clk, MaxNames: 100, MaxAddrsPerName: 4, Grace: time.Minute,
		Lookup: func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("none") }})
	for i := range 10 {
		n.Record("many.example.test", addrN(i), time.Duration(i+1)*time.Hour)
	}
	for i := range 10 {
		want := i >= 6 // the four that live longest
		if got := n.Bind(context.Background(), "many.example.test", addrN(i)).Bound; got != want {
			t.Errorf("address %d: bound %v, want %v", i, got, want)
		}
	}
	for i := range 1000 {
		n.Record("flood-"+addrN(i).String()+".example.test", addrN(i), time.Duration(i+1)*time.Second)
		if n.Len() > 100 {
			t.Fatalf("%d names after %d records, want at most 100", n.Len(), i+1)
		}
	}
	if !n.Bind(context.Background(), "flood-"+addrN(999).String()+".example.test", addrN(999)).Bound {
		t.Fatal("the newest name was evicted")
	}
}

// TestBindLiteralsAndLookup: a name that is an address binds only to
// itself; a name the table does not hold is resolved by the sidecar (its
// answers recorded); an unresolvable name is unbound with the error.
func TestBindLiteralsAndLookup(t *testing.T) {
	clk := testutil.FakeClock(t)
	var asked []string
	n := NewNames(Config{Clock: clk, Lookup: func(_ context.Context, name string) ([]netip.Addr, error) {
		asked = append(asked, name)
		if name == "hosts.example.test" {
			return []netip.Addr{netip.MustParseAddr("::ffff:198.18.100.10")}, nil
		}
		return nil, errors.New("no such host")
	}})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		addr netip.Addr
		want Binding
	}{
		{"198.18.100.10", apiV4, Binding{Bound: true, Source: SourceLiteral}},
		{"[2001:db8::10]", apiV6, Binding{Bound: true, Source: SourceLiteral}},
		{"198.18.100.10", attacker, Binding{Known: []netip.Addr{apiV4}}},
		{"hosts.example.test", apiV4, Binding{Bound: true, Source: SourceLookup}},
		{"hosts.example.test", attacker, Binding{Known: []netip.Addr{apiV4}}},
	} {
		got := n.Bind(ctx, tc.name, tc.addr)
		if got.Bound != tc.want.Bound || got.Source != tc.want.Source || !slices.Equal(got.Known, tc.want.Known) {
			t.Errorf("Bind(%s, %v) = %+v, want %+v", tc.name, tc.addr, got, tc.want)
		}
	}
	if b := n.Bind(ctx, "nowhere.example.test", apiV4); b.Bound || b.Err == nil {
		t.Errorf("an unresolvable name: %+v, want unbound with the lookup's error", b)
	}
	// The lookup's answer was recorded: the next question is answered from
	// the table.
	asked = nil
	if b := n.Bind(ctx, "hosts.example.test", apiV4); !b.Bound || b.Source != SourceDNS || len(asked) != 0 {
		t.Errorf("second Bind: %+v, asked %v: want the recorded answer", b, asked)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{0x42, 0x42, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 3, 'a', 'p', 'i', 0, 0, 1, 0, 1})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, ok := parseQuery(b)
		if ok && q.name == "" && len(b) < 12 {
			t.Fatalf("query from %d bytes", len(b))
		}
		for _, a := range addresses(question{name: "api", typ: 1}, b) {
			if !a.addr.IsValid() {
				t.Fatal("invalid address recorded")
			}
		}
	})
}
