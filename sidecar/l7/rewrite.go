package l7

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// What a route does to a request besides sending it on (Envoy's route
// fields the Gateway API's HTTPRoute and GRPCRoute filters translate
// into): header mutations of the request and of the response, a path and
// a host rewrite, or, instead of forwarding, a redirect answered by the
// client sidecar itself. Each is done as Envoy's router does it; what
// Envoy adds of its own (x-envoy-original-path, x-forwarded-host) is not
// added, as the mesh adds no header anywhere.

// HeaderAction is how a HeaderOption adds its value (Envoy's
// HeaderValueOption.append_action).
type HeaderAction uint8

const (
	// AppendOrAdd adds the value as one more field of the name
	// (APPEND_IF_EXISTS_OR_ADD; Gateway API's "add").
	AppendOrAdd HeaderAction = iota
	// AddIfAbsent adds it only when no field of the name is there
	// (ADD_IF_ABSENT).
	AddIfAbsent
	// OverwriteOrAdd replaces every field of the name with it
	// (OVERWRITE_IF_EXISTS_OR_ADD; Gateway API's "set").
	OverwriteOrAdd
	// OverwriteIfExists replaces the fields of the name, if there are
	// any (OVERWRITE_IF_EXISTS).
	OverwriteIfExists
)

// HeaderOption is one header field a route adds.
type HeaderOption struct {
	Name, Value string
	Action      HeaderAction
	// KeepEmpty adds an empty Value too; otherwise an empty Value adds
	// nothing (keep_empty_value).
	KeepEmpty bool
}

// HeaderMutation is how a route edits the header fields of its requests
// or of its responses: Remove, then Add.
type HeaderMutation struct {
	Remove []string
	Add    []HeaderOption
}

func (m *HeaderMutation) empty() bool { return len(m.Remove) == 0 && len(m.Add) == 0 }

// Apply edits h as Envoy's header parser does: the fields of Remove go
// first; then each option of Add is judged on the fields as Remove left
// them (is its name there?), the overwrites are done, and then the
// additions, in their order.
func (m *HeaderMutation) Apply(h http.Header) {
	for _, name := range m.Remove {
		h.Del(name)
	}
	if len(m.Add) == 0 {
		return
	}
	const (
		skip = iota
		overwrite
		add
	)
	var buf [8]uint8
	todo := buf[:0]
	for _, o := range m.Add {
		do := skip
		if o.Value != "" || o.KeepEmpty {
			has := len(h.Values(o.Name)) > 0
			switch o.Action {
			case AppendOrAdd:
				do = add
			case AddIfAbsent:
				if !has {
					do = add
				}
			case OverwriteIfExists:
				if has {
					do = overwrite
				}
			case OverwriteOrAdd:
				do = overwrite
			}
		}
		todo = append(todo, uint8(do))
	}
	for i, o := range m.Add {
		if todo[i] == overwrite {
			h.Set(o.Name, o.Value)
		}
	}
	for i, o := range m.Add {
		if todo[i] == add {
			h.Add(o.Name, o.Value)
		}
	}
}

// PathRewrite changes a request's path (route.prefix_rewrite or
// route.regex_rewrite; a redirect's prefix_rewrite): Prefix replaces
// Matched, the route's path match, at the start of the :path; or each
// match of Regex in the path without its query is replaced by
// Substitution, in RE2's syntax (\0 to \9 are the groups, \\ is a
// backslash). The query is kept either way.
type PathRewrite struct {
	Matched      string
	Prefix       string
	Regex        *regexp.Regexp
	Substitution string
}

// apply returns target, a :path, rewritten; false when nothing is
// rewritten (a regex rewrite that leaves an empty path, as in Envoy, or a
// target the prefix does not start, which a route's match rules out).
func (p *PathRewrite) apply(target string) (string, bool) {
	if p.Regex == nil {
		rest, ok := strings.CutPrefix(target, p.Matched)
		if !ok {
			return target, false
		}
		return p.Prefix + rest, true
	}
	end := strings.IndexAny(target, "?#")
	if end < 0 {
		end = len(target)
	}
	path := replaceRE2(p.Regex, target[:end], p.Substitution)
	if path == "" {
		return target, false
	}
	return path + target[end:], true
}

