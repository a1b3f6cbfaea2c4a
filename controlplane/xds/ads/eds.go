package ads

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Endpoints.
//
// A ClusterLoadAssignment is mesh-wide: at a given state of the mesh model,
// a name means the same endpoints for every sidecar (package xds says so
// of every Generator). So endpoints are not served from the per-node
// snapshots but from one cache of every ClusterLoadAssignment some
// connected sidecar's published snapshot holds (edsCache, a
// go-control-plane cachev3.Cache for EDS alone), behind a MuxCache that
// sends EDS watches to it and every other type to the snapshot cache.
// What that buys (docs/scale.md):
//
//   - a change of one Service's endpoints encodes that assignment once; the
//     responses to every stream subscribed to it share the encoding
//     (go-control-plane's snapshot cache encodes each resource once per
//     response, so once per stream);
//   - a round in which only endpoints changed sets no snapshot
//     (Server.generate), so no stream's watches of the other types compare
//     their resources again;
//   - a change visits each open EDS watch once, for the names that changed.
//     go-control-plane's LinearCache was measured and not kept: it indexes
//     every watch under every name it subscribes to, and a sidecar
//     subscribes to every assignment, so at 1,000 sidecars × 1,000
//     Services the index alone held a million entries (heap per sidecar
//     0.55 → 0.84 MB).
//
// Each node's snapshot is still built, validated, checked for
// consistency and sized with its assignments, exactly as before: only the
// serving moved. Before a node's snapshot is published, its assignments
// are put in the cache (only those whose content differs from what the
// cache holds, so an unchanged assignment is never pushed again), so a
// cluster never reaches a sidecar before its endpoints can; an assignment
// goes from the cache once no published snapshot holds it.
//
// A node is served only the assignments of its own published snapshot, as
// the snapshot cache served it, whatever it subscribes to and whatever the
// cache holds for other nodes: hold adds the list of the snapshot about to
// be published (its streams get what it adds before the snapshot goes
// out), settle drops the previous one after (they are told what went).
// Every node holds every assignment of the mesh today, but a scoped
// snapshot must not be widened by asking.
//
// Protocol. Delta: a watch is answered with the subscribed assignments
// (every one for a wildcard subscription) whose version differs from what
// the stream holds, and removed_resources for those it holds that are gone
// (those no longer subscribed are forgotten silently); the first request of a wildcard subscription is
// answered even when empty, as go-control-plane's caches do. SotW: the
// first response of a stream (no version, or another process's) names every
// subscribed assignment; later ones only those that changed (the contract
// lets EDS responses name a subset; sidecar/xds/README.md). Resource
// versions are the content hash the snapshot cache used
// (cachev3.HashResource of the deterministic encoding), so a sidecar
// resuming with initial_resource_versions is judged the same way. The
// system version of an EDS response is this cache's: a per-process prefix
// and a counter that moves on every change, not a node's content hash;
// Status shows endpoints SYNCED when the sidecar ACKed the last EDS
// response sent to it (a change is answered at once, so nothing is
// pending).
//
// While rounds overlap a model change, two nodes can put different
// content under one name; the later write wins and the round that the
// change started puts the newest, as it does for every other type.
type edsCache struct {
	mu sync.RWMutex
	// res is every assignment held, by name.
	res map[string]*edsRes
	// lists are the lists of assignments published snapshots hold, by
	// content version; refs counts, per assignment, the lists naming it;
	// nodes is the list each node holds (by node ID), what it is served.
	lists map[string]*edsList
	refs  map[string]int
	nodes map[string]*edsNode
	// last is the content version of the list of assignments last put
	// whole; while it is the newest write, a node with the same list has
	// nothing to put.
	last string
	// prefix and updates make the version: every change moves it.
	prefix  string
	updates uint64
	// epoch moves with every change of what any node is served (updates,
	// and a node's lists): a watch scanned under the read lock is scanned
	// again before it is kept if it moved.
	epoch   uint64
	watches map[uint64]*edsWatch
	byNode  map[string]map[uint64]struct{} // the open watches of each node
	nextID  uint64
}

