package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Defaults of [Config].
const (
	DefaultMinTTL          = 30 * time.Second
	DefaultGrace           = 5 * time.Minute
	DefaultMaxNames        = 16384
	DefaultMaxAddrsPerName = 64
	DefaultLookupTimeout   = 2 * time.Second
)

// Config configures a [Names] table.
type Config struct {
	// Clock tells the time; nil is the real clock.
	Clock clock.PassiveClock
	// MinTTL is the least time an answer counts for (DefaultMinTTL);
	// Grace is added to every TTL (DefaultGrace).
	MinTTL, Grace time.Duration
	// MaxNames and MaxAddrsPerName bound the table (DefaultMaxNames,
	// DefaultMaxAddrsPerName): past them the entries that expire first go.
	MaxNames, MaxAddrsPerName int
	// Lookup resolves a name the table does not bind to the address asked
	// about, as the sidecar itself (resolv.conf and /etc/hosts); nil is
	// net.DefaultResolver.LookupNetIP. Its answers count for MinTTL+Grace.
	Lookup func(ctx context.Context, name string) ([]netip.Addr, error)
	// LookupTimeout bounds one Lookup (DefaultLookupTimeout).
	LookupTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.MinTTL <= 0 {
		c.MinTTL = DefaultMinTTL
	}
	if c.Grace < 0 {
		c.Grace = 0
	} else if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.MaxNames <= 0 {
		c.MaxNames = DefaultMaxNames
	}
	if c.MaxAddrsPerName <= 0 {
		c.MaxAddrsPerName = DefaultMaxAddrsPerName
	}
	if c.Lookup == nil {
		c.Lookup = func(ctx context.Context, name string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", name)
		}
	}
	if c.LookupTimeout <= 0 {
		c.LookupTimeout = DefaultLookupTimeout
	}
}

// Names binds names to the addresses they resolved to. Safe for concurrent
// use.
type Names struct {
	cfg Config
	mu  sync.Mutex
	m   map[string]map[netip.Addr]time.Time // name → address → expiry
}

// NewNames returns an empty table.
func NewNames(cfg Config) *Names {
	cfg.defaults()
	return &Names{cfg: cfg, m: map[string]map[netip.Addr]time.Time{}}
}

// Source says how a binding was established.
type Source string

// Sources of a [Binding].
const (
	SourceLiteral Source = "literal" // the name is the address itself
	SourceDNS     Source = "dns"     // an answer the pod's DNS got, through the proxy
	SourceLookup  Source = "lookup"  // the sidecar's own resolution
)

// Binding is the answer of [Names.Bind].
type Binding struct {
	Bound  bool
	Source Source       // when Bound
	Known  []netip.Addr // when not Bound: the addresses the name does resolve to (at most 8), for the reason
	Err    error        // the lookup's error, when not Bound and the name did not resolve
}

// Canonical is how the table spells a name: lower case, no trailing dot.
func Canonical(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

// Record notes that name resolved to addr with time to live ttl.
func (n *Names) Record(name string, addr netip.Addr, ttl time.Duration) {
	name = Canonical(name)
	if name == "" || !addr.IsValid() {
		return
	}
	addr = addr.Unmap().WithZone("")
	exp := n.cfg.Clock.Now().Add(max(ttl, n.cfg.MinTTL) + n.cfg.Grace)
	n.mu.Lock()
	defer n.mu.Unlock()
	addrs := n.m[name]
	if addrs == nil {
		if len(n.m) >= n.cfg.MaxNames {
			n.evictLocked()
		}
		addrs = map[netip.Addr]time.Time{}
		n.m[name] = addrs
	}
	if old, ok := addrs[addr]; ok && old.After(exp) {
		return
	}
	if _, ok := addrs[addr]; !ok && len(addrs) >= n.cfg.MaxAddrsPerName {
		first, at := netip.Addr{}, time.Time{}
		for a, e := range addrs {
			if !first.IsValid() || e.Before(at) {
				first, at = a, e
			}
		}
		delete(addrs, first)
	}
	addrs[addr] = exp
}

// evictLocked makes room for a name: the expired names go, and if none had
// expired, the eighth of the table that expires first.
func (n *Names) evictLocked() {
	now := n.cfg.Clock.Now()
	type entry struct {
		name string
		last time.Time
	}
	all := make([]entry, 0, len(n.m))
	for name, addrs := range n.m {
		var last time.Time
		for _, e := range addrs {
			last = maxTime(last, e)
		}
		if !last.After(now) {
			delete(n.m, name)
			continue
		}
		all = append(all, entry{name, last})
	}
	if len(n.m) < n.cfg.MaxNames {
		return
	}
	slices.SortFunc(all, func(a, b entry) int { return a.last.Compare(b.last) })
	for _, e := range all[:max(1, len(all)/8)] {
		delete(n.m, e.name)
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Len is the number of names in the table.
func (n *Names) Len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.m)
}

// lookupCached reports whether name is bound to addr by an answer that has
// not expired, and the unexpired addresses it is bound to.
func (n *Names) lookupCached(name string, addr netip.Addr) (bool, []netip.Addr) {
	now := n.cfg.Clock.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	var known []netip.Addr
	for a, exp := range n.m[name] {
		if !exp.After(now) {
			continue
		}
		if a == addr {
			return true, nil
		}
		known = append(known, a)
	}
	return false, known
}

// Bind reports whether name may stand for addr: it is the address itself,
// or it resolved to addr through the pod's DNS within its TTL and the
// grace, or the sidecar's own resolution of it yields addr now.
func (n *Names) Bind(ctx context.Context, name string, addr netip.Addr) Binding {
	name = Canonical(name)
	addr = addr.Unmap().WithZone("")
	if a, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		if a.Unmap().WithZone("") == addr {
			return Binding{Bound: true, Source: SourceLiteral}
		}
		return Binding{Known: []netip.Addr{a}}
	}
	if name == "" {
		return Binding{}
	}
	ok, known := n.lookupCached(name, addr)
	if ok {
		return Binding{Bound: true, Source: SourceDNS}
	}
	lctx, cancel := context.WithTimeout(ctx, n.cfg.LookupTimeout)
	defer cancel()
	addrs, err := n.cfg.Lookup(lctx, name)
	bound := false
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		n.Record(name, a, 0)
		if a == addr {
			bound = true
		} else if !slices.Contains(known, a) {
			known = append(known, a)
		}
	}
	if bound {
		return Binding{Bound: true, Source: SourceLookup}
	}
	slices.SortFunc(known, netip.Addr.Compare)
	if len(known) > 8 {
		known = known[:8]
	}
	b := Binding{Known: known}
	if len(addrs) == 0 {
		b.Err = err
	}
	return b
}
