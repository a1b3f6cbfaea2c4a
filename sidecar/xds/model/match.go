package model

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// Match returns the filter chain for a connection to dst, with the
// transport protocol ("tls" or "raw_buffer"), TLS SNI and application
// protocols (ALPN, or "http/1.1"/"h2c" from HTTP inspection) found by the
// listener filters; nil when nothing matches and there is no default chain.
//
// The precedence is Envoy's: destination port, then the longest destination
// prefix, then server name (exact, then the longest wildcard suffix), then
// transport protocol, then application protocols. At each step chains that
// name a value beat chains that leave it empty, and the search never goes
// back: when the most specific chains of a step fail a later step, the
// connection gets the default chain, not a less specific one.
func (l *Listener) Match(dst netip.AddrPort, transportProto, sni string, appProtos []string) *FilterChain {
	c := l.Candidates(dst)
	c = narrow(c, func(fc *FilterChain) int { return matchServerName(fc.Match.ServerNames, strings.ToLower(sni)) })
	c = narrow(c, func(fc *FilterChain) int { return matchExact(fc.Match.TransportProtocol, transportProto) })
	c = narrow(c, func(fc *FilterChain) int { return matchAppProtos(fc.Match.AppProtocols, appProtos) })
	if len(c) == 0 {
		return l.Default
	}
	return c[0] // Build refuses listeners where two chains could both remain
}

// Candidates returns the chains that the first two steps of [Listener.Match]
// (destination_port, then prefix_ranges) leave for a connection to dst:
// those among which its server name, transport and application protocols
// then choose. None left means the default chain.
func (l *Listener) Candidates(dst netip.AddrPort) []*FilterChain {
	c := narrow(l.Chains, func(fc *FilterChain) int { return matchPort(fc.Match.DestPort, dst.Port()) })
	return narrow(c, func(fc *FilterChain) int { return matchPrefix(fc.Match.Prefixes, dst.Addr().Unmap()) })
}

// narrow keeps the chains with the highest score; a negative score is no
// match.
func narrow(chains []*FilterChain, score func(*FilterChain) int) []*FilterChain {
	best, out := -1, []*FilterChain(nil)
	for _, fc := range chains {
		switch s := score(fc); {
		case s > best:
			best, out = s, append(out[:0:0], fc)
		case s == best && s >= 0:
			out = append(out, fc)
		}
	}
	return out
}

func matchPort(want, got uint16) int {
	switch want {
	case 0:
		return 0
	case got:
		return 1
	}
	return -1
}

// matchPrefix scores by the longest prefix containing ip; no prefixes is
// 0.0.0.0/0 and ::/0.
func matchPrefix(prefixes []netip.Prefix, ip netip.Addr) int {
	if len(prefixes) == 0 {
		return 0
	}
	best := -1
	for _, p := range prefixes {
		if p.Contains(ip) && p.Bits() > best {
			best = p.Bits()
		}
	}
	return best
}

// matchServerName: exact beats the longest wildcard, which beats none.
func matchServerName(names []string, sni string) int {
	if len(names) == 0 {
		return 0
	}
	if sni == "" {
		return -1
	}
	best := -1
	for _, n := range names {
		switch {
		case n == sni:
			return len(sni) + 2
		case strings.HasPrefix(n, "*.") && len(sni) > len(n)-1 && strings.HasSuffix(sni, n[1:]):
			best = max(best, len(n))
		}
	}
	return best
}

func matchExact(want, got string) int {
	switch want {
	case "":
		return 0
	case got:
		return 1
	}
	return -1
}

func matchAppProtos(want, got []string) int {
	if len(want) == 0 {
		return 0
	}
	for _, p := range got {
		if slices.Contains(want, p) {
			return 1
		}
	}
	return -1
}

