package ads

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/controlplane/xds"
)

// Building snapshots.
//
// Every node's snapshot is validated, hashed (a content version per type),
// checked for consistency and given the per-resource version map of delta
// xDS. With the translator most resources are the same for every node (see
// controlplane/xds/translate/shared.go), so the Server does that work once per resource and
// once per distinct list of resources, not once per node:
//
//   - resCache keeps an entry (name, deterministic encoding, versions,
//     validation) per shared resource pointer, and interns every entry by
//     content (type, name, encoding), so equal resources share one entry
//     whatever their pointers;
//   - the version, cachev3.Resources and version map of a type are kept per
//     sequence of interned entries, and shared (read-only) between the
//     snapshots of every node with that sequence;
//   - the version map is computed here, outside go-control-plane's
//     cache-wide lock (SetSnapshot's ConstructVersionMap then returns at
//     once), with the encoding and hash go-control-plane would use.
//
// All this relies on the invariant that a generated resource is never
// modified (package xds); only a sharingGenerator promises it, so other generators get
// the uncached path (buildSnapshot), which computes exactly the same.

// sharingGenerator is a xds.Generator that returns the same resources to many
// nodes, never modified (translate.Generator), and says which ones.
type sharingGenerator interface {
	SharedResources() func(types.Resource) bool
}

// buildSnapshot validates res and builds its snapshot; every type
// go-control-plane knows gets a version, so every subscription is answered.
func buildSnapshot(res xds.Resources) (*cachev3.Snapshot, map[string]string, error) {
	return buildSnapshotCached(res, nil, nil)
}

// buildSnapshotCached is buildSnapshot with cache (nil: none) and the
// generator's shared resources.
func buildSnapshotCached(res xds.Resources, cache *resCache, shared func(types.Resource) bool) (*cachev3.Snapshot, map[string]string, error) {
	snap, versions, _, err := buildSnapshotSized(res, cache, shared, true)
	return snap, versions, err
}

// buildSnapshotSized is buildSnapshotCached that also returns, by type URL,
// the size of the largest responses the snapshot makes (responseSizes).
//
// keepLists false builds a list the cache does not hold without keeping
// it there (resCache.newList).
func buildSnapshotSized(res xds.Resources, cache *resCache, shared func(types.Resource) bool, keepLists bool) (*cachev3.Snapshot, map[string]string, map[string]responseSize, error) {
	for url := range res {
		if cachev3.GetResponseType(url) == types.UnknownType {
			return nil, nil, nil, fmt.Errorf("xds: unknown resource type %q", url)
		}
	}
	snap := &cachev3.Snapshot{VersionMap: make(map[string]map[string]string, types.UnknownType)}
	versions := make(map[string]string, types.UnknownType)
	sizes := make(map[string]responseSize, types.UnknownType)
	var lists [types.UnknownType]*typeEntry
	for i := range types.UnknownType {
		url, err := cachev3.GetResponseTypeURL(i)
		if err != nil {
			return nil, nil, nil, err
		}
		items := res[url]
		entries := cache.entries(url, items, shared)
		te, key := cache.knownList(url, entries)
		if te == nil {
			if err := validate(url, items, entries); err != nil {
				return nil, nil, nil, err
			}
			if !keepLists {
				key = nil
			}
			if te, err = cache.newList(url, key, items, entries); err != nil {
				return nil, nil, nil, fmt.Errorf("xds: %s: %w", typeName(url), err)
			}
		}
		snap.Resources[i] = te.res
		snap.VersionMap[url] = te.versionMap
		versions[url] = te.res.Version
		sizes[url] = te.size
		lists[i] = te
	}
	if err := cache.consistent(snap, &lists, keepLists); err != nil {
		return nil, nil, nil, fmt.Errorf("xds: inconsistent snapshot: %w", err)
	}
	return snap, versions, sizes, nil
}

type validatorAll interface{ ValidateAll() error }

// resEntry is what a snapshot needs of one resource: its name, validation,
// deterministic encoding, go-control-plane's version of it (the SHA-256 of
// that encoding, as cachev3.HashResource) and what it references. Written
// before it is shared, read-only after.
type resEntry struct {
	id       uint64 // interned (nonzero): equal ids, equal content
	name     string
	enc      []byte
	encErr   error
	version  string
	validate bool  // has a ValidateAll method
	invalid  error // what ValidateAll said
	refs     []string
}

func (e *resEntry) fillEncoding(r types.Resource) {
	e.name = cachev3.GetResourceName(r)
	if e.enc, e.encErr = (proto.MarshalOptions{Deterministic: true}).Marshal(r); e.encErr == nil {
		e.version = cachev3.HashResource(e.enc)
	}
}

