package xds

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	statuspb "github.com/weftmesh/weft/sidecar/internal/envoy/google/rpc"
	discoveryv3 "github.com/weftmesh/weft/sidecar/internal/envoy/service/discovery/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// runDelta: one delta ADS stream. Listeners are a wildcard subscription;
// endpoints, routes and the trust bundle are subscribed by name. Clusters
// are a wildcard subscription too, or with OnDemand by name: those the
// configuration requires and those demanded (Demand), which a wake-up
// re-reads; a cluster no longer asked for is dropped at once, as the
// server forgets it. A new stream sends initial_resource_versions of what
// the client holds, so the server sends only what changed while it was
// away.
func (c *Client) runDelta(ctx context.Context, conn grpc.ClientConnInterface) (healthy bool, err error) {
	stream, err := openADS[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse](ctx, conn, adsDeltaMethod)
	if err != nil {
		return false, err
	}
	defer stream.stop()
	subs := newSubscriptions()
	first := true
	send := func(r *discoveryv3.DeltaDiscoveryRequest) error {
		if first {
			r.Node, first = c.node, false
		}
		if err := stream.send(r); err != nil {
			return fmt.Errorf("xds: send: %w", err)
		}
		return nil
	}
	subscribe := func(t string) error {
		want := c.wanted(t)
		prev, sent := subs.names[t]
		wildcard := t == model.ClusterType && !c.cfg.OnDemand || t == model.ListenerType && !c.lookup()
		switch {
		case wildcard && sent, !wildcard && slices.Equal(prev, want), !wildcard && !sent && len(want) == 0:
			return nil
		}
		subs.set(t, want)
		r := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t}
		if !sent {
			r.InitialResourceVersions = c.res.versions(t)
			r.ResourceNamesSubscribe = want
		} else {
			r.ResourceNamesSubscribe = without(want, prev)
			r.ResourceNamesUnsubscribe = without(prev, want)
		}
		if t == model.ListenerType && c.lookup() {
			c.subscribedDests(r.ResourceNamesSubscribe)
		}
		return send(r)
	}
	for _, t := range subscribeOrder {
		if err := subscribe(t); err != nil {
			return false, err
		}
	}
	c.connected()
	c.log.Info("stream open", "protocol", "delta", "node", c.cfg.NodeID, "on_demand", c.cfg.OnDemand)
	// deps re-subscribes what the accepted resources refer to.
	deps := []string{model.EndpointType, model.RouteType}
	if c.cfg.OnDemand {
		deps = []string{model.ClusterType, model.EndpointType, model.RouteType}
	}
	// A demanded cluster's connections all ended OnDemandIdle ago: checked
	// a few times per OnDemandIdle.
	var sweep <-chan time.Time
	if c.cfg.OnDemand {
		sweep = c.clock.After(c.cfg.OnDemandIdle / 4)
	}
	// clusters re-subscribes the clusters by name (on demand) and drops
	// those no longer asked for (no longer required, or demanded and idle):
	// the server forgets them, so keeping them would keep a cluster that
	// no longer changes, and its endpoints, which the server may remove.
	// It returns the configuration without them (nil: nothing dropped).
	clusters := func() (*model.Config, error) {
		prev := subs.names[model.ClusterType]
		if err := subscribe(model.ClusterType); err != nil {
			return nil, err
		}
		gone := without(prev, subs.names[model.ClusterType])
		if !slices.ContainsFunc(gone, func(n string) bool { _, ok := c.res[model.ClusterType][n]; return ok }) {
			return nil, nil
		}
		c.log.Debug("clusters no longer asked for dropped", "clusters", gone)
		cfg, err := c.apply(update{typeURL: model.ClusterType, version: c.versions[model.ClusterType], removed: gone})
		if err != nil { // cannot be: fewer clusters drop their endpoints with them
			return nil, fmt.Errorf("xds: dropping clusters %v: %w", gone, err)
		}
		return cfg, nil
	}
	redemand := func() error {
		if c.lookup() {
			// The destinations looked up (Destination) and those idle.
			// A listener no longer asked for is forgotten by the server,
			// so it is dropped here too, as a cluster is.
			prev := subs.names[model.ListenerType]
			if stale := c.staleDests(prev); len(stale) > 0 {
				// Unsubscribed first, so that the request below asks
				// for them afresh and gets an answer.
				subs.set(model.ListenerType, without(prev, stale))
				if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: model.ListenerType, ResourceNamesUnsubscribe: stale}); err != nil {
					return err
				}
			}
			if err := subscribe(model.ListenerType); err != nil {
				return err
			}
			gone := without(prev, subs.names[model.ListenerType])
			if slices.ContainsFunc(gone, func(n string) bool { _, ok := c.res[model.ListenerType][n]; return ok }) {
				cfg, err := c.apply(update{typeURL: model.ListenerType, version: c.versions[model.ListenerType], removed: gone})
				if err != nil {
					return fmt.Errorf("xds: dropping listeners %v: %w", gone, err)
				}
				c.accepted(cfg)
			}
		}
		cfg, err := clusters()
		if err != nil {
			return err
		}
		if cfg != nil {
			c.accepted(cfg)
		}
		return subscribe(model.EndpointType)
	}

	for {
		select {
		case <-ctx.Done():
			return healthy, ctx.Err()
		case <-c.wake:
			if err := redemand(); err != nil {
				return healthy, err
			}
		case <-sweep:
			sweep = c.clock.After(c.cfg.OnDemandIdle / 4)
			if c.expire() {
				if err := redemand(); err != nil {
					return healthy, err
				}
			}
		case err := <-stream.failed:
			return healthy, fmt.Errorf("xds: receive: %w", err)
		case resp := <-stream.responses:
			healthy = true
			t := resp.GetTypeUrl()
			absent := c.neverHeld(resp)
			cfg, err := c.applyDelta(subs, resp)
			if err != nil {
				c.rejected(t, resp.GetSystemVersionInfo(), err)
				nack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce(),
					ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}}
				if err := send(nack); err != nil {
					return healthy, err
				}
				continue
			}
			if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce()}); err != nil {
				return healthy, err
			}
			c.log.Debug("ACK", "type", kindName(t), "version", resp.GetSystemVersionInfo(),
				"resources", len(resp.GetResources()), "removed", len(resp.GetRemovedResources()))
			for _, dep := range deps {
				if dep == model.ClusterType {
					// Built on what this response made: it supersedes it.
					dropped, err := clusters()
					if err != nil {
						return healthy, err
					}
					if dropped != nil {
						cfg = dropped
					}
					continue
				}
				if err := subscribe(dep); err != nil {
					return healthy, err
				}
			}
			c.accepted(cfg)
			if t == model.ListenerType && c.lookup() {
				var sent []string
				for _, r := range resp.GetResources() {
					sent = append(sent, r.GetName())
				}
				// Every removal is an answer: a listener never held does
				// not exist, one held no longer does (its Service went).
				c.answeredDests(sent, resp.GetRemovedResources())
			}
			// A demanded cluster the control plane says it does not have
			// fails its waiting connections at once, is forgotten and is
			// unsubscribed explicitly, whatever was demanded since: a
			// connection that demanded it after forgetAbsent subscribes it
			// again (redemand) and gets a fresh answer, where leaving the
			// subscription as it was would get none (the control plane
			// answers an absent name once).
			if c.cfg.OnDemand && len(absent) > 0 {
				if gone := c.forgetAbsent(absent); len(gone) > 0 {
					subs.set(model.ClusterType, without(subs.names[model.ClusterType], gone))
					if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: model.ClusterType, ResourceNamesUnsubscribe: gone}); err != nil {
						return healthy, err
					}
					if err := redemand(); err != nil {
						return healthy, err
					}
				}
			}
		}
	}
}

