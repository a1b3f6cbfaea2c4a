package registry

import (
	"strings"
	"testing"

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
	for _, p := range []*gwv1.HTTPPathModifier{full("/a?b=1"), full("/a#frag"), prefix("/a b"), prefix("/a%2"), prefix("/a%zz"), full("/a\n")} {
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