// fillRest fills what only depends on the content, like the encoding.
func (e *resEntry) fillRest(r types.Resource) {
	v, ok := r.(validatorAll)
	if e.validate = ok; ok {
		e.invalid = v.ValidateAll()
	}
	e.refs = references(r)
}

// typeEntry is the part of a snapshot for one type and list of resources.
// Read-only once built: its maps are shared by many nodes' snapshots.
type typeEntry struct {
	res        cachev3.Resources // Version is the content version
	versionMap map[string]string
	refs       map[string]struct{} // what the resources reference
	names      []string
	size       responseSize
}

func newTypeEntry(url string, items []types.Resource, entries []*resEntry) (*typeEntry, error) {
	v, err := hashEntries(entries)
	if err != nil {
		return nil, err
	}
	te := &typeEntry{
		res:        cachev3.NewResources(v, items),
		versionMap: make(map[string]string, len(entries)),
		refs:       map[string]struct{}{},
		names:      make([]string, len(entries)),
		size:       responseSizes(url, v, entries),
	}
	for i, e := range entries {
		te.versionMap[e.name] = e.version
		te.names[i] = e.name
		for _, r := range e.refs {
			te.refs[r] = struct{}{}
		}
	}
	return te, nil
}

// Response sizes.
//
// A sidecar receives no xDS message larger than names.MaxXDSMessageSize,
// so the Server must never send one (Server.generate withholds a snapshot
// that could need one). What go-control-plane sends is known from the
// snapshot: a SotW response is DiscoveryResponse{version_info, resources
// (each an Any of the request's type URL and the resource's deterministic
// encoding), type_url, nonce}, a delta response DeltaDiscoveryResponse{
// system_version_info, resources (each Resource{name, version, that Any}),
// type_url, nonce, removed_resources}. The nonce is a stream's counter in
// base 10, at most maxNonce. A wildcard subscription gets every resource
// of the type (a stream subscribed to fewer names gets less), and a delta
// response only those that changed, so the sizes with every resource are
// upper bounds; only removed_resources depends on what the stream holds
// (Server.generate adds it).

// maxNonce is the longest nonce go-control-plane gives a response.
const maxNonce = "9223372036854775807"

// responseSize is the encoded size, in bytes, of the largest SotW and delta
// responses of one type, removed_resources not counted.
type responseSize struct{ sotw, delta int }

// responseSizes sizes the responses of a type's entries at version. It
// adds up each resource's share of the message (field tag, length and
// content) with proto.Size of a one-resource message, so nothing is
// allocated per resource and the field layout is the generated code's.
func responseSizes(url, version string, entries []*resEntry) responseSize {
	a := &anypb.Any{TypeUrl: url}
	sotwOne := &discovery.DiscoveryResponse{Resources: []*anypb.Any{a}}
	res := &discovery.Resource{Resource: a}
	deltaOne := &discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{res}}
	size := responseSize{
		sotw:  proto.Size(&discovery.DiscoveryResponse{VersionInfo: version, TypeUrl: url, Nonce: maxNonce}),
		delta: proto.Size(&discovery.DeltaDiscoveryResponse{SystemVersionInfo: version, TypeUrl: url, Nonce: maxNonce}),
	}
	for _, e := range entries {
		a.Value = e.enc
		res.Name, res.Version = e.name, e.version
		size.sotw += proto.Size(sotwOne)
		size.delta += proto.Size(deltaOne)
	}
	return size
}

// removedSize is the share of removed_resources in a delta response that
// removes names.
func removedSize(names []string) int {
	if len(names) == 0 {
		return 0
	}
	return proto.Size(&discovery.DeltaDiscoveryResponse{RemovedResources: names})
}

// resCache keeps entries by shared resource pointer and by content, type
// entries by list of interned entries, and consistency verdicts. What a
// whole round did not use is dropped: rotate starts a round.
type resCache struct {
	mu        sync.Mutex
	nextID    uint64
	cur, prev *cacheGen
}

type cacheGen struct {
	byPtr      map[types.Resource]*resEntry
	byContent  map[string]*resEntry
	byList     map[string]*typeEntry
	consistent map[[2]*typeEntry]bool
}

func newCacheGen() *cacheGen {
	return &cacheGen{byPtr: map[types.Resource]*resEntry{}, byContent: map[string]*resEntry{},
		byList: map[string]*typeEntry{}, consistent: map[[2]*typeEntry]bool{}}
}

