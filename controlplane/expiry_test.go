package controlplane

import (
	"net"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestConnectionClosedWhenClientCertificateExpires: a connection is closed
// at its client certificate's NotAfter on the control plane's clock, not
// before; one closed earlier stops its timer.
func TestConnectionClosedWhenClientCertificateExpires(t *testing.T) {
	clk := testutil.FakeClock(t)
	server, client := net.Pipe()
	defer client.Close()
	notAfter := clk.Now().Add(time.Hour)
	conn := closeAt(server, notAfter, clk)
	closed := make(chan struct{})
	go func() {
		_, _ = client.Read(make([]byte, 1)) // returns when the server end closes
		close(closed)
	}()
	clk.SetTime(notAfter.Add(-time.Second))
	select {
	case <-closed:
		t.Fatal("closed before the certificate expired")
	case <-time.After(50 * time.Millisecond):
	}
	clk.SetTime(notAfter.Add(time.Second))
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("not closed after the certificate expired")
	}
	_ = conn.Close()

	s2, c2 := net.Pipe()
	defer c2.Close()
	early := closeAt(s2, clk.Now().Add(time.Hour), clk)
	if err := early.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the timer of a closed connection to stop", func() bool { return !clk.HasWaiters() })
}