// edsRes is one assignment as every response carries it, encoded once and
// shared (read-only) by all of them.
type edsRes struct {
	version string
	delta   *discovery.Resource // its Resource is the Any of sotw
}

// edsWatch is an open watch: delta (dreq, dch) or SotW (req, ch).
type edsWatch struct {
	node string // its node ID
	// fresh: a SotW request with no version of this process (a new
	// stream, or a NACK of its first response): what the stream was sent
	// is not taken as held, so it is sent everything it subscribes to.
	fresh bool
	sub   cachev3.Subscription
	dreq  *cachev3.DeltaRequest
	dch   chan cachev3.DeltaResponse
	req   *cachev3.Request
	ch    chan cachev3.Response
	// ask: the names the delta request that opened the watch newly
	// subscribes to (newlySubscribed; asked), a set: a request can name
	// many.
	ask map[string]struct{}
}

var _ cachev3.Cache = (*edsCache)(nil)

func newEDSCache() *edsCache {
	var b [2]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	// A SotW stream whose version has another prefix (another process's)
	// is sent everything it subscribes to. Short, so that weftctl status's
	// 12 characters show the counter: "3fa9.17".
	return &edsCache{
		res: map[string]*edsRes{}, lists: map[string]*edsList{}, refs: map[string]int{}, nodes: map[string]*edsNode{},
		watches: map[uint64]*edsWatch{}, byNode: map[string]map[uint64]struct{}{},
		prefix: hex.EncodeToString(b[:]) + ".",
	}
}

// mux routes EDS watches to e and every other type to snap.
func (e *edsCache) mux(snap cachev3.Cache) cachev3.Cache {
	classify := func(url string) string {
		if url == resource.EndpointType {
			return "eds"
		}
		return "snapshot"
	}
	return &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return classify(r.GetTypeUrl()) },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return classify(r.GetTypeUrl()) },
		Caches:        map[string]cachev3.Cache{"eds": e, "snapshot": snap},
	}
}

// publish readies the assignments of node's snapshot about to be
// published (its EDS resources: the list's content version, their versions
// and the resources by name): the cache holds them, pushing those whose
// content differs from what it held, and the node holds the list (hold).
// One step, so no other node letting the list go can take its assignments
// from the cache in between. Called before the snapshot is published;
// settle follows the publication. list is never empty (hashEntries).
func (e *edsCache) publish(node, list string, versions map[string]string, items map[string]types.ResourceWithTTL) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.putLocked(list, versions, items); err != nil {
		return err
	}
	e.holdLocked(node, list, versions)
	return nil
}

// putLocked makes the cache hold the assignments of a list, pushing those
// whose content differs from what it holds. Called with e.mu held.
func (e *edsCache) putLocked(list string, versions map[string]string, items map[string]types.ResourceWithTTL) error {
	if list == e.last {
		return nil
	}
	var put []*edsRes
	for name, v := range versions {
		if r := e.res[name]; r != nil && r.version == v {
			continue
		}
		it, ok := items[name]
		if !ok {
			return fmt.Errorf("xds: endpoints %q in the version map and not in the snapshot", name)
		}
		enc, err := cachev3.MarshalResource(it.Resource)
		if err != nil {
			return fmt.Errorf("xds: endpoints %q: %w", name, err)
		}
		put = append(put, &edsRes{version: v, delta: &discovery.Resource{
			Name: name, Version: v, Resource: &anypb.Any{TypeUrl: resource.EndpointType, Value: enc},
		}})
	}
	// All or nothing: watches are answered for what the cache holds.
	changed := make([]string, len(put))
	for i, r := range put {
		e.res[r.delta.GetName()] = r
		changed[i] = r.delta.GetName()
	}
	e.last = list
	if len(changed) > 0 {
		e.changed(changed)
	}
	return nil
}

// edsList is a list of assignments published snapshots hold: its names
// and versions (a typeEntry's version map, shared and read-only) and how
// many snapshots hold it.
type edsList struct {
	versions map[string]string
	names    string // a hash of the names alone: lists with equal names serve a node the same
	holders  int
}

