package identity

import (
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Ready is closed once the first SVID is installed.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// GetX509SVID returns the current SVID, or an error when there is none yet
// or it has expired. The SVID must not be modified.
func (m *Manager) GetX509SVID() (*x509svid.SVID, error) {
	svid, _, err := m.current()
	return svid, err
}

// GetX509BundleForTrustDomain returns the roots that came with the current
// SVID if td is its trust domain. Like GetX509SVID it fails once the SVID
// has expired: the bundle has then not been refreshed for a whole SVID
// lifetime.
func (m *Manager) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	_, bundle, err := m.current()
	if err != nil {
		return nil, err
	}
	if bundle.TrustDomain() != td {
		return nil, fmt.Errorf("identity: no X.509 bundle for trust domain %q (have %q)", td, bundle.TrustDomain())
	}
	return bundle, nil
}

// current returns the SVID and its bundle, consistent with each other, if
// the SVID has not expired.
func (m *Manager) current() (*x509svid.SVID, *x509bundle.Bundle, error) {
	m.mu.RLock()
	svid, bundle := m.svid, m.bundle
	m.mu.RUnlock()
	if svid == nil {
		return nil, nil, fmt.Errorf("identity: no X509-SVID yet")
	}
	if notAfter := svid.Certificates[0].NotAfter; !m.clock.Now().Before(notAfter) {
		return nil, nil, fmt.Errorf("identity: X509-SVID for %s expired at %s", svid.ID, notAfter.UTC().Format(time.RFC3339))
	}
	return svid, bundle, nil
}

// Subscribe returns a channel that receives a signal after every new SVID
// (and bundle) is installed, and a function that ends the subscription.
// Signals coalesce: a slow reader sees one pending signal and then reads
// the newest state with GetX509SVID.
func (m *Manager) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.subs[ch] = struct{}{}
	m.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			m.mu.Lock()
			delete(m.subs, ch)
			m.mu.Unlock()
		})
	}
}

// NotAfter is the current SVID's expiry (expired or not), or the zero time
// before the first SVID. For metrics.
func (m *Manager) NotAfter() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.svid == nil {
		return time.Time{}
	}
	return m.svid.Certificates[0].NotAfter
}

// Renewals counts the SVIDs installed, the first one included.
func (m *Manager) Renewals() uint64 { return m.renewals.Load() }

// Failures counts failed attempts to obtain an SVID.
func (m *Manager) Failures() uint64 { return m.failures.Load() }
