package capture

import (
	"os"
	"testing"

	"github.com/weftmesh/weft/internal/testutil/netnstest"
)

// netns is a fresh network namespace (internal/testutil/netnstest): Do
// runs functions on its thread, so sockets opened inside Do live in it.
type netns = netnstest.NS

// newNetns returns a fresh namespace with lo up, or skips the test when not
// root or when the kernel cannot create one.
func newNetns(t testing.TB, name string) *netns { return netnstest.New(t, name) }

// veth connects two namespaces: a gets cidrsA on "veth-<a.Name>", b gets
// cidrsB on "veth-<b.Name>"; both ends up.
func veth(t testing.TB, a *netns, cidrsA []string, b *netns, cidrsB []string) {
	t.Helper()
	netnstest.Veth(t, a, cidrsA, b, cidrsB)
}

// needIPv6 skips the test on a kernel without IPv6.
func needIPv6(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("no IPv6 in this kernel")
	}
}