// namesKey is a hash of the names of versions.
func namesKey(versions map[string]string) string {
	h := sha256.New()
	for _, n := range slices.Sorted(maps.Keys(versions)) {
		h.Write([]byte(n))
		h.Write([]byte{0})
	}
	return string(h.Sum(nil))
}

// edsNode is what a node is served: the list of its published snapshot
// and, while its next snapshot is being published, that one's too.
type edsNode struct {
	cur, next string
}

// holdLocked makes node hold the list of assignments next (its content
// version; the versions by name) besides the one it holds, and answers its
// open watches for what that adds, so a sidecar that subscribes to an
// assignment when it gets its cluster is served it. Called with e.mu held.
func (e *edsCache) holdLocked(node, next string, versions map[string]string) {
	n := e.nodes[node]
	if n == nil {
		n = &edsNode{}
		e.nodes[node] = n
	}
	if n.next != "" && n.next != next {
		// A publication that failed (no settle): undone, and the node's
		// streams told of what it had added.
		failed := n.next
		n.next = ""
		e.answerNode(node)
		e.unholdLocked(failed)
	}
	if n.cur == next || n.next == next {
		return
	}
	l := e.lists[next]
	if l == nil {
		l = &edsList{versions: versions, names: namesKey(versions)}
		e.lists[next] = l
		for name := range versions {
			e.refs[name]++
		}
	}
	l.holders++
	n.next = next
	if cur := e.lists[n.cur]; cur == nil || cur.names != l.names {
		// (Same names: what it is served does not change; new content
		// under them went out with put.)
		e.answerNode(node)
	}
}

// settle ends node's publication of the list it holds next: it is served
// that list alone, its open watches are told what went, and the list it
// held before is let go.
func (e *edsCache) settle(node string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.nodes[node]
	if n == nil || n.next == "" {
		return
	}
	old := n.cur
	n.cur, n.next = n.next, ""
	if prev := e.lists[old]; prev != nil && prev.names != e.lists[n.cur].names {
		e.answerNode(node)
	}
	e.unholdLocked(old)
}

// leave forgets a node that went (its last stream closed) and lets go of
// what it held.
func (e *edsCache) leave(node string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.nodes[node]
	if n == nil {
		return
	}
	delete(e.nodes, node)
	e.epoch++
	e.unholdLocked(n.cur)
	e.unholdLocked(n.next)
}

// answerNode answers the open watches of node with what they lack or hold
// that is gone. Called with e.mu held.
func (e *edsCache) answerNode(node string) {
	e.epoch++ // what node is served changed
	for id := range e.byNode[node] {
		if e.watches[id].answer(e, nil, false) {
			e.forget(id)
		}
	}
}

// forget closes watch id. Called with e.mu held.
func (e *edsCache) forget(id uint64) {
	w := e.watches[id]
	if w == nil {
		return
	}
	delete(e.watches, id)
	if ids := e.byNode[w.node]; len(ids) > 1 {
		delete(ids, id)
	} else {
		delete(e.byNode, w.node)
	}
}

// unholdLocked lets a list of assignments go from one holder ("": none)
// and takes from the cache the assignments no held list names any more.
// Called with e.mu held.
func (e *edsCache) unholdLocked(list string) {
	l := e.lists[list]
	if list == "" || l == nil {
		return
	}
	if l.holders--; l.holders > 0 {
		return
	}
	delete(e.lists, list)
	var gone []string
	for name := range l.versions {
		if e.refs[name]--; e.refs[name] <= 0 {
			delete(e.refs, name)
			if _, held := e.res[name]; held {
				delete(e.res, name)
				gone = append(gone, name)
			}
		}
	}
	if len(gone) > 0 {
		e.last = "" // it may name what is gone
		e.changed(gone)
	}
}

// served is the assignment name as node is served it: nil unless a list
// the node holds names it. Called with e.mu held.
func (e *edsCache) served(node, name string) *edsRes {
	n := e.nodes[node]
	if n == nil || !(e.names(n.cur, name) || e.names(n.next, name)) {
		return nil
	}
	return e.res[name]
}

