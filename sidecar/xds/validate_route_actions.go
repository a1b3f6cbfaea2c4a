package xds

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	corev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	routev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/route/v3"
	matcherv3 "github.com/weftmesh/weft/sidecar/internal/envoy/type/matcher/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// What the Gateway API's HTTPRoute and GRPCRoute (GAMMA, docs/gamma.md)
// translate into, besides matches on path and headers: query parameter
// matches, header mutations, redirects, path and host rewrites. Each is
// read as Envoy reads it; what the sidecar could not do exactly as Envoy
// does is refused.

// queryMatch: name, then string_match {exact | prefix} or present_match
// true, or nothing (presence).
func queryMatch(q *routev3.QueryParameterMatcher) (model.QueryMatch, error) {
	out := model.QueryMatch{Name: q.GetName()}
	if err := only(q, "name", "string_match", "present_match"); err != nil {
		return out, err
	}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_StringMatch:
		var err error
		if out.Exact, out.Prefix, err = exactOrPrefix(s.StringMatch); err != nil {
			return out, err
		}
	case *routev3.QueryParameterMatcher_PresentMatch:
		// Envoy checks presence whatever the value says: false does not
		// ask for absence, as a header matcher's does. Refused rather
		// than honoured as something it does not say.
		if !s.PresentMatch {
			return out, errors.New("present_match false: Envoy matches it as present_match true (not as absence); send true")
		}
		out.Present = true
	default:
		out.Present = true
	}
	return out, nil
}

// connectionHeaders are the header fields of a connection or of the
// message's framing, which the sidecar's HTTP stacks set themselves: a
// route can neither add nor remove them.
var connectionHeaders = map[string]bool{
	"connection": true, "proxy-connection": true, "keep-alive": true, "transfer-encoding": true, "upgrade": true,
	"te": true, "trailer": true, "content-length": true,
}