// replaceRE2 is RE2's GlobalReplace: every non-overlapping match of re in
// s (an empty match right after a match does not count) replaced by sub,
// whose \0 to \9 are the match's groups and \\ is a backslash.
func replaceRE2(re *regexp.Regexp, s, sub string) string {
	matches := re.FindAllStringSubmatchIndex(s, -1)
	if matches == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range matches {
		b.WriteString(s[last:m[0]])
		for i := 0; i < len(sub); i++ {
			c := sub[i]
			if c != '\\' || i+1 == len(sub) {
				b.WriteByte(c)
				continue
			}
			i++
			if d := sub[i]; d >= '0' && d <= '9' {
				if n := int(d - '0'); 2*n+1 < len(m) && m[2*n] >= 0 {
					b.WriteString(s[m[2*n]:m[2*n+1]])
				}
				continue
			}
			b.WriteByte(sub[i])
		}
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// Target is r's :path as the app sent it, query included: the
// request-target in origin form (HTTP/2's :path), or an absolute-form
// target's path and query. Routes match it and rewrites change it.
func Target(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// setTarget makes target (a :path) r's request-target.
func setTarget(r *http.Request, target string) {
	u := *r.URL
	path, query, hasQuery := strings.Cut(target, "?")
	u.RawQuery, u.ForceQuery = query, hasQuery && query == ""
	u.Fragment, u.RawFragment, u.Opaque = "", "", ""
	if p, err := url.PathUnescape(path); err == nil {
		u.Path, u.RawPath = p, path
	} else if !strings.HasPrefix(path, "//") {
		u.Opaque = path // an escape a regex cut in two: sent as it is
	} else {
		u.Path, u.RawPath = path, ""
	}
	r.URL = &u
	r.RequestURI = target
}

// forwarded is an upgrade request r as the route sends it on: its Host
// and its path rewritten and its header fields edited; r itself when the
// route changes nothing. r is not modified. Its head otherwise goes on as
// the app wrote it; when the route edits header fields, the fields the
// app's Connection names (other than Upgrade) are removed first and
// Connection is "Upgrade", as on the proxied path (Envoy's order), so
// that the app cannot name a field the route sets to have it dropped
// further on, nor keep its own against an add-if-absent.
func (rt *Route) forwarded(r *http.Request) *http.Request {
	out := rt.rewritten(r)
	if rt.RequestHeaders.empty() {
		return out
	}
	if out == r {
		out = r.WithContext(r.Context())
	}
	out.Header = r.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	dropConnectionFields(out.Header, "Upgrade")
	out.Header.Set("Connection", "Upgrade")
	rt.RequestHeaders.Apply(out.Header)
	return out
}

// rewritten is r with the route's Host and path rewrites; r itself when
// the route rewrites neither. r is not modified. The route's header edits
// are left to the caller: on the proxied path they run after the
// hop-by-hop fields (Connection and the fields it names) are removed, as
// in Envoy, so that a field the app names in Connection cannot strip one
// the route sets.
func (rt *Route) rewritten(r *http.Request) *http.Request {
	if rt.PathRewrite == nil && rt.HostRewrite == "" {
		return r
	}
	out := r.WithContext(r.Context())
	if rt.HostRewrite != "" {
		out.Host = rt.HostRewrite
	}
	if rt.PathRewrite != nil {
		if t, ok := rt.PathRewrite.apply(Target(r)); ok {
			setTarget(out, t)
		}
	}
	return out
}

// Redirect is a route's answer instead of forwarding (Envoy's
// RedirectAction): Status (301, 302, 303, 307 or 308) with a Location.
type Redirect struct {
	Status int
	// Scheme replaces the request's; "" keeps it.
	Scheme string
	// Host replaces the request's host and port; "" keeps the request's
	// host, less its port when Port is set or when the scheme changes
	// away from the one whose default port it is.
	Host string
	Port uint32 // 0: none
	// Path replaces the path, and the query too when it has one; or
	// PathRewrite rewrites the path (prefix_rewrite). At most one is set.
	Path        string
	PathRewrite *PathRewrite
	// StripQuery drops the request's query (not Path's).
	StripQuery bool
}

// Location is the URL rd sends r to, built as Envoy builds it
// (Http::Utility::newUri). The request's scheme is its X-Forwarded-Proto
// when that is http or https, else http (the app's connection to its
// sidecar is plaintext), as Envoy's connection manager sets :scheme; its
// host is its Host (:authority); its path its :path, query included.
func (rd *Redirect) Location(r *http.Request) string {
	xfp := r.Header.Get("X-Forwarded-Proto")
	if xfp == "" {
		xfp = "http" // what Envoy's connection manager sets for a plaintext client
	}
	scheme := rd.Scheme
	if scheme == "" {
		scheme = "http"
		if strings.EqualFold(xfp, "http") || strings.EqualFold(xfp, "https") {
			scheme = xfp
		}
	}
	port := ""
	if rd.Port != 0 {
		port = ":" + strconv.FormatUint(uint64(rd.Port), 10)
	}
	host := rd.Host
	if host == "" {
		host = redirectHost(r.Host, xfp, scheme, port != "")
	}
	path := Target(r)
	if rd.PathRewrite != nil {
		if t, ok := rd.PathRewrite.apply(path); ok {
			path = t
		}
	}
	pathHasQuery := strings.Contains(rd.Path, "?")
	if rd.Path != "" {
		_, query, hasQuery := strings.Cut(path, "?")
		switch {
		case pathHasQuery || !hasQuery:
			path = rd.Path
		default:
			path = rd.Path + "?" + query
		}
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if rd.StripQuery && !pathHasQuery {
		path, _, _ = strings.Cut(path, "?")
	}
	return scheme + "://" + host + port + path
}

// redirectHost is the request's host for a Location (Envoy's
// processRequestHost): without its port when the redirect sets one, or
// when the scheme changes and the port is the default of the request's
// (X-Forwarded-Proto's) scheme.
func redirectHost(host, xfp, scheme string, newPort bool) string {
	if host == "" {
		return host
	}
	var end int
	if host[0] == '[' {
		if end = strings.LastIndex(host, "]:"); end >= 0 {
			end++
		}
	} else {
		end = strings.LastIndexByte(host, ':')
	}
	if end < 0 {
		return host
	}
	port := host[end:]
	remove := newPort
	if scheme != xfp {
		remove = remove || strings.EqualFold(xfp, "https") && port == ":443" || strings.EqualFold(xfp, "http") && port == ":80"
	}
	if remove {
		return host[:end]
	}
	return host
}

// redirect answers r with the route's redirect: no body; for a gRPC
// request, as Envoy answers one locally, HTTP 200 with gRPC status
// UNKNOWN (2) in a trailers-only response, the Location kept. The route's
// response header mutation applies, after the Location is set.
func (rt *Route) redirect(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Location", rt.Redirect.Location(r))
	rt.ResponseHeaders.Apply(hdr)
	if isGRPC(r) {
		hdr.Set("Content-Type", "application/grpc")
		hdr.Set("Grpc-Status", strconv.Itoa(grpcUnknown))
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(rt.Redirect.Status)
}