// names says whether list (a content version) names name. Called with e.mu
// held.
func (e *edsCache) names(list, name string) bool {
	l := e.lists[list]
	if l == nil {
		return false
	}
	_, ok := l.versions[name]
	return ok
}

// changed moves the version and answers the open watches that names
// concern, a share of them per CPU: each answer copies the version map of
// its stream, which for a sidecar is every assignment of the mesh. Called
// with e.mu held. A watch's channel never blocks: it has room for a
// response of every type, and a watch is answered once.
func (e *edsCache) changed(names []string) {
	e.updates++
	e.epoch++
	slices.Sort(names)
	ids := slices.Collect(maps.Keys(e.watches))
	answered := make([]bool, len(ids))
	workers := min(runtime.GOMAXPROCS(0), (len(ids)+watchesPerWorker-1)/watchesPerWorker)
	var wg sync.WaitGroup
	for k := range workers {
		wg.Go(func() {
			for i := k; i < len(ids); i += workers {
				answered[i] = e.watches[ids[i]].answer(e, names, false)
			}
		})
	}
	wg.Wait()
	for i, id := range ids {
		if answered[i] {
			e.forget(id)
		}
	}
}

// watchesPerWorker is the fewest watches changed gives a goroutine of its
// own.
const watchesPerWorker = 64

// version is the cache's version now. Called with e.mu held.
func (e *edsCache) versionLocked() string { return e.prefix + strconv.FormatUint(e.updates, 10) }

// version is the cache's version now: what a resumed delta stream that
// holds its assignments exactly runs.
func (e *edsCache) version() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.versionLocked()
}

// answer sends w what names (nil: every name the stream subscribes to or
// holds) change for it, if anything, or an empty response when force;
// it says whether it sent. Called with e.mu held, for reading at least.
func (w *edsWatch) answer(e *edsCache, names []string, force bool) bool {
	sub := w.sub
	known, subs, wildcard := sub.ReturnedResources(), sub.SubscribedResources(), sub.IsWildcard()
	if w.fresh {
		known = nil
	}
	var upd []*edsRes
	var removed, dropped []string
	consider := func(n string) {
		r := e.served(w.node, n)
		_, subscribed := subs[n]
		kv, isKnown := known[n]
		switch {
		case !subscribed && !wildcard:
			// No longer subscribed: forgotten without a word, as
			// go-control-plane's snapshot cache does.
			if isKnown {
				dropped = append(dropped, n)
			}
		case r == nil:
			// Gone, or asked for and absent: the protocol's "does not
			// exist" (absent.go).
			if isKnown || w.asked(n) {
				removed = append(removed, n)
			}
		case !isKnown || kv != r.version:
			upd = append(upd, r)
		}
	}
	switch {
	case names != nil:
		for _, n := range names {
			consider(n)
		}
	case wildcard:
		// Every name the node is served, then those the stream holds that
		// it is not.
		nd := e.nodes[w.node]
		if nd == nil {
			nd = &edsNode{}
		}
		if l := e.lists[nd.cur]; l != nil {
			for n := range l.versions {
				consider(n)
			}
		}
		if l := e.lists[nd.next]; l != nil {
			for n := range l.versions {
				if !e.names(nd.cur, n) {
					consider(n)
				}
			}
		}
		for n := range known {
			if !e.names(nd.cur, n) && !e.names(nd.next, n) {
				consider(n)
			}
		}
		// Then those the request asked for by name that it neither is
		// served nor holds: absent.
		for n := range w.ask {
			if _, held := known[n]; !held && !e.names(nd.cur, n) && !e.names(nd.next, n) {
				consider(n)
			}
		}
	default:
		// Every name subscribed, then those held and no longer subscribed.
		for n := range subs {
			consider(n)
		}
		for n := range known {
			if _, ok := subs[n]; !ok {
				consider(n)
			}
		}
	}
	slices.SortFunc(upd, func(a, b *edsRes) int { return strings.Compare(a.delta.GetName(), b.delta.GetName()) })
	slices.Sort(removed)
	if !force && len(upd) == 0 && (len(removed) == 0 || w.dch == nil) {
		return false // (SotW cannot say what went)
	}
	next := maps.Clone(known)
	if next == nil {
		next = map[string]string{}
	}
	for _, r := range upd {
		next[r.delta.GetName()] = r.version
	}
	for _, n := range slices.Concat(removed, dropped) {
		delete(next, n)
	}
	version := e.versionLocked()
	if w.dch != nil {
		out := &discovery.DeltaDiscoveryResponse{SystemVersionInfo: version, TypeUrl: resource.EndpointType, RemovedResources: removed}
		for _, r := range upd {
			out.Resources = append(out.Resources, r.delta)
		}
		w.dch <- &cachev3.DeltaPassthroughResponse{DeltaRequest: w.dreq, DeltaDiscoveryResponse: out, NextVersionMap: next}
		return true
	}
	out := &discovery.DiscoveryResponse{VersionInfo: version, TypeUrl: resource.EndpointType}
	for _, r := range upd {
		out.Resources = append(out.Resources, r.delta.GetResource())
	}
	w.ch <- &cachev3.PassthroughResponse{Request: w.req, DiscoveryResponse: out, ReturnedResources: next}
	return true
}

