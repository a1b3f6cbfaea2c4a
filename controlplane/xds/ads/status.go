package ads

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/weftmesh/weft/api/admin"
)

// The status types are api/admin's: /debug/status serves them and weftctl
// reads them.
type (
	State      = admin.State
	NodeStatus = admin.NodeStatus
	TypeStatus = admin.TypeStatus
	NACK       = admin.NACK
	Withheld   = admin.Withheld
)

// States of a sidecar's resource type.
const (
	StateSynced = admin.StateSynced
	StateStale  = admin.StateStale
	StateNacked = admin.StateNacked
)

// maxNACKMessage bounds what a sidecar's error_detail may occupy in memory.
const maxNACKMessage = 4096

// typeState is the ACK/NACK bookkeeping of one node and type; guarded by
// Server.mu.
type typeState struct {
	sent    string
	sentAt  time.Time
	acked   string
	ackedAt time.Time
	nacks   int
	nack    *NACK
	// withheld: the newest snapshot's response of this type is over the
	// message limit, so that snapshot is not published (nil: none).
	withheld *Withheld
	// named: the node's delta stream subscribes to resources of this type
	// by name (set by the first request of the type on each stream).
	named bool
}

func (t *typeState) state(want string) State {
	switch {
	case t.acked != "" && t.acked == want:
		return StateSynced
	case t.nack != nil && t.nack.Version == t.sent && t.acked != t.sent:
		return StateNacked
	default:
		return StateStale
	}
}

