package xds

import (
	"fmt"
	"maps"
	"math/rand"
	"reflect"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	listenerv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/listener/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// differentialPool: for each type and name, the distinct messages several
// meshes give it (plus, for listeners, a refused one).
func differentialPool(t *testing.T) map[string]map[string][]proto.Message {
	t.Helper()
	pool := map[string]map[string][]proto.Message{}
	for _, m := range []mesh{
		{services: []string{"server.demo", "other.demo"}, httpEgress: true},
		{services: []string{"server.demo"}},
		{services: []string{"server.demo", "other.demo"}, l7: true},
		{services: []string{"server.demo", "other.demo"}, httpEgress: true, l7: true},
	} {
		for typ, byName := range m.set(t) {
			if pool[typ] == nil {
				pool[typ] = map[string][]proto.Message{}
			}
			for n, msg := range byName {
				if !slices.ContainsFunc(pool[typ][n], func(o proto.Message) bool { return proto.Equal(o, msg) }) {
					pool[typ][n] = append(pool[typ][n], msg)
				}
			}
		}
	}
	// A refused listener: a duplicate chain.
	for n, ms := range pool[model.ListenerType] {
		l := proto.Clone(ms[0]).(*listenerv3.Listener)
		l.FilterChains = append(l.FilterChains, l.FilterChains[0])
		pool[model.ListenerType][n] = append(ms, l)
	}
	// A semantically equal listener with a different encoding would be
	// ideal; a re-decoded copy (a new pointer, same content) stands in.
	for n, ms := range pool[model.ListenerType] {
		pool[model.ListenerType][n] = append(ms, proto.Clone(ms[0]))
	}
	return pool
}

// TestBuiltListenersAgreeWithAFreshBuild: a client that keeps listeners built must
// decide (apply error, no-op ACK, new configuration) and configure exactly
// as one that keeps every resource decoded and builds them all afresh.
func TestBuiltListenersAgreeWithAFreshBuild(t *testing.T) {
	pool := differentialPool(t)
	types := []string{model.ClusterType, model.EndpointType, model.ListenerType, model.RouteType, model.SecretType}
	versions := []string{"v1", "v2"}
	stats := map[string]int{}
	defer func() { t.Logf("outcomes: %v", stats) }()
	for seed := int64(1); seed <= 60; seed++ {
		rng := rand.New(rand.NewSource(seed))
		delta := seed%2 == 0
		c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial, Delta: delta})
		if err != nil {
			t.Fatal(err)
		}
		shadow := state{}
		sver := map[string]string{}
		srecv := map[string]bool{}
		var log []string
		for step := 0; step < 120; step++ {
			typ := types[rng.Intn(len(types))]
			u := update{typeURL: typ, version: versions[rng.Intn(len(versions))], upsert: map[string]entry{}}
			names := slices.Sorted(maps.Keys(pool[typ]))
			if !delta {
				u.full = typ == model.ClusterType || typ == model.ListenerType
				for _, n := range names {
					if rng.Intn(5) == 0 {
						continue
					}
					ms := pool[typ][n]
					u.upsert[n] = entry{msg: ms[rng.Intn(len(ms))]}
				}
			} else {
				for _, n := range names {
					switch rng.Intn(4) {
					case 0:
						u.removed = append(u.removed, n)
					case 1, 2:
						ms := pool[typ][n]
						u.upsert[n] = entry{msg: ms[rng.Intn(len(ms))], version: versions[rng.Intn(len(versions))]}
					}
				}
			}
			log = append(log, fmt.Sprintf("%s %s full=%v upsert=%d removed=%v", kindName(typ), u.version, u.full, len(u.upsert), u.removed))

			// The reference: nothing kept built.
			next := shadow.with(u)
			var want *model.Config
			var wantErr error
			noop := srecv[typ] && sver[typ] == u.version && next.equal(shadow)
			if !noop {
				want, wantErr = Build(c.cfg.TrustDomain, next.resources())
			}
			got, gotErr := c.apply(u)
			switch {
			case gotErr != nil:
				stats[kindName(typ)+" nack"]++
			case got == nil:
				stats[kindName(typ)+" noop"]++
			default:
				stats[kindName(typ)+" applied"]++
			}
			where := func() string { return fmt.Sprintf("seed %d delta %v step %d (%s)", seed, delta, step, log[len(log)-1]) }
			switch {
			case (gotErr == nil) != (wantErr == nil):
				t.Fatalf("%s: apply error %v, fresh Build error %v", where(), gotErr, wantErr)
			case noop && got != nil:
				t.Fatalf("%s: the reference ACKs without applying, the client built a configuration", where())
			case !noop && wantErr == nil && got == nil:
				t.Fatalf("%s: the client ACKed without applying; the reference builds a new configuration", where())
			}
			if got != nil {
				want.Version, want.OnDemand = got.Version, got.OnDemand
				if !reflect.DeepEqual(want, got) {
					t.Fatalf("%s: configuration differs from a fresh Build", where())
				}
			}
			if !noop && wantErr == nil {
				shadow = next
				sver[typ] = u.version
				srecv[typ] = true
			}
			e1, r1 := c.res.references()
			e2, r2 := shadow.references()
			if !maps.Equal(e1, e2) || !maps.Equal(r1, r2) {
				t.Fatalf("%s: references %v %v, want %v %v", where(), e1, r1, e2, r2)
			}
			for _, ty := range types {
				if !maps.Equal(c.res.versions(ty), shadow.versions(ty)) {
					t.Fatalf("%s: %s versions %v, want %v", where(), kindName(ty), c.res.versions(ty), shadow.versions(ty))
				}
				if (ty == model.EndpointType || ty == model.RouteType) && !maps.Equal(c.wantedNames(ty), shadowWanted(shadow, ty)) {
					t.Fatalf("%s: wanted %s differ", where(), kindName(ty))
				}
			}
			if c.built != nil && c.res[model.ListenerType] != nil {
				for n, e := range c.res[model.ListenerType] {
					if e.built == nil {
						t.Fatalf("%s: listener %s not kept built", where(), n)
					}
					l := c.built.Outbound
					if n == model.InboundListener {
						l = c.built.Inbound
					}
					if l != e.built.l {
						t.Fatalf("%s: listener %s kept is not the one in force", where(), n)
					}
				}
			}
		}
	}
}

func (c *Client) wantedNames(t string) map[string]bool {
	out := map[string]bool{}
	for _, n := range c.wanted(t) {
		out[n] = true
	}
	return out
}

func shadowWanted(s state, t string) map[string]bool {
	eds, rds := s.references()
	switch t {
	case model.EndpointType:
		return eds
	case model.RouteType:
		return rds
	}
	return map[string]bool{}
}
