package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

func TestDrainLetsOpenConnectionsFinish(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	c := mp.dial()
	roundTrip(t, c, []byte("before drain"))
	mp.b.stop() // SIGTERM
	// New connections are refused once the listener is closed...
	deadline := time.Now().Add(5 * time.Second)
	for {
		nc, err := net.Dial("tcp", mp.b.inboundAddr().String())
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("inbound listener still accepting while draining")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// ...the open one keeps working until it is done.
	roundTrip(t, c, []byte("during drain"))
	select {
	case err := <-mp.b.done:
		t.Fatalf("Run returned (%v) with a connection open", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.CloseWrite()
	select {
	case err := <-mp.b.done:
		if err != nil {
			t.Fatal(err)
		}
		mp.b.done <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return once the last connection closed")
	}
}

func TestDrainTimeoutClosesConnections(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	ext := startApp(t, nil)
	a := startPod(t, ca, workloadID("shop", "frontend"), func(c *Config) { c.DrainTimeout = 200 * time.Millisecond })
	a.cfg.Store(meshConfig(nil, nil, nil, false))
	c := a.dialOutbound(ext.addr())
	roundTrip(t, c, []byte("held open"))
	start := time.Now()
	a.stop()
	select {
	case <-a.done:
		a.done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after DrainTimeout")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("returned after %v, before DrainTimeout", d)
	}
	expectClosed(t, c)
}

func TestNoChainAndAdmin(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	a := startPod(t, ca, workloadID("shop", "frontend"))
	// No configuration yet: refused.
	expectClosed(t, a.dialOutbound(netip.MustParseAddrPort("198.18.9.9:443")))
	a.waitCounter(1, "connection_failures", outbound, "no_config")
	cfg := meshConfig(nil, nil, nil, false)
	cfg.Outbound.Default = nil
	a.cfg.Store(cfg)
	expectClosed(t, a.dialOutbound(netip.MustParseAddrPort("198.18.9.9:443")))
	a.waitCounter(1, "connection_failures", outbound, "no_chain")

	resp, err := http.Get("http://" + a.p.AdminAddr().String() + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dump struct {
		Versions map[string]string
		Clusters []struct{ Name, Kind string }
		Outbound struct{ Chains []struct{ Name string } }
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		t.Fatal(err)
	}
	if dump.Versions["type.googleapis.com/envoy.config.listener.v3.Listener"] != "1" || len(dump.Clusters) != 4 ||
		dump.Clusters[0].Name != "BlackHoleCluster" || dump.Clusters[0].Kind != "BLACKHOLE" || len(dump.Outbound.Chains) != 4 {
		t.Fatalf("config_dump %+v", dump)
	}

	// No profiles unless asked for: the app shares the admin port.
	resp, err = http.Get("http://" + a.p.AdminAddr().String() + "/debug/pprof/profile?seconds=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/debug/pprof/profile without Pprof: %s, want 404", resp.Status)
	}
	// With Pprof, the heap profile, in its text form, names the proxy's
	// own functions.
	b := startPod(t, ca, workloadID("shop", "frontend"), func(c *Config) { c.Pprof = true })
	resp, err = http.Get("http://" + b.p.AdminAddr().String() + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("# HeapInuse = ")) {
		t.Fatalf("/debug/pprof/heap: %s\n%.300s", resp.Status, body)
	}
}
