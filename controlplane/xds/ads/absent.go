package ads

import (
	"maps"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// absentCache answers a delta subscription by name to a resource the
// node's snapshot does not hold the way the xDS protocol says a server
// tells a client that a requested resource does not exist: its name in
// removed_resources. go-control-plane's snapshot cache lists a name there
// only if the stream was sent it (the subscription's ReturnedResources);
// a name never sent, subscribed to and absent, gets no answer at all, so
// a client asking for it (a sidecar's cluster learnt on demand) could
// only wait for its own timeout.
//
// For the watch a request opens, each name the request newly subscribes
// to counts as returned at version "": the snapshot cache then sends the
// resource if the snapshot holds it (its version differs from "") and
// names it in removed_resources if not. Once: the stream keeps the
// response's version map, which holds only what was sent, and the
// requests that follow (the ACKs) subscribe to nothing new, so an absent
// name is not repeated in every later response. If it appears later, the
// stream, still subscribed, is sent it as any change.
//
// The watch's making, whose cost grows with what the stream subscribes to
// (go-control-plane compares every subscribed name with the snapshot), is
// charged to a node that looks destinations up as its lookups are
// (lookupbudget.go): the app behind the sidecar picks those names.
type absentCache struct {
	cachev3.Cache
	s *Server
}

func (c absentCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	start := c.s.clock.Now()
	defer func() { c.s.watchSpent(req.GetNode().GetId(), c.s.clock.Since(start)) }()
	if asked := newlyAsked(req, sub); asked != nil {
		sub = asked
	}
	return c.Cache.CreateDeltaWatch(req, sub, ch)
}

// askedSubscription is a subscription whose newly subscribed names count
// as returned at version "".
type askedSubscription struct {
	cachev3.Subscription
	returned map[string]string
}

func (s askedSubscription) ReturnedResources() map[string]string { return s.returned }

// newlyAsked returns sub with the names req newly subscribes to
// (newlySubscribed) returned at version "", or nil if there are none.
func newlyAsked(req *cachev3.DeltaRequest, sub cachev3.Subscription) cachev3.Subscription {
	asked := newlySubscribed(req, sub)
	if asked == nil {
		return nil
	}
	known := sub.ReturnedResources()
	returned := make(map[string]string, len(known)+len(asked))
	maps.Copy(returned, known)
	for n := range asked {
		returned[n] = ""
	}
	return askedSubscription{sub, returned}
}

// newlySubscribed is the set of names req subscribes to that the stream
// still subscribes to and was not sent, or nil if there are none: the
// names a "does not exist" answers, for the snapshot types (absentCache)
// and the endpoints (edsWatch.ask) alike. A name also unsubscribed in req,
// or the wildcard "*", is not one.
func newlySubscribed(req *cachev3.DeltaRequest, sub cachev3.Subscription) map[string]struct{} {
	var asked map[string]struct{}
	subscribed, known := sub.SubscribedResources(), sub.ReturnedResources()
	for _, n := range req.GetResourceNamesSubscribe() {
		if _, ok := subscribed[n]; !ok {
			continue
		}
		if _, ok := known[n]; ok {
			continue
		}
		if asked == nil {
			asked = map[string]struct{}{}
		}
		asked[n] = struct{}{}
	}
	return asked
}
