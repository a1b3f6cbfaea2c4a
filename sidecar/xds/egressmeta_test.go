package xds

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestEgressMeta: "weft.egress" carries the deciding rule's mode; the
// sidecar NACKs a mode or decision it cannot honour (an unknown mode could
// otherwise turn an enforced name binding into a flagged one).
func TestEgressMeta(t *testing.T) {
	for _, tc := range []struct {
		fields map[string]any
		want   model.EgressMeta
		err    string
	}{
		{map[string]any{"policy": "demo/e", "rule": "0", "decision": "allow", "mode": "Enforce"}, model.EgressMeta{Policy: "demo/e", Rule: "0", Decision: "allow", Mode: "Enforce"}, ""},
		{map[string]any{"policy": "demo/e", "rule": "1", "decision": "audit", "mode": "Audit"}, model.EgressMeta{Policy: "demo/e", Rule: "1", Decision: "audit", Mode: "Audit"}, ""},
		{map[string]any{"decision": "deny", "outbound": "REGISTRY_ONLY"}, model.EgressMeta{Decision: "deny", Outbound: "REGISTRY_ONLY"}, ""},
		{map[string]any{"decision": "allow", "mode": "enforce"}, model.EgressMeta{}, `mode "enforce" is not Enforce or Audit`},
		{map[string]any{"decision": "allow", "mode": "Shadow"}, model.EgressMeta{}, `mode "Shadow" is not Enforce or Audit`},
		{map[string]any{"decision": "maybe"}, model.EgressMeta{}, `decision "maybe" is not allow, deny or audit`},
		{map[string]any{"decision": "allow", "mode": true}, model.EgressMeta{}, `field "mode" is not supported`},
		{map[string]any{"decision": "allow", "why": "x"}, model.EgressMeta{}, `field "why" is not supported`},
		// An ExternalName Service's names: the Service and its target,
		// both or neither, each well formed (the audit record's).
		{map[string]any{"decision": "deny", "service": "demo/ext", "host": "api.example.com"}, model.EgressMeta{Decision: "deny", Service: "demo/ext", Host: "api.example.com"}, ""},
		{map[string]any{"decision": "deny", "service": "demo/ext"}, model.EgressMeta{}, `host "" (of service "demo/ext") is not a host name`},
		{map[string]any{"decision": "deny", "host": "api.example.com"}, model.EgressMeta{}, `service "" is not <namespace>/<name>`},
		{map[string]any{"decision": "deny", "service": "ext", "host": "api.example.com"}, model.EgressMeta{}, `service "ext" is not <namespace>/<name>`},
		{map[string]any{"decision": "deny", "service": "demo/ext/x", "host": "api.example.com"}, model.EgressMeta{}, `service "demo/ext/x" is not`},
		{map[string]any{"decision": "deny", "service": "/ext", "host": "api.example.com"}, model.EgressMeta{}, `service "/ext" is not`},
		{map[string]any{"decision": "deny", "service": "demo/ext", "host": "*.example.com"}, model.EgressMeta{}, `host "*.example.com" (of service "demo/ext") is not a host name`},
		{map[string]any{"decision": "deny", "service": "demo/ext", "host": "api..example.com"}, model.EgressMeta{}, `is not a host name`},
		{map[string]any{"decision": "deny", "service": "demo/ext", "host": "api.example.com:443"}, model.EgressMeta{}, `is not a host name`},
	} {
		s, err := structpb.NewStruct(tc.fields)
		if err != nil {
			t.Fatal(err)
		}
		got, err := egressMeta(s)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err %v, want %q", tc.fields, err, tc.err)
			}
		case err != nil:
			t.Errorf("%v: %v", tc.fields, err)
		case *got != tc.want:
			t.Errorf("%v: %+v, want %+v", tc.fields, *got, tc.want)
		}
	}
}