// asked says whether the request that opened w, a delta one, newly
// subscribed to name n (the snapshot types' rule, absentCache: an absent
// name a request asks for is answered in removed_resources, once).
func (w *edsWatch) asked(n string) bool {
	_, ok := w.ask[n]
	return ok
}

// CreateWatch opens a SotW EDS watch, answered at once if the stream lacks
// something it subscribes to (its first request: everything).
func (e *edsCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	if req.GetTypeUrl() != resource.EndpointType {
		return nil, fmt.Errorf("xds: endpoint cache asked for %s", req.GetTypeUrl())
	}
	w := &edsWatch{node: req.GetNode().GetId(), sub: sub, req: req, ch: ch}
	w.fresh = !strings.HasPrefix(req.GetVersionInfo(), e.prefix)
	return e.watch(w, w.fresh), nil
}

// CreateDeltaWatch opens a delta EDS watch, answered at once if the stream
// lacks something it subscribes to or holds something gone.
func (e *edsCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	if req.GetTypeUrl() != resource.EndpointType {
		return nil, fmt.Errorf("xds: endpoint cache asked for %s", req.GetTypeUrl())
	}
	w := &edsWatch{node: req.GetNode().GetId(), sub: sub, dreq: req, dch: ch, ask: newlySubscribed(req, sub)}
	return e.watch(w, sub.IsWildcard() && req.GetResponseNonce() == ""), nil
}

// watch answers w at once if the stream lacks something, else keeps it
// until a change concerns it. What the stream lacks is found under the
// read lock, so the streams' requests (an ACK of every push) do not wait
// for one another; it is found again under the write lock only if the
// cache changed in between.
func (e *edsCache) watch(w *edsWatch, force bool) func() {
	e.mu.RLock()
	seen := e.epoch
	sent := w.answer(e, nil, force)
	e.mu.RUnlock()
	if sent {
		return func() {}
	}
	if betweenLocks != nil {
		betweenLocks() // tests: a change between the scan and the registration
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.epoch != seen && w.answer(e, nil, force) {
		return func() {}
	}
	e.nextID++
	id := e.nextID
	e.watches[id] = w
	if e.byNode[w.node] == nil {
		e.byNode[w.node] = map[uint64]struct{}{}
	}
	e.byNode[w.node][id] = struct{}{}
	return func() {
		e.mu.Lock()
		e.forget(id)
		e.mu.Unlock()
	}
}

// betweenLocks, if set (tests), runs in watch between the scan under the
// read lock and the write lock.
var betweenLocks func()

// Fetch is not served (REST is refused before it; callbacks).
func (e *edsCache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errors.New("xds: fetch is not served")
}
