package audit

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	apiaudit "github.com/weftmesh/weft/api/audit"
)

// Query limits of GET /audit/events.
const (
	DefaultLimit = 1000
	MaxLimit     = apiaudit.MaxLimit
	// MaxSummaryRows bounds a summary: an app that reaches tens of
	// thousands of distinct names would otherwise grow every reader's
	// answer past what it reads (weftctl: 8 MiB). The busiest rows are
	// kept and the answer says it was truncated.
	MaxSummaryRows = 5000
)

// Handler serves, on the control plane's admin port behind its guard
// (HTTPS and RBAC, controlplane/adminauth; what weftctl reads), the JSON
// of api/audit's EventsResponse, SummaryResponse and StoreResponse:
//
//	GET /audit/events?since=&until=&namespace=&workload=&destination=&decision=&limit=
//	GET /audit/summary?since=&until=&namespace=&workload=&destination=&decision=&by=
//	GET /audit/store
//
// since and until are RFC 3339 times or durations back from now ("24h");
// limit defaults to 1000, at most 10000; by is destination (the default)
// or workload (a summary per source SPIFFE ID and destination).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+apiaudit.EventsPath, s.serveEvents)
	mux.HandleFunc("GET "+apiaudit.SummaryPath, s.serveSummary)
	mux.HandleFunc("GET "+apiaudit.StorePath, s.serveStore)
	return mux
}

func (s *Service) serveStore(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, apiaudit.StoreResponse{Events: s.store.Len(), Capacity: s.store.Cap(), Retention: s.store.cfg.Retention / time.Second, Path: s.store.cfg.Path})
}

func (s *Service) serveEvents(w http.ResponseWriter, r *http.Request) {
	q, err := s.parseQuery(r, true)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	limit := q.Limit
	q.Limit++ // one more says whether there is more
	events, err := s.store.Query(q)
	if err != nil {
		s.log.Error("query failed", "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp := apiaudit.EventsResponse{Events: events, Truncated: len(events) > limit}
	if resp.Truncated {
		resp.Events = events[:limit]
	}
	if resp.Events == nil {
		resp.Events = []apiaudit.Event{}
	}
	writeJSON(w, resp)
}

func (s *Service) serveSummary(w http.ResponseWriter, r *http.Request) {
	q, err := s.parseQuery(r, false)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sum, err := s.store.Summary(q)
	if err != nil {
		s.log.Error("summary failed", "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp := apiaudit.SummaryResponse{Since: q.Since, Until: q.Until, Destinations: sum}
	if len(sum) > s.maxSummaryRows() {
		resp.Destinations, resp.Truncated = sum[:s.maxSummaryRows()], true // most connections first
	}
	writeJSON(w, resp)
}

func (s *Service) maxSummaryRows() int {
	if s.cfg.MaxSummaryRows > 0 {
		return s.cfg.MaxSummaryRows
	}
	return MaxSummaryRows
}

func (s *Service) parseQuery(r *http.Request, withLimit bool) (Query, error) {
	v := r.URL.Query()
	q := Query{Namespace: v.Get("namespace"), Workload: v.Get("workload"), Destination: v.Get("destination"),
		Decision: v.Get("decision")}
	var err error
	now := s.cfg.Clock.Now()
	if q.Since, err = parseTime(v.Get("since"), now); err != nil {
		return q, fmt.Errorf("audit: since: %w", err)
	}
	if q.Until, err = parseTime(v.Get("until"), now); err != nil {
		return q, fmt.Errorf("audit: until: %w", err)
	}
	switch q.Decision {
	case "", "allow", "deny", "audit":
	default:
		return q, fmt.Errorf("audit: decision %q is not allow, deny or audit", q.Decision)
	}
	if !withLimit {
		if v.Has("limit") {
			return q, fmt.Errorf("audit: limit applies to /audit/events only")
		}
		if len(v["by"]) > 1 {
			return q, fmt.Errorf("audit: by given %d times", len(v["by"]))
		}
		switch by := v.Get("by"); by {
		case "", "destination":
		case "workload":
			q.ByWorkload = true
		default:
			return q, fmt.Errorf("audit: by %q is not destination or workload", by)
		}
		return q, nil
	}
	if v.Has("by") {
		return q, fmt.Errorf("audit: by applies to /audit/summary only")
	}
	q.Limit = DefaultLimit
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 || n > MaxLimit {
			return q, fmt.Errorf("audit: limit %q is not a number from 1 to %d", l, MaxLimit)
		}
		q.Limit = n
	}
	return q, nil
}

// parseTime reads an RFC 3339 time or a duration back from now.
func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && !strings.HasPrefix(s, "-") {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 24h", s)
	}
	return t, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