// Status reports every connected sidecar, sorted by node ID. It is safe to
// call at any time and returns copies.
func (s *Server) Status() []NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NodeStatus, 0, len(s.nodes))
	for _, n := range s.nodes {
		ns := NodeStatus{
			Node: n.id, Pod: n.node.Name, Namespace: n.node.Namespace, SPIFFEID: n.node.ID.String(),
			Streams: n.streams, Connected: n.connected, Generated: n.generated, GenerateError: n.genErr,
			Types: make([]TypeStatus, 0, len(n.types)),
		}
		for url, t := range n.types {
			want := n.versions[url]
			if url == resource.EndpointType || t.named {
				// Endpoints are served by the endpoint cache (eds.go),
				// which answers every subscribed change at once; a type
				// subscribed by name (an on-demand sidecar's clusters) is
				// sent only what changed of the names it asked for, so a
				// new version of the type need not reach it. Either way
				// what the sidecar should run is the last response it
				// was sent.
				want = t.sent
			}
			ts := TypeStatus{
				Type: typeName(url), TypeURL: url, State: t.state(want), Version: want,
				Sent: t.sent, SentAt: t.sentAt, Acked: t.acked, AckedAt: t.ackedAt, NACKs: t.nacks,
			}
			if t.nack != nil {
				c := *t.nack
				ts.LastNACK = &c
			}
			if t.withheld != nil {
				w := *t.withheld
				ts.Withheld = &w
			}
			ns.Types = append(ns.Types, ts)
		}
		slices.SortFunc(ns.Types, func(a, b TypeStatus) int {
			return cmp.Or(cmp.Compare(cachev3.GetResponseType(a.TypeURL), cachev3.GetResponseType(b.TypeURL)),
				strings.Compare(a.TypeURL, b.TypeURL))
		})
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// track records what a request says about the last response of its type on
// its stream: an ACK, a NACK, or (first request of a resumed SotW stream)
// the version the sidecar already runs. Stale nonces are ignored, as the
// server ignores them. Called with s.mu held.
func (s *Server) track(st *stream, typeURL, nonce, version string, detail *statuspb.Status) {
	n := st.node
	t := n.typeState(typeURL)
	last := st.sent[typeURL]
	now := s.clock.Now()
	switch {
	case nonce == "":
		// The first request of a resumed stream: SotW says the version it
		// runs; for delta, request says it when the stream holds all of
		// the published version (deltaResume).
		if version != "" {
			t.acked, t.ackedAt = version, now
		}
	case nonce != last.nonce:
		s.log.Debug("request with a stale nonce ignored", "node", n.id, "type", typeName(typeURL), "nonce", nonce, "want", last.nonce)
	case detail != nil:
		msg := detail.GetMessage()
		if len(msg) > maxNACKMessage {
			msg = msg[:maxNACKMessage] + "...(truncated)"
		}
		t.nacks++
		t.nack = &NACK{Version: last.version, Message: msg, Time: now}
		s.metrics.nacks.WithLabelValues(typeName(typeURL)).Inc()
		s.log.Warn("sidecar rejected configuration (NACK)", "node", n.id, "type", typeName(typeURL),
			"version", last.version, "acked", t.acked, "err", msg)
	default:
		t.acked, t.ackedAt = last.version, now
	}
}

// sent records a response about to go out on st. Called with s.mu held.
func (s *Server) sentResponse(st *stream, typeURL, nonce, version string) {
	st.sent[typeURL] = sent{nonce: nonce, version: version}
	t := st.node.typeState(typeURL)
	t.sent, t.sentAt = version, s.clock.Now()
	s.metrics.pushes.WithLabelValues(typeName(typeURL)).Inc()
}

// typeNames are the metric label values and the short names in Status.
// Anything else a client asks for is "other": a label must not take values
// a client chooses.
var typeNames = map[string]string{
	resource.ClusterType:         "cluster",
	resource.EndpointType:        "endpoint",
	resource.ListenerType:        "listener",
	resource.RouteType:           "route",
	resource.ScopedRouteType:     "scoped_route",
	resource.VirtualHostType:     "virtual_host",
	resource.SecretType:          "secret",
	resource.RuntimeType:         "runtime",
	resource.ExtensionConfigType: "extension_config",
	resource.RateLimitConfigType: "rate_limit_config",
}

func typeName(url string) string {
	if n, ok := typeNames[url]; ok {
		return n
	}
	return "other"
}

// metrics are the server's Prometheus collectors.
type metrics struct {
	connected      prometheus.Gauge
	pushes         *prometheus.CounterVec
	nacks          *prometheus.CounterVec
	generateErrors prometheus.Counter
	oversized      *prometheus.CounterVec
	refused        *prometheus.CounterVec
	rounds         prometheus.Histogram
	lookupWaits    prometheus.Counter
	lookupSeconds  prometheus.Counter
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_xds_connected_sidecars", Help: "Sidecars (distinct node IDs) with at least one authorized ADS stream.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_xds_pushes_total", Help: "xDS responses sent to sidecars, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_xds_nacks_total", Help: "xDS responses rejected by sidecars, by resource type (per-sidecar detail: /debug/status).",
		}, []string{"type"}),
		generateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_xds_generate_errors_total", Help: "Snapshots not published because generation or validation failed.",
		}),
		oversized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_xds_oversized_responses_total",
			Help: "xDS responses not sent because they would exceed the xDS message limit (what sidecars receive), by resource type; the sidecar keeps its last configuration (per-sidecar detail: /debug/status).",
		}, []string{"type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_xds_refused_streams_total", Help: "ADS streams refused, by gRPC status code.",
		}, []string{"code"}),
		rounds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_xds_regenerate_duration_seconds", Help: "Time to regenerate and publish the snapshots of every connected sidecar after a change.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		lookupWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_xds_lookup_waits_total",
			Help: "Lookups (a sidecar subscribing to a destination listener) that waited because their sidecar had spent its lookup budget (ads.Config.LookupBudget) regenerating.",
		}),
		lookupSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_xds_lookup_seconds_total",
			Help: "Time charged to the lookup budgets of sidecars that look destinations up: regenerations for their lookups, the watches their requests open, their streams' first generations.",
		}),
	}
	if r == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connected, m.pushes, m.nacks, m.generateErrors, m.oversized, m.refused, m.rounds, m.lookupWaits, m.lookupSeconds} {
		if err := r.Register(c); err != nil {
			return nil, fmt.Errorf("xds: register metrics: %w", err)
		}
	}
	return m, nil
}
