package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/sidecar/internal/envoy"
	statuspb "github.com/weftmesh/weft/sidecar/internal/envoy/google/rpc"
	discoveryv3 "github.com/weftmesh/weft/sidecar/internal/envoy/service/discovery/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// sotwStream is one state-of-the-world ADS stream's bookkeeping.
type sotwStream struct {
	subscriptions
	nonce    map[string]string // type URL -> nonce of the last response
	rejected map[string]string // type URL -> version last NACKed, for repeats
	repeats  map[string]int
}

// runSotw: one ADS stream, every type subscribed; ACK is the response's
// version and nonce, NACK the previous version with the nonce and
// error_detail.
func (c *Client) runSotw(ctx context.Context, conn grpc.ClientConnInterface) (healthy bool, err error) {
	stream, err := openADS[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse](ctx, conn, adsSotwMethod)
	if err != nil {
		return false, err
	}
	defer stream.stop()
	s := &sotwStream{subscriptions: newSubscriptions(), nonce: map[string]string{}, rejected: map[string]string{}, repeats: map[string]int{}}
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
		s.set(t, names)
		return stream.send(request(t, nil))
	}
	for _, t := range subscribeOrder {
		if err := subscribe(t); err != nil {
			return false, fmt.Errorf("xds: send: %w", err)
		}
	}
	c.connected()
	c.log.Info("stream open", "protocol", "sotw", "node", c.cfg.NodeID)

	pending := map[string]*discoveryv3.DiscoveryRequest{} // delayed NACKs of repeated responses
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return healthy, ctx.Err()
		case err := <-stream.failed:
			return healthy, fmt.Errorf("xds: receive: %w", err)
		case <-retry:
			retry = nil
			for t, r := range pending {
				delete(pending, t)
				if err := stream.send(r); err != nil {
					return healthy, fmt.Errorf("xds: send: %w", err)
				}
			}
		case resp := <-stream.responses:
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
				if err := stream.send(nack); err != nil {
					return healthy, fmt.Errorf("xds: send: %w", err)
				}
				continue
			}
			delete(s.rejected, t)
			delete(pending, t)
			if err := stream.send(request(t, nil)); err != nil {
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
		if s.late(t, name) {
			continue
		}
		u.upsert[name] = entry{msg: m}
	}
	return c.apply(u)
}

// adsStream is an open ADS stream, SotW or delta, and the goroutine that
// reads it.
type adsStream[Req, Res any] struct {
	*grpc.GenericClientStream[Req, Res]
	ctx       context.Context
	responses <-chan *Res
	failed    <-chan error // why reading stopped
	stop      func()       // ends the stream and waits for its reader
}

// send sends r. When the stream has already ended (io.EOF) it returns why,
// as the reader gets it: a stream the server ended with ResourceExhausted
// (a response too large) must not read as a plain EOF, or the backoff
// would be reset. Responses still on their way are dropped; the stream is
// over and the next one starts from what the client holds.
func (s *adsStream[Req, Res]) send(r *Req) error {
	err := s.Send(r)
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		select {
		case why := <-s.failed:
			return why
		case <-s.responses:
		case <-s.ctx.Done():
			return err
		}
	}
}

// openADS opens an ADS stream of method and starts reading it. Stop it when
// done with it. The stream receives responses up to the contract's
// message limit (names.MaxXDSMessageSize), whatever the connection's
// default (gRPC's is 4 MiB): the control plane never sends more.
func openADS[Req, Res any](ctx context.Context, conn grpc.ClientConnInterface, method string) (*adsStream[Req, Res], error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := envoy.OpenStream[Req, Res](ctx, conn, method, true, grpc.MaxCallRecvMsgSize(names.MaxXDSMessageSize))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("xds: open stream: %w", err)
	}
	responses, failed, wg := receive(ctx, stream.Recv)
	return &adsStream[Req, Res]{GenericClientStream: stream, ctx: ctx, responses: responses, failed: failed, stop: func() { cancel(); wg.Wait() }}, nil
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