// mutableHeader refuses the names a route must not touch: pseudo-headers
// and host (as Envoy refuses them), a connection's header fields, and
// what is not a field name (an RFC 9110 token).
func mutableHeader(name string) error {
	lower := strings.ToLower(name)
	switch {
	case strings.HasPrefix(name, ":") || lower == "host":
		return fmt.Errorf("%q: pseudo-headers and host may not be modified (as in Envoy; host_rewrite_literal rewrites the host)", name)
	case connectionHeaders[lower]:
		return fmt.Errorf("%q is a header field of the connection or of the message's framing, which the sidecar sets itself", name)
	case !isToken(name):
		return fmt.Errorf("%q is not a header field name", name)
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// headerMutation reads headers_to_add and headers_to_remove of a request
// or a response (field names what), in Envoy's order: remove, then add.
func headerMutation(add []*corev3.HeaderValueOption, remove []string, what string) (model.HeaderMutation, error) {
	var out model.HeaderMutation
	for i, name := range remove {
		if err := mutableHeader(name); err != nil {
			return out, fmt.Errorf("%s_to_remove %d: %w", what, i, err)
		}
		out.Remove = append(out.Remove, strings.ToLower(name))
	}
	for i, o := range add {
		hv, err := headerValueOption(o)
		if err != nil {
			return out, fmt.Errorf("%s_to_add %d: %w", what, i, err)
		}
		out.Add = append(out.Add, hv)
	}
	return out, nil
}

// headerValueOption: header {key, value}, append_action, keep_empty_value.
// The value is a literal: Envoy reads it as a format string whose "%%" is
// "%" and whose %COMMAND% operators (request attributes, metadata) the
// sidecar does not evaluate, so any other "%" is refused.
func headerValueOption(o *corev3.HeaderValueOption) (model.HeaderValue, error) {
	var out model.HeaderValue
	if err := only(o, "header", "append_action", "keep_empty_value"); err != nil {
		return out, err
	}
	h := o.GetHeader()
	if err := only(h, "key", "value"); err != nil {
		return out, fmt.Errorf("header: %w", err)
	}
	if err := mutableHeader(h.GetKey()); err != nil {
		return out, fmt.Errorf("header.key %w", err)
	}
	v, err := literal(h.GetValue())
	if err != nil {
		return out, fmt.Errorf("header.value %q: %w", h.GetValue(), err)
	}
	if !validFieldValue(v) {
		return out, fmt.Errorf("header.value %q: a control character is not allowed in a header field", h.GetValue())
	}
	out = model.HeaderValue{Name: strings.ToLower(h.GetKey()), Value: v, KeepEmpty: o.GetKeepEmptyValue()}
	switch o.GetAppendAction() {
	case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		out.Action = model.AppendIfExistsOrAdd
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		out.Action = model.AddIfAbsent
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
		out.Action = model.OverwriteIfExistsOrAdd
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		out.Action = model.OverwriteIfExists
	default: // conform refused values Envoy does not define
		return out, fmt.Errorf("append_action %v is not supported", o.GetAppendAction())
	}
	return out, nil
}

// literal is the text of an Envoy format string without command operators:
// "%%" is "%"; any other "%" starts a command, which is refused.
func literal(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf(`%%COMMAND%% operators are not supported (a literal %% is written "%%%%")`)
	}
	return b.String(), nil
}

// validFieldValue: no control character but HTAB (what Go's HTTP stacks
// send).
func validFieldValue(v string) bool {
	for i := range len(v) {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validHost: a host, with or without a port, as a Host field and a URL's
// authority carry it: no delimiter of a URL, no whitespace, no control
// character.
func validHost(h string) error {
	for i := range len(h) {
		if c := h[i]; c <= ' ' || c == 0x7f || strings.IndexByte(`/?#@\"<>`, c) >= 0 {
			return fmt.Errorf("%q is not a host", h)
		}
	}
	return nil
}

// validPath: what a rewrite puts into a request's path: no query or
// fragment delimiter, no whitespace or control character, every "%"
// followed by two hex digits.
func validPath(p string) error {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c <= ' ' || c == 0x7f || c == '?' || c == '#':
			return fmt.Errorf("%q: %q is not allowed in a path", p, c)
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return fmt.Errorf("%q: %% must start an escape (%%XX)", p)
			}
		}
	}
	return nil
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// maxRegexProgram bounds a regex's compiled size, as Envoy's
// re2.max_program_size.error_level (100 by default) does. Envoy counts
// RE2's program, the sidecar Go's regexp/syntax instructions: close, not
// equal.
const maxRegexProgram = 100

// pathRewrite reads route.prefix_rewrite and route.regex_rewrite (at most
// one, as in Envoy); matched is the route's path match. Nil: no rewrite.
func pathRewrite(prefix string, rr *matcherv3.RegexMatchAndSubstitute, matched string) (*model.PathRewrite, error) {
	switch {
	case prefix != "" && rr != nil:
		return nil, errors.New("prefix_rewrite and regex_rewrite: only one may be set (as in Envoy)")
	case prefix != "":
		if err := validPath(prefix); err != nil {
			return nil, fmt.Errorf("prefix_rewrite: %w", err)
		}
		return &model.PathRewrite{Matched: matched, Prefix: prefix}, nil
	case rr != nil:
		re, err := regexRewrite(rr)
		if err != nil {
			return nil, fmt.Errorf("regex_rewrite.%w", err)
		}
		return &model.PathRewrite{Matched: matched, Regex: re, Substitution: rr.GetSubstitution()}, nil
	}
	return nil, nil
}

// regexRewrite: pattern {regex} in RE2's syntax (Go's regexp is RE2), its
// program small enough for Envoy, and a substitution in RE2's rewrite
// syntax, \0 to \9 for the groups the pattern has (not \\: a backslash
// is no path's), that leaves a path. Errors start with the field's name.
func regexRewrite(rr *matcherv3.RegexMatchAndSubstitute) (*regexp.Regexp, error) {
	if err := only(rr, "pattern", "substitution"); err != nil {
		return nil, err
	}
	if err := only(rr.GetPattern(), "regex"); err != nil {
		return nil, fmt.Errorf("pattern: %w", err)
	}
	expr := rr.GetPattern().GetRegex()
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("pattern.regex %q: %w", expr, err)
	}
	parsed, _ := syntax.Parse(expr, syntax.Perl) // compiled above: cannot fail
	if prog, err := syntax.Compile(parsed.Simplify()); err == nil && len(prog.Inst) > maxRegexProgram {
		return nil, fmt.Errorf("pattern.regex %q: its program has %d instructions, more than %d (Envoy's re2.max_program_size.error_level)", expr, len(prog.Inst), maxRegexProgram)
	}
	sub := rr.GetSubstitution()
	for i := 0; i < len(sub); i++ {
		if sub[i] != '\\' {
			continue
		}
		i++
		switch {
		case i == len(sub):
			return nil, fmt.Errorf("substitution %q: ends in a lone \\", sub)
		case sub[i] >= '0' && sub[i] <= '9':
			if n := int(sub[i] - '0'); n > re.NumSubexp() {
				return nil, fmt.Errorf("substitution %q: \\%d, but the pattern has %d groups", sub, n, re.NumSubexp())
			}
		default:
			return nil, fmt.Errorf("substitution %q: \\%c is not \\0-\\9 (a backslash is no path's)", sub, sub[i])
		}
	}
	if err := validPath(groupRef.ReplaceAllString(sub, "")); err != nil {
		return nil, fmt.Errorf("substitution: %w", err)
	}
	return re, nil
}

