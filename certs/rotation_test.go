package certs_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/weftmesh/weft/certs"
)

// fleet checks which SVIDs verify against which bundles at one moment: a
// workload holding bundle b accepts a peer presenting svid s iff ok.
type fleetCheck struct {
	svid   string
	bundle string
	ok     bool
}

func checkFleet(t *testing.T, step string, now time.Time, svids map[string][]*x509.Certificate, bundles map[string]*x509bundle.Bundle, checks []fleetCheck) {
	t.Helper()
	for _, c := range checks {
		err := verifies(svids[c.svid], bundles[c.bundle], now)
		if (err == nil) != c.ok {
			t.Errorf("%s: svid %s against bundle %s: err = %v, want ok=%v", step, c.svid, c.bundle, err, c.ok)
		}
	}
}

func fp(c *x509.Certificate) [32]byte { return certs.Fingerprint(c) }

// TestRootRotation walks ROTATION.md step by step with a fake clock.
func TestRootRotation(t *testing.T) {
	clock := newFakeClock(t)
	start := clock.Now()
	cfg := certs.CAConfig{TrustDomain: td, Clock: clock}
	ca, err := certs.NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	oldRoot := ca.ActiveRoot()
	svids := map[string][]*x509.Certificate{"old1": sign(t, ca, idA)}
	bundles := map[string]*x509bundle.Bundle{"old": ca.Bundle()}

	// Step 1: publish the new root. Signing does not change yet.
	clock.Add(time.Hour)
	oldInter := ca.Intermediate()
	if err := ca.PrepareRoot(); err != nil {
		t.Fatalf("PrepareRoot: %v", err)
	}
	newRoot := ca.Roots()[0]
	if ca.ActiveRoot() != oldRoot || ca.Intermediate() != oldInter || fp(newRoot) == fp(oldRoot) {
		t.Fatalf("PrepareRoot changed the signing chain or did not add a root")
	}
	bundles["both"] = ca.Bundle()
	if n := len(bundles["both"].X509Authorities()); n != 2 {
		t.Fatalf("bundle after PrepareRoot has %d roots, want 2", n)
	}
	svids["old2"] = sign(t, ca, idB) // still under the old root
	checkFleet(t, "after PrepareRoot", clock.Now(), svids, bundles, []fleetCheck{
		{"old1", "old", true}, {"old1", "both", true},
		{"old2", "old", true}, {"old2", "both", true},
	})

	// A restart between steps loses nothing: the stored material carries
	// both root keys while a root is prepared.
	m := material(t, ca)
	if n := bytes.Count(m.RootKeyPEM, []byte("BEGIN PRIVATE KEY")); n != 2 {
		t.Fatalf("root-key.pem mid-rotation holds %d keys, want 2", n)
	}

	// Wait until every workload's bundle holds the new root (ConfigMap
	// propagation), then step 2: new SVIDs chain to the new root.
	clock.Add(time.Hour)
	activated := clock.Now()
	if err := ca.ActivateRoot(); err != nil {
		t.Fatalf("ActivateRoot: %v", err)
	}
	if ca.ActiveRoot() != newRoot || ca.Intermediate() == oldInter {
		t.Fatalf("ActivateRoot did not move signing to the new root")
	}
	svids["new1"] = sign(t, ca, idA)
	bundles["now"] = ca.Bundle()
	checkFleet(t, "after ActivateRoot", clock.Now(), svids, bundles, []fleetCheck{
		// Properly spaced: everyone holds "both", so old and new SVIDs
		// are accepted everywhere.
		{"old1", "both", true}, {"old2", "both", true}, {"new1", "both", true},
		{"old2", "now", true}, {"new1", "now", true},
		// Too early: a workload still on the old bundle refuses new SVIDs.
		// This is why step 2 waits for step 1 to propagate.
		{"new1", "old", false},
	})

	// Retiring the old root now would be an outage: SVIDs under it are
	// still valid and in use. Show it on a copy of the CA.
	early, err := certs.LoadCA(cfg, material(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	if err := early.RetireRoot(fp(oldRoot)); err != nil {
		t.Fatalf("RetireRoot on the copy: %v", err)
	}
	bundles["early"] = early.Bundle()
	checkFleet(t, "old root retired too early", clock.Now(), svids, bundles, []fleetCheck{
		{"old2", "early", false}, {"old1", "early", false}, {"new1", "early", true},
	})

	// Workloads renew at half-life (+/- jitter); renewals come from the new
	// chain. The last SVID under the old root expires WorkloadTTL after
	// activation at the latest.
	renewAt := certs.RenewalTime(svids["old2"][0].NotBefore, svids["old2"][0].NotAfter, 0)
	if !renewAt.After(activated) {
		t.Fatalf("old2 renews at %v, before activation at %v", renewAt, activated)
	}
	clock.Add(renewAt.Sub(clock.Now()))
	svids["new2"] = sign(t, ca, idB)
	clock.Add(activated.Add(certs.DefaultWorkloadTTL).Sub(clock.Now()))
	checkFleet(t, "every old SVID expired", clock.Now(), svids, bundles, []fleetCheck{
		{"old1", "both", false}, {"old2", "both", false},
		{"new1", "both", true}, {"new2", "both", true},
	})

	// Step 3: drop the old root. Nothing in use chains to it any more.
	if err := ca.RetireRoot(fp(oldRoot)); err != nil {
		t.Fatalf("RetireRoot: %v", err)
	}
	bundles["final"] = ca.Bundle()
	if rs := bundles["final"].X509Authorities(); len(rs) != 1 || !rs[0].Equal(newRoot) {
		t.Fatalf("final bundle has %d roots, want just the new one", len(rs))
	}
	svids["new3"] = sign(t, ca, idA)
	checkFleet(t, "after RetireRoot", clock.Now(), svids, bundles, []fleetCheck{
		{"new1", "final", true}, {"new2", "final", true}, {"new3", "final", true},
		{"new3", "both", true}, // workloads not yet updated still accept
	})
	if clock.Now().Sub(start) > 27*time.Hour {
		t.Errorf("rotation took %v", clock.Now().Sub(start))
	}
}

func TestRotationOrder(t *testing.T) {
	ca := newTestCA(t, newFakeClock(t))
	first := ca.ActiveRoot()
	checkErr(t, ca.ActivateRoot(), certs.ErrRotation, "certs: ActivateRoot: no prepared root (active root sha256:")
	checkErr(t, ca.RetireRoot(fp(first)), certs.ErrRotation, " is the active root; activate another root first: root rotation out of order")
	checkErr(t, ca.RetireRoot([32]byte{1}), certs.ErrRotation, "certs: RetireRoot: root sha256:0100000000000000000000000000000000000000000000000000000000000000 is not in the bundle (1 roots): root rotation out of order")
	if err := ca.PrepareRoot(); err != nil {
		t.Fatal(err)
	}
	prepared := ca.Roots()[0]
	checkErr(t, ca.PrepareRoot(), certs.ErrRotation, " is already prepared and not yet active; call ActivateRoot first: root rotation out of order")
	checkErr(t, ca.RetireRoot(fp(prepared)), certs.ErrRotation, " is prepared and not yet active; activate it, then retire the old one: root rotation out of order")
	checkErr(t, ca.RetireRoot(fp(first)), certs.ErrRotation, " is the active root")
	if err := ca.ActivateRoot(); err != nil {
		t.Fatal(err)
	}
	checkErr(t, ca.RetireRoot(fp(prepared)), certs.ErrRotation, " is the active root")
	if err := ca.RetireRoot(fp(first)); err != nil {
		t.Fatal(err)
	}
}

// A control plane that restarts mid-rotation from a root-key.pem holding
// only the signing root's key can still activate, but not renew the
// intermediate under the old root.
func TestRestartMidRotation(t *testing.T) {
	clock := newFakeClock(t)
	cfg := certs.CAConfig{TrustDomain: td, Clock: clock}
	ca := newTestCA(t, clock)
	if err := ca.PrepareRoot(); err != nil {
		t.Fatal(err)
	}
	m := material(t, ca)
	full, err := certs.LoadCA(cfg, m)
	if err != nil {
		t.Fatalf("LoadCA mid-rotation: %v", err)
	}
	if err := full.RenewIntermediate(); err != nil {
		t.Errorf("RenewIntermediate with both root keys: %v", err)
	}
	if full.ActiveRoot().Equal(full.Roots()[0]) {
		t.Errorf("RenewIntermediate mid-rotation moved to the prepared root")
	}
	if err := full.ActivateRoot(); err != nil {
		t.Errorf("ActivateRoot after restart: %v", err)
	}

	block, _ := pem.Decode(m.RootKeyPEM)
	m.RootKeyPEM = pem.EncodeToMemory(block)
	single, err := certs.LoadCA(cfg, m)
	if err != nil {
		t.Fatalf("LoadCA with one root key: %v", err)
	}
	checkErr(t, single.RenewIntermediate(), certs.ErrRotation, "(the stored root-key.pem holds only the signing root's key); call ActivateRoot: root rotation out of order")
	if err := single.ActivateRoot(); err != nil {
		t.Errorf("ActivateRoot with one root key: %v", err)
	}
	if err := verifies(sign(t, single, idA), ca.Bundle(), clock.Now()); err != nil {
		t.Errorf("SVID after activation on the restarted CA: %v", err)
	}
}

// Sign, Bundle and Material run while the roots rotate; -race checks the
// locking, and every SVID verifies against the final bundle.
func TestConcurrentSignDuringRotation(t *testing.T) {
	clock := newFakeClock(t)
	ca := newTestCA(t, clock)
	csr := makeCSR(t, p256Key(t))
	var wg sync.WaitGroup
	chains := make(chan []*x509.Certificate, 200)
	for range 4 {
		wg.Go(func() {
			for range 50 {
				chain, err := ca.Sign(certs.SignRequest{CSR: csr, ID: idA})
				if err != nil {
					t.Error(err)
					return
				}
				_ = ca.Bundle()
				_ = ca.BundlePEM()
				if _, err := ca.Material(); err != nil {
					t.Error(err)
				}
				chains <- chain
			}
		})
	}
	for _, step := range []func() error{ca.PrepareRoot, ca.RenewIntermediate, ca.ActivateRoot, ca.RenewIntermediate} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(chains)
	bundle := ca.Bundle()
	for chain := range chains {
		if err := verifies(chain, bundle, clock.Now()); err != nil {
			t.Fatalf("SVID signed during rotation: %v", err)
		}
	}
}
