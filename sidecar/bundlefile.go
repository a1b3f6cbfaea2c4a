package sidecar

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// fileBundle is an x509bundle.Source reading a PEM bundle file, re-read when
// it changes: the kubelet updates a mounted ConfigMap in place when the
// control plane publishes a rotated root.
type fileBundle struct {
	path string
	td   spiffeid.TrustDomain

	mu      sync.Mutex
	modTime time.Time
	size    int64
	bundle  *x509bundle.Bundle
}

var _ x509bundle.Source = (*fileBundle)(nil)

func newFileBundle(path string, td spiffeid.TrustDomain) (*fileBundle, error) {
	f := &fileBundle{path: path, td: td}
	if _, err := f.GetX509BundleForTrustDomain(td); err != nil {
		return nil, err
	}
	return f, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source. A file that
// became unreadable or invalid keeps the last good bundle.
func (f *fileBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != f.td {
		return nil, fmt.Errorf("sidecar: no bundle for trust domain %q (trusting %q)", td, f.td)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := os.Stat(f.path)
	if err == nil && (st.ModTime() != f.modTime || st.Size() != f.size || f.bundle == nil) {
		b, lerr := x509bundle.Load(f.td, f.path)
		switch {
		case lerr == nil:
			f.bundle, f.modTime, f.size = b, st.ModTime(), st.Size()
		case f.bundle == nil:
			return nil, fmt.Errorf("sidecar: trust bundle %s: %w", f.path, lerr)
		}
	}
	if f.bundle == nil {
		return nil, fmt.Errorf("sidecar: trust bundle %s: %w", f.path, err)
	}
	return f.bundle, nil
}