func newResCache() *resCache { return &resCache{cur: newCacheGen(), prev: newCacheGen()} }

func (c *resCache) rotate() {
	c.mu.Lock()
	c.prev, c.cur = c.cur, newCacheGen()
	c.mu.Unlock()
}

// lookup finds k in cur, or in prev (then keeps it for this round too).
func lookup[K comparable, V any](cur, prev map[K]V, k K) (V, bool) {
	if v, ok := cur[k]; ok {
		return v, true
	}
	v, ok := prev[k]
	if ok {
		cur[k] = v
	}
	return v, ok
}

// entries returns the entries of items (nil for a nil item or one of
// another type than url): shared ones from the cache, all interned.
func (c *resCache) entries(url string, items []types.Resource, shared func(types.Resource) bool) []*resEntry {
	entries := make([]*resEntry, len(items))
	if c != nil {
		// Shared resources known by pointer, under one lock.
		c.mu.Lock()
		for i, r := range items {
			if r != nil {
				entries[i], _ = lookup(c.cur.byPtr, c.prev.byPtr, r)
			}
		}
		c.mu.Unlock()
	}
	for i, r := range items {
		if entries[i] == nil && r != nil && isType(r, url) {
			entries[i] = c.entry(url, r, shared)
		}
	}
	return entries
}

// isType says whether r is a message of type url.
func isType(r types.Resource, url string) bool {
	name, ok := strings.CutPrefix(url, resource.APITypePrefix)
	return ok && name == string(proto.MessageName(r))
}

// entry computes r's entry, interned by content (and cached by pointer
// when r is shared).
func (c *resCache) entry(url string, r types.Resource, shared func(types.Resource) bool) *resEntry {
	e := &resEntry{}
	e.fillEncoding(r)
	if c == nil || e.encErr != nil {
		e.fillRest(r)
		return e // not interned: hashing fails on it
	}
	key := url + "\x00" + e.name + "\x00" + string(e.enc)
	c.mu.Lock()
	canon, ok := lookup(c.cur.byContent, c.prev.byContent, key)
	c.mu.Unlock()
	if !ok {
		e.fillRest(r)
		c.mu.Lock()
		if canon, ok = lookup(c.cur.byContent, c.prev.byContent, key); !ok {
			c.nextID++
			e.id, canon = c.nextID, e
			c.cur.byContent[key] = e
		}
		c.mu.Unlock()
	}
	if shared != nil && shared(r) {
		c.mu.Lock()
		c.cur.byPtr[r] = canon
		c.mu.Unlock()
	}
	return canon
}

