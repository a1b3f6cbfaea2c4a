// Package kubeconfig builds the Kubernetes client configuration of weft's
// in-cluster components (weft-controlplane, weft-injector).
package kubeconfig

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Load returns the pod's in-cluster configuration, or the kubeconfig file's
// when path is not empty, with userAgent set.
func Load(path, userAgent string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if path == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", path)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	rc.UserAgent = userAgent
	return rc, nil
}