// groupRef is a reference to a group in an RE2 substitution.
var groupRef = regexp.MustCompile(`\\[0-9]`)

// redirectAction reads a route's redirect; matched is the route's path
// match, which prefix_rewrite replaces. Errors name the field from the
// route ("redirect.host_redirect: ...").
func redirectAction(rd *routev3.RedirectAction, matched string) (*model.Redirect, error) {
	if err := only(rd, "https_redirect", "scheme_redirect", "host_redirect", "port_redirect", "path_redirect", "prefix_rewrite",
		"response_code", "strip_query"); err != nil {
		return nil, fmt.Errorf("redirect: %w", err)
	}
	out := &model.Redirect{StripQuery: rd.GetStripQuery()}
	switch rd.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		out.Status = 301
	case routev3.RedirectAction_FOUND:
		out.Status = 302
	case routev3.RedirectAction_SEE_OTHER:
		out.Status = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		out.Status = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		out.Status = 308
	default: // conform refused values Envoy does not define
		return nil, fmt.Errorf("redirect.response_code %v is not supported", rd.GetResponseCode())
	}
	switch s := rd.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			out.Scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		if s.SchemeRedirect != "" && !isScheme(s.SchemeRedirect) {
			return nil, fmt.Errorf("redirect.scheme_redirect %q is not a URI scheme", s.SchemeRedirect)
		}
		out.Scheme = s.SchemeRedirect
	}
	if h := rd.GetHostRedirect(); h != "" {
		if err := validHost(h); err != nil {
			return nil, fmt.Errorf("redirect.host_redirect: %w", err)
		}
		out.Host = h
	}
	if p := rd.GetPortRedirect(); p > 65535 {
		return nil, fmt.Errorf("redirect.port_redirect %d is not a port", p)
	}
	out.Port = rd.GetPortRedirect()
	switch p := rd.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		path, query, _ := strings.Cut(p.PathRedirect, "?")
		if err := validPath(path); err != nil {
			return nil, fmt.Errorf("redirect.path_redirect: %w", err)
		}
		if strings.ContainsFunc(query, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' }) {
			return nil, fmt.Errorf("redirect.path_redirect %q: the query holds a character a URL cannot", p.PathRedirect)
		}
		out.Path = p.PathRedirect
	case *routev3.RedirectAction_PrefixRewrite:
		if p.PrefixRewrite != "" {
			if err := validPath(p.PrefixRewrite); err != nil {
				return nil, fmt.Errorf("redirect.prefix_rewrite: %w", err)
			}
			out.PathRewrite = &model.PathRewrite{Matched: matched, Prefix: p.PrefixRewrite}
		}
	}
	return out, nil
}

// isScheme reports whether s is an RFC 3986 scheme.
func isScheme(s string) bool {
	for i := range len(s) {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}
