package names

import "testing"

func TestDefaultControlPlaneAddr(t *testing.T) {
	if got := ControlPlaneAddr(Namespace); got != DefaultControlPlaneAddr {
		t.Fatalf("ControlPlaneAddr(Namespace) = %q, DefaultControlPlaneAddr = %q", got, DefaultControlPlaneAddr)
	}
	if got, want := ControlPlaneAddr("mesh"), "weft-controlplane.mesh.svc:15012"; got != want {
		t.Fatalf("ControlPlaneAddr = %q, want %q", got, want)
	}
}
