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
