package injector

import (
	"strings"
	"testing"
)

// TestInboundLoopbackPortsAnnotation: weft.dev/inbound-loopback-ports is a
// known annotation (before, the injector refused the pod for an unknown
// weft.dev/ key) and a malformed port list is refused at admission rather
// than read by the control plane as no ports.
func TestInboundLoopbackPortsAnnotation(t *testing.T) {
	for _, ok := range []string{"8080", "8080,9090", " 9090 , 8080", ""} {
		if _, err := parseAnnotations(map[string]string{AnnotationInboundLoopbackPorts: ok}, "info", OutboundUDPAllow); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"http", "8080,", "0", "65536", "*"} {
		_, err := parseAnnotations(map[string]string{AnnotationInboundLoopbackPorts: bad}, "info", OutboundUDPAllow)
		if err == nil || !strings.Contains(err.Error(), "annotation weft.dev/inbound-loopback-ports") {
			t.Errorf("%q: %v, want a refusal naming the annotation", bad, err)
		}
	}
}
