package xds

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/weftmesh/weft/sidecar/internal/envoy"
	statuspb "github.com/weftmesh/weft/sidecar/internal/envoy/google/rpc"
	discoveryv3 "github.com/weftmesh/weft/sidecar/internal/envoy/service/discovery/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// sotwStream is one state-of-the-world ADS stream's bookkeeping.
type sotwStream struct {
	nonce    map[string]string   // type URL -> nonce of the last response
	names    map[string][]string // type URL -> resource names last requested (nil: never)
	ever     map[string]map[string]bool
	rejected map[string]string // type URL -> version last NACKed, for repeats
	repeats  map[string]int
}

// runSotw: one ADS stream, every type subscribed; ACK is the response's
// version and nonce, NACK the previous version with the nonce and
// error_detail.
func (c *Client) runSotw(ctx context.Context, conn grpc.ClientConnInterface) (healthy bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := envoy.OpenStream[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse](ctx, conn, adsSotwMethod, true)
	if err != nil {
		return false, fmt.Errorf("xds: open stream: %w", err)
	}
	s := &sotwStream{nonce: map[string]string{}, names: map[string][]string{}, ever: map[string]map[string]bool{},
		rejected: map[string]string{}, repeats: map[string]int{}}
	first := true
	request := func(t string, detail error) *discoveryv3.DiscoveryRequest {
		r := &discoveryv3.DiscoveryRequest{TypeUrl: t, VersionInfo: c.versions[t], ResponseNonce: s.nonce[t], ResourceNames: s.names[t]}
		if first {
			r.Node, first = c.node, false
		}
		if detail != nil {
			r.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: detail.Error()}
		}
		return r
	}
	subscribe := func(t string) error {
		names := c.wanted(t)
		prev, sent := s.names[t]
		if sent && slices.Equal(prev, names) || !sent && t != model.ClusterType && t != model.ListenerType && len(names) == 0 {
			return nil
		}
		s.names[t] = names
		if s.ever[t] == nil {
			s.ever[t] = map[string]bool{}
		}
		for _, n := range names {
			s.ever[t][n] = true
		}
		return stream.Send(request(t, nil))
	}
	for _, t := range subscribeOrder {
		if err := subscribe(t); err != nil {
			return false, fmt.Errorf("xds: send: %w", err)
		}
	}
	c.connected()
	c.log.Info("stream open", "protocol", "sotw", "node", c.cfg.NodeID)

	responses, recvErr, wg := receive(ctx, stream.Recv)
	defer func() { cancel(); wg.Wait() }()
	pending := map[string]*discoveryv3.DiscoveryRequest{} // delayed NACKs of repeated responses
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return healthy, ctx.Err()
		case err := <-recvErr:
			return healthy, fmt.Errorf("xds: receive: %w", err)
		case <-retry:
			retry = nil
			for t, r := range pending {
				delete(pending, t)
				if err := stream.Send(r); err != nil {
					return healthy, fmt.Errorf("xds: send: %w", err)
				}
			}
		case resp := <-responses:
			healthy = true
			t := resp.GetTypeUrl()
			s.nonce[t] = resp.GetNonce()
			cfg, err := c.applySotw(s, resp)
			if err != nil {
				c.rejected(t, resp.GetVersionInfo(), err)
				nack := request(t, err)
				if s.rejected[t] == resp.GetVersionInfo() {
					// The server resends what we rejected until something
					// changes; do not spin with it.
					s.repeats[t]++
					pending[t] = nack
					if retry == nil {
						retry = c.clock.After(c.cfg.Backoff.delay(s.repeats[t]))
					}
					continue
				}
				s.rejected[t], s.repeats[t] = resp.GetVersionInfo(), 0
				if err := stream.Send(nack); err != nil {
					return healthy, fmt.Errorf("xds: send: %w", err)
				}
				continue
			}
			delete(s.rejected, t)
			delete(pending, t)
			if err := stream.Send(request(t, nil)); err != nil {
				return healthy, fmt.Errorf("xds: send: %w", err)
			}
			c.log.Debug("ACK", "type", kindName(t), "version", resp.GetVersionInfo(), "resources", len(resp.GetResources()))
			for _, dep := range []string{model.EndpointType, model.RouteType} {
				if err := subscribe(dep); err != nil {
					return healthy, fmt.Errorf("xds: send: %w", err)
				}
			}
			c.accepted(cfg)
		}
	}
}

// applySotw decodes and applies a response. Listeners and clusters come
// whole; other types only name what changed. Endpoints or routes we no
// longer ask for are late answers to an earlier request and are dropped.
func (c *Client) applySotw(s *sotwStream, resp *discoveryv3.DiscoveryResponse) (*model.Config, error) {
	t := resp.GetTypeUrl()
	u := update{typeURL: t, version: resp.GetVersionInfo(), upsert: map[string]entry{},
		full: t == model.ClusterType || t == model.ListenerType}
	if err := conform(resp); err != nil {
		return nil, fmt.Errorf("xds: response %s: %w", kindName(t), err)
	}
	for i, a := range resp.GetResources() {
		m, err := decode(t, a)
		if err != nil {
			return nil, fmt.Errorf("xds: response %s resource %d: %w", kindName(t), i, err)
		}
		name := resourceName(m)
		if _, dup := u.upsert[name]; dup {
			return nil, fmt.Errorf("xds: response %s: %q appears twice", kindName(t), name)
		}
		if (t == model.EndpointType || t == model.RouteType) && !slices.Contains(s.names[t], name) && s.ever[t][name] {
			continue
		}
		u.upsert[name] = entry{msg: m}
	}
	return c.apply(u)
}

// receive reads a stream until it fails, handing responses over; wg is
// done when the reader has stopped (after ctx ends or the stream fails).
func receive[T any](ctx context.Context, recv func() (T, error)) (<-chan T, <-chan error, *sync.WaitGroup) {
	out, errc := make(chan T), make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			r, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
		}
	})
	return out, errc, &wg
}
