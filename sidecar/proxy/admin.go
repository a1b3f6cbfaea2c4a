package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sort"
	"time"

	"github.com/weftmesh/weft/api/admin"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// adminHandler serves 127.0.0.1:15000:
//
//	/connections   admin.Connections
//	/config_dump   the current model.Config, with versions and the trust bundle's roots
//	/debug/pprof/  Go's profiles (heap, goroutine, CPU...) of the sidecar, what
//	               Envoy's /memory and /heap_dump are for; loopback only, as is
//	               everything here
func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+admin.ConnectionsPath, func(w http.ResponseWriter, _ *http.Request) {
		conns := p.reg.snapshot()
		if conns == nil {
			conns = []ConnInfo{}
		}
		writeJSON(w, admin.Connections{Connections: conns})
	})
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, dumpConfig(p.cfg.Config()))
	})
	if p.cfg.Pprof {
		// Only when asked for (weft.dev/pprof): the app shares the admin
		// port's loopback, and a CPU profile or trace costs the sidecar.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// configDump is /config_dump: model.Config with enums spelled out.
type configDump struct {
	Versions map[string]string `json:"versions"`
	// OnDemand: in-mesh Services' clusters and endpoints are held once a
	// connection asked for them (model.Config.OnDemand).
	OnDemand bool `json:"onDemand"`
	// LookUp: destinations are looked up, their listeners held once a
	// connection went to them (model.Config.LookUp).
	LookUp   bool            `json:"lookUp"`
	Inbound  *model.Listener `json:"inbound"`
	Outbound *model.Listener `json:"outbound"`
	// Destinations: the destinations' listeners, in address order
	// (model.Config.Destinations).
	Destinations []*model.Listener             `json:"destinations,omitempty"`
	Clusters     []clusterDump                 `json:"clusters"`
	Endpoints    map[string][]endpointDump     `json:"endpoints"`
	Routes       map[string]*model.RouteConfig `json:"routes"`
	Bundle       []rootDump                    `json:"trustBundle"`
}

type clusterDump struct {
	*model.Cluster
	Kind           string `json:"Kind"`
	LB             string `json:"LB"`
	ConnectTimeout string `json:"ConnectTimeout"`
}

type endpointDump struct {
	Addr   string `json:"address"`
	Health string `json:"health"`
}

type rootDump struct {
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
}

func dumpConfig(c *model.Config) any {
	if c == nil {
		return map[string]any{"config": nil, "note": "no complete xDS configuration yet"}
	}
	d := configDump{Versions: c.Version, OnDemand: c.OnDemand, LookUp: c.LookUp, Inbound: c.Inbound, Outbound: c.Outbound,
		Endpoints: map[string][]endpointDump{}, Routes: c.Routes}
	for _, l := range c.Listeners() {
		if l != c.Inbound && l != c.Outbound {
			d.Destinations = append(d.Destinations, l)
		}
	}
	for _, cl := range c.Clusters {
		d.Clusters = append(d.Clusters, clusterDump{Cluster: cl, Kind: cl.Kind.String(), LB: cl.LB.String(),
			ConnectTimeout: cl.ConnectTimeout.String()})
	}
	sort.Slice(d.Clusters, func(i, j int) bool { return d.Clusters[i].Name < d.Clusters[j].Name })
	for name, eps := range c.Endpoints {
		out := make([]endpointDump, 0, len(eps))
		for _, e := range eps {
			out = append(out, endpointDump{Addr: e.Addr.String(), Health: e.Health.String()})
		}
		d.Endpoints[name] = out
	}
	if c.TrustBundle != nil {
		for _, r := range c.TrustBundle.X509Authorities() {
			d.Bundle = append(d.Bundle, rootDump{Subject: r.Subject.String(), NotAfter: r.NotAfter.UTC()})
		}
	}
	return d
}
