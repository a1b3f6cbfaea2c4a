package injector

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/discovery"
)

// NativeSidecarSupported reports whether the API server runs Kubernetes
// 1.29 or later, where native sidecars (init containers with restartPolicy
// Always) are on by default. Vendor suffixes (v1.30.1-gke.100) are fine.
func NativeSidecarSupported(d discovery.ServerVersionInterface) (bool, error) {
	info, err := d.ServerVersion()
	if err != nil {
		return false, fmt.Errorf("injector: server version: %w", err)
	}
	v, err := version.ParseGeneric(info.GitVersion)
	if err != nil {
		// Some distributions leave gitVersion odd; major/minor ("1", "28+") then decide.
		if v, err = version.ParseGeneric(info.Major + "." + trimPlus(info.Minor)); err != nil {
			return false, fmt.Errorf("injector: server version %q (major %q, minor %q) does not parse", info.GitVersion, info.Major, info.Minor)
		}
	}
	return v.AtLeast(version.MajorMinor(1, 29)), nil
}

func trimPlus(s string) string {
	for len(s) > 0 && s[len(s)-1] == '+' {
		s = s[:len(s)-1]
	}
	return s
}
