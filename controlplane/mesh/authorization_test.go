package mesh

import (
	"slices"
	"testing"

	"github.com/weftmesh/weft/api/v1alpha1"
)

// TestConnectionPorts: what a rule matches on a connection, per action.
func TestConnectionPorts(t *testing.T) {
	get := []string{"GET"}
	for _, tc := range []struct {
		name   string
		to     []Destination
		action v1alpha1.AuthorizationAction
		ports  []uint16
		ok     bool
	}{
		{"no to", nil, v1alpha1.ActionAllow, nil, true},
		{"ports", []Destination{{Ports: []uint16{80}}, {Ports: []uint16{81, 80}}}, v1alpha1.ActionAllow, []uint16{80, 81}, true},
		{"allow http only", []Destination{{Ports: []uint16{80}, Methods: get}}, v1alpha1.ActionAllow, nil, false},
		{"allow http dropped", []Destination{{Ports: []uint16{80}, Methods: get}, {Ports: []uint16{81}}}, v1alpha1.ActionAllow, []uint16{81}, true},
		{"allow any port kept", []Destination{{Paths: []PathMatch{{Value: "/"}}}, {Ports: []uint16{81}}, {Methods: get}}, v1alpha1.ActionAllow, []uint16{81}, true},
		{"deny http on ports", []Destination{{Ports: []uint16{80}, Methods: get}}, v1alpha1.ActionDeny, []uint16{80}, true},
		{"deny http on any port", []Destination{{Ports: []uint16{80}}, {Paths: []PathMatch{{Value: "/a"}}}}, v1alpha1.ActionDeny, nil, true},
	} {
		r := AuthorizationRule{To: tc.to}
		ports, ok := r.ConnectionPorts(tc.action)
		if ok != tc.ok || !slices.Equal(ports, tc.ports) {
			t.Errorf("%s: ConnectionPorts(%s) = %v, %v; want %v, %v", tc.name, tc.action, ports, ok, tc.ports, tc.ok)
		}
	}
}
