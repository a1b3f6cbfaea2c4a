package registry

import (
	"strings"
	"testing"
	"unicode/utf8"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// A header filter or a path that a sidecar would refuse is refused here,
// with the Gateway API's reason, so that one bad rule costs that rule and
// not the Service's whole route configuration (a sidecar NACKs a route
// configuration as a whole).
func TestRouteFiltersASidecarWouldRefuse(t *testing.T) {
	hdr := func(set, add []gwv1.HTTPHeader, remove ...string) *gwv1.HTTPHeaderFilter {
		return &gwv1.HTTPHeaderFilter{Set: set, Add: add, Remove: remove}
	}
	h := func(name, value string) []gwv1.HTTPHeader {
		return []gwv1.HTTPHeader{{Name: gwv1.HTTPHeaderName(name), Value: value}}
	}
	for _, tc := range []struct {
		name string
		f    *gwv1.HTTPHeaderFilter
		want string // "" : accepted
	}{
		{"plain", hdr(h("X-Set", "a b"), h("x-add", "50%"), "X-Remove"), ""},
		{"a tab in a value", hdr(h("x-set", "a\tb"), nil), ""},
		{"host", hdr(h("Host", "evil"), nil), `"host" cannot be edited`},
		{"pseudo-header", hdr(nil, h(":path", "/admin")), `":path" cannot be edited`},
		{"removing host", hdr(nil, nil, "HOST"), `"host" cannot be edited`},
		{"connection", hdr(h("Connection", "close"), nil), `"connection" is set by the HTTP stack`},
		{"transfer-encoding", hdr(nil, h("Transfer-Encoding", "chunked")), `"transfer-encoding" is set by the HTTP stack`},
		{"content-length removed", hdr(nil, nil, "content-length"), `"content-length" is set by the HTTP stack`},
		{"not a token", hdr(h("x y", "1"), nil), `"x y" is not a header name`},
		{"CRLF in a value", hdr(h("x-set", "a\r\nx-injected: 1"), nil), "control character"},
		{"NUL in a value", hdr(nil, h("x-add", "a\x00")), "control character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, bad := headerModifier(tc.f)
			switch {
			case tc.want == "" && bad != nil:
				t.Errorf("refused: %v", bad)
			case tc.want != "" && (bad == nil || !strings.Contains(bad.message, tc.want) || bad.reason != string(gwv1.RouteReasonUnsupportedValue)):
				t.Errorf("got %v, want UnsupportedValue naming %q", bad, tc.want)
			}
		})
	}
	full := func(v string) *gwv1.HTTPPathModifier {
		return &gwv1.HTTPPathModifier{Type: gwv1.FullPathHTTPPathModifier, ReplaceFullPath: &v}
	}
	prefix := func(v string) *gwv1.HTTPPathModifier {
		return &gwv1.HTTPPathModifier{Type: gwv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: &v}
	}
	for _, p := range []*gwv1.HTTPPathModifier{nil, full("/new"), prefix("/v2/%7Euser"), full("/")} {
		if bad := checkPathModifier(p); bad != nil {
			t.Errorf("%v refused: %v", p, bad)
		}
	}
	// A backslash: "\b" made every sidecar refuse the whole route update
	// (the security review's F1); "\0" turned a full-path replace into
	// "literal plus the original path".
	for _, p := range []*gwv1.HTTPPathModifier{full("/a?b=1"), full("/a#frag"), prefix("/a b"), prefix("/a%2"), prefix("/a%zz"), full("/a\n"),
		full(`/a\b`), full(`/x\0`), prefix(`/x\`)} {
		if bad := checkPathModifier(p); bad == nil {
			t.Errorf("%q accepted", *cmpOr(p.ReplaceFullPath, p.ReplacePrefixMatch))
		}
	}
}

func cmpOr(a, b *string) *string {
	if a != nil {
		return a
	}
	return b
}

// A path match with a query or fragment delimiter is refused here: Envoy's
// validation of path_separated_prefix / path would otherwise refuse the
// node's whole snapshot (an older CRD without the v1 pattern lets it in).
func TestRoutePathMatchASidecarWouldRefuse(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{{"/a", true}, {"/a/b/", true}, {"/%7E", true}, {"/a?b", false}, {"/a#b", false}, {"/a b", false}, {"/a\x7f", false}} {
		for _, typ := range []gwv1.PathMatchType{gwv1.PathMatchExact, gwv1.PathMatchPathPrefix} {
			v, ty := tc.value, typ
			_, bad := httpMatch(gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: &ty, Value: &v}})
			if (bad == nil) != tc.ok {
				t.Errorf("%s %q: refused %v, want ok %v", typ, tc.value, bad, tc.ok)
			}
		}
	}
}

// A condition message quotes what the route's author wrote: it is cut
// well under what the API server accepts (32,768 bytes), on a rune.
func TestConditionMessageCapped(t *testing.T) {
	long := strings.Repeat("é", 40000)
	c := condFor("Accepted", "Accepted", "ok", &invalid{"UnsupportedValue", long}, 1)
	if len(c.Message) > maxConditionMessage || !strings.HasSuffix(c.Message, "(cut)") || !utf8.ValidString(c.Message) {
		t.Errorf("message of %d bytes (valid UTF-8 %v), ending %q", len(c.Message), utf8.ValidString(c.Message), c.Message[len(c.Message)-12:])
	}
	if c := condFor("Accepted", "Accepted", "ok", &invalid{"UnsupportedValue", "short"}, 1); c.Message != "short" {
		t.Errorf("short message changed: %q", c.Message)
	}
}