// neverHeld returns the clusters a clusters response removes that the
// client does not hold: the control plane's answer to a name asked for
// that it does not have (the protocol's "does not exist"). Endpoints are
// not read so: a removed Service's assignment can come after its cluster
// was dropped, and a demand still held by a connection is not forgotten
// for it.
func (c *Client) neverHeld(resp *discoveryv3.DeltaDiscoveryResponse) []string {
	if resp.GetTypeUrl() != model.ClusterType {
		return nil
	}
	var out []string
	for _, n := range resp.GetRemovedResources() {
		if _, held := c.res[model.ClusterType][n]; !held {
			out = append(out, n)
		}
	}
	return out
}

func (c *Client) applyDelta(subs subscriptions, resp *discoveryv3.DeltaDiscoveryResponse) (*model.Config, error) {
	t := resp.GetTypeUrl()
	u := update{typeURL: t, version: resp.GetSystemVersionInfo(), upsert: map[string]entry{}, removed: resp.GetRemovedResources()}
	if err := conform(resp); err != nil {
		return nil, fmt.Errorf("xds: response %s: %w", kindName(t), err)
	}
	for i, r := range resp.GetResources() {
		if r.GetResource() == nil {
			return nil, fmt.Errorf("xds: response %s resource %d %q: no content", kindName(t), i, r.GetName())
		}
		m, err := decode(t, r.GetResource())
		if err != nil {
			return nil, fmt.Errorf("xds: response %s resource %d: %w", kindName(t), i, err)
		}
		if name := resourceName(m); name != r.GetName() {
			return nil, fmt.Errorf("xds: response %s resource %d %q: the resource is named %q", kindName(t), i, r.GetName(), name)
		}
		if _, dup := u.upsert[r.GetName()]; dup {
			return nil, fmt.Errorf("xds: response %s: %q appears twice", kindName(t), r.GetName())
		}
		if subs.late(t, r.GetName()) {
			continue // a late answer for something we no longer ask for
		}
		u.upsert[r.GetName()] = entry{msg: m, version: r.GetVersion()}
	}
	return c.apply(u)
}

// without returns the names of a not in b.
func without(a, b []string) []string {
	drop := map[string]bool{}
	for _, n := range b {
		drop[n] = true
	}
	var out []string
	for _, n := range a {
		if !drop[n] {
			out = append(out, n)
		}
	}
	return slices.Sorted(slices.Values(out))
}