// Match returns the virtual host for an HTTP Host (or :authority) as Envoy
// chooses it: an exact domain, then the longest "*.suffix" (or "*suffix")
// wildcard, then the longest "prefix*" wildcard, then "*"; nil if none.
// Comparison ignores case.
func (rc *RouteConfig) Match(host string) *VirtualHost {
	host = strings.ToLower(host)
	var best *VirtualHost
	bestRank, bestLen := 0, -1
	for _, vh := range rc.VirtualHosts {
		for _, d := range vh.Domains {
			d = strings.ToLower(d)
			rank := 0
			switch {
			case d == host:
				return vh
			case d == "*":
				rank = 1
			case strings.HasPrefix(d, "*") && len(host) > len(d)-1 && strings.HasSuffix(host, d[1:]):
				rank = 3
			case strings.HasSuffix(d, "*") && len(host) > len(d)-1 && strings.HasPrefix(host, d[:len(d)-1]):
				rank = 2
			default:
				continue
			}
			if rank > bestRank || rank == bestRank && len(d) > bestLen {
				best, bestRank, bestLen = vh, rank, len(d)
			}
		}
	}
	return best
}

// RequestHead is what a route matches of a request.
type RequestHead struct {
	Method string // the :method
	// Path is the :path as sent, its query included: the request-target
	// of HTTP/1.1 in origin form (an absolute-form target's path and
	// query), HTTP/2's :path.
	Path   string
	Header http.Header // the header fields (no pseudo-headers, no Host)
}

// Route returns the first of the virtual host's routes that matches req
// (Envoy's semantics: routes in order, the first match wins), or nil.
func (vh *VirtualHost) Route(req RequestHead) *Route {
	for _, r := range vh.Routes {
		if r.Match.Matches(req) {
			return r
		}
	}
	return nil
}

// Matches reports whether req matches: its path (a prefix of the :path,
// query included; the path without the query exactly, or exactly or
// followed by "/" for a path-separated prefix), every header matcher and
// every query parameter matcher.
func (m *RouteMatch) Matches(req RequestHead) bool {
	switch {
	case m.Path != "":
		if p, _, _ := strings.Cut(req.Path, "?"); p != m.Path {
			return false
		}
	case m.PathSeparatedPrefix != "":
		p, _, _ := strings.Cut(req.Path, "?")
		if rest, ok := strings.CutPrefix(p, m.PathSeparatedPrefix); !ok || rest != "" && rest[0] != '/' {
			return false
		}
	case !strings.HasPrefix(req.Path, m.Prefix):
		return false
	}
	for i := range m.Headers {
		if !m.Headers[i].Matches(req) {
			return false
		}
	}
	if len(m.Query) > 0 {
		_, query, _ := strings.Cut(req.Path, "?")
		for i := range m.Query {
			if !m.Query[i].Matches(query) {
				return false
			}
		}
	}
	return true
}

// Matches reports whether req's header fields match: the header's values
// joined by "," compared by Exact or Prefix, or its presence (Present),
// the result inverted by Invert; ":method" is the request's method. As in
// Envoy, an absent header matches only a presence matcher that asks for
// absence (Present with Invert): an Exact or Prefix matcher fails on it,
// inverted or not.
func (hm *HeaderMatch) Matches(req RequestHead) bool {
	var v string
	if hm.Name == MethodHeader {
		v = req.Method
	} else {
		vals := req.Header.Values(hm.Name)
		if len(vals) == 0 {
			return hm.Present && hm.Invert
		}
		v = strings.Join(vals, ",")
	}
	var ok bool
	switch {
	case hm.Present:
		ok = true
	case hm.Prefix != "":
		ok = strings.HasPrefix(v, hm.Prefix)
	default:
		ok = v == hm.Exact
	}
	return ok != hm.Invert
}

// MethodHeader is the pseudo-header a HeaderMatch may name: the request's
// method.
const MethodHeader = ":method"

// Matches reports whether a :path's query (what follows its first "?")
// matches qm.
func (qm *QueryMatch) Matches(query string) bool {
	v, ok := firstQueryValue(query, qm.Name)
	switch {
	case !ok:
		return false
	case qm.Present:
		return true
	case qm.Prefix != "":
		return strings.HasPrefix(v, qm.Prefix)
	}
	return v == qm.Exact
}

// firstQueryValue is the value of the first parameter called name in
// query, split as Envoy splits it (on "&", then at the first "="; no "=":
// the value is ""), nothing decoded.
func firstQueryValue(query, name string) (string, bool) {
	for query != "" {
		var param string
		param, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(param, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}
