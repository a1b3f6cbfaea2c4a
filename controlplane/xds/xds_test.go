package xds

import (
	"strings"
	"testing"
)

func TestParseNodeID(t *testing.T) {
	cases := []struct {
		id, pod, ns, err string
	}{
		{id: "app-1.demo", pod: "app-1", ns: "demo"},
		{id: "web.v2-7d9f.demo", pod: "web.v2-7d9f", ns: "demo"}, // pod names may hold dots: split at the last
		{id: "demo", err: `xds: node ID "demo" is not <pod>.<namespace>`},
		{id: ".demo", err: `pod name ""`},
		{id: "app-1.", err: `namespace ""`},
		{id: "App.demo", err: `pod name "App"`},
		{id: "app_1.demo", err: `pod name "app_1"`},
		{id: "", err: `xds: node ID "" is not <pod>.<namespace>`},
	}
	for _, tc := range cases {
		pod, ns, err := ParseNodeID(tc.id)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseNodeID(%q): error %v, want one with %q", tc.id, err, tc.err)
		case tc.err == "" && (err != nil || pod != tc.pod || ns != tc.ns):
			t.Errorf("ParseNodeID(%q) = %q, %q, %v; want %q, %q", tc.id, pod, ns, err, tc.pod, tc.ns)
		case tc.err == "" && NodeID(pod, ns) != tc.id:
			t.Errorf("NodeID(%q, %q) != %q", pod, ns, tc.id)
		}
	}
}