// knownList returns the type entry of a list of entries already
// validated, if any, and the list's key (nil: not cacheable).
func (c *resCache) knownList(url string, entries []*resEntry) (*typeEntry, []byte) {
	if c == nil {
		return nil, nil
	}
	key := make([]byte, 0, len(url)+8*len(entries))
	key = append(key, url...)
	for _, e := range entries {
		if e == nil || e.id == 0 {
			return nil, nil
		}
		key = binary.LittleEndian.AppendUint64(key, e.id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if te, ok := c.cur.byList[string(key)]; ok { // no string allocated
		return te, key
	}
	te, ok := c.prev.byList[string(key)]
	if ok {
		c.cur.byList[string(key)] = te
	}
	return te, key
}

// newList builds the type entry of validated items and caches it under
// key (if any).
func (c *resCache) newList(url string, key []byte, items []types.Resource, entries []*resEntry) (*typeEntry, error) {
	te, err := newTypeEntry(url, items, entries)
	if err != nil || c == nil || key == nil {
		return te, err
	}
	c.mu.Lock()
	c.cur.byList[string(key)] = te
	c.mu.Unlock()
	return te, nil
}

// validate checks that every item is a named, valid message of type url,
// and that names are unique (the snapshot would silently keep one).
// entries are the items' (see resCache.entries).
func validate(url string, items []types.Resource, entries []*resEntry) error {
	seen := make(map[string]bool, len(items))
	for i, r := range items {
		if r == nil {
			return fmt.Errorf("xds: %s #%d is nil", typeName(url), i)
		}
		if !isType(r, url) {
			return fmt.Errorf("xds: %s #%d is a %s", typeName(url), i, resource.APITypePrefix+string(proto.MessageName(r)))
		}
		e := entries[i]
		name := e.name
		if name == "" {
			return fmt.Errorf("xds: %s #%d has no name", typeName(url), i)
		}
		if seen[name] {
			return fmt.Errorf("xds: %s %q appears twice", typeName(url), name)
		}
		seen[name] = true
		if !e.validate {
			return fmt.Errorf("xds: %s %q has no ValidateAll method", typeName(url), name)
		}
		if e.invalid != nil {
			return fmt.Errorf("xds: %s %q is invalid: %w", typeName(url), name, e.invalid)
		}
	}
	return nil
}

// hashResources is a content version: SHA-256 over the names and
// deterministic encodings of items in name order, 16 hex digits.
func hashResources(items []types.Resource) (string, error) {
	entries := make([]*resEntry, len(items))
	for i, r := range items {
		entries[i] = &resEntry{}
		entries[i].fillEncoding(r)
	}
	return hashEntries(entries)
}

// hashEntries is hashResources of the entries' resources.
func hashEntries(entries []*resEntry) (string, error) {
	sorted := slices.SortedFunc(slices.Values(entries), func(a, b *resEntry) int {
		return strings.Compare(a.name, b.name)
	})
	h := sha256.New()
	var hdr []byte
	for _, e := range sorted {
		if e.encErr != nil {
			return "", fmt.Errorf("marshal %q: %w", e.name, e.encErr)
		}
		// As fmt.Fprintf(h, "%d:%s%d:", len(name), name, len(enc)).
		hdr = strconv.AppendInt(hdr[:0], int64(len(e.name)), 10)
		hdr = append(hdr, ':')
		hdr = append(hdr, e.name...)
		hdr = strconv.AppendInt(hdr, int64(len(e.enc)), 10)
		hdr = append(hdr, ':')
		h.Write(hdr)
		h.Write(e.enc)
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}

// references are the names of the resources r references as
// go-control-plane's Snapshot.Consistent sees them: a Cluster its EDS
// ClusterLoadAssignment, a Listener the RDS route configurations of its
// HTTP connection managers (filters of any other type are skipped without
// decoding them, which is what Consistent's failed decoding amounts to).
func references(r types.Resource) []string {
	switch v := r.(type) {
	case *clusterv3.Cluster:
		if t, ok := v.GetClusterDiscoveryType().(*clusterv3.Cluster_Type); ok && t.Type == clusterv3.Cluster_EDS {
			if n := v.GetEdsClusterConfig().GetServiceName(); n != "" {
				return []string{n}
			}
			return []string{v.GetName()}
		}
	case *listenerv3.Listener:
		var refs []string
		chain := func(c *listenerv3.FilterChain) {
			for _, f := range c.GetFilters() {
				if !f.GetTypedConfig().MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
					continue
				}
				config := resource.GetHTTPConnectionManager(f)
				if config == nil {
					continue
				}
				if name := config.GetRds().GetRouteConfigName(); name != "" {
					refs = append(refs, name)
				}
				for _, s := range config.GetScopedRoutes().GetScopedRouteConfigurationsList().GetScopedRouteConfigurations() {
					refs = append(refs, s.GetRouteConfigurationName())
				}
			}
		}
		for _, c := range v.GetFilterChains() {
			chain(c)
		}
		if c := v.GetDefaultFilterChain(); c != nil {
			chain(c)
		}
		return refs
	}
	return nil
}

// consistent is snap.Consistent (every EDS resource and route
// configuration referenced, nothing else) from the lists' references;
// go-control-plane only words an inconsistency, and checks snapshots with
// scoped routes, which also reference route configurations.
func (c *resCache) consistent(snap *cachev3.Snapshot, lists *[types.UnknownType]*typeEntry, keep bool) error {
	if len(lists[types.ScopedRoute].names) > 0 ||
		!c.referencedExactly(lists[types.Cluster], lists[types.Endpoint], keep) ||
		!c.referencedExactly(lists[types.Listener], lists[types.Route], keep) {
		return snap.Consistent()
	}
	return nil
}

// referencedExactly says whether from references exactly the names of to
// (which are unique).
// keep false does not keep a new verdict in the cache.
func (c *resCache) referencedExactly(from, to *typeEntry, keep bool) bool {
	check := func() bool {
		if len(from.refs) != len(to.names) {
			return false
		}
		for _, n := range to.names {
			if _, ok := from.refs[n]; !ok {
				return false
			}
		}
		return true
	}
	if c == nil {
		return check()
	}
	k := [2]*typeEntry{from, to}
	c.mu.Lock()
	ok, found := lookup(c.cur.consistent, c.prev.consistent, k)
	c.mu.Unlock()
	if !found {
		ok = check()
		if keep {
			c.mu.Lock()
			c.cur.consistent[k] = ok
			c.mu.Unlock()
		}
	}
	return ok
}
