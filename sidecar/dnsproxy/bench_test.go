package dnsproxy

import (
	"context"
	"net"
	"testing"
)

// BenchmarkLookup: what the DNS proxy adds to an app's lookup. Go's stub
// resolver looks up api.example.test (A and AAAA, as an app's "ip" lookup
// does) against the test nameserver on loopback: direct is the
// nameserver alone (the baseline of the same run), proxy goes through the
// sidecar's DNS proxy, which forwards, records the answer in the name
// table and relays it. ns/op is one lookup.
func BenchmarkLookup(b *testing.B) {
	r := newRig(b, nil)
	for _, via := range []string{"direct", "proxy"} {
		addr := r.up.addr.String()
		if via == "proxy" {
			addr = r.udp
		}
		res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
		b.Run(via, func(b *testing.B) {
			ctx := context.Background()
			for range b.N {
				addrs, err := res.LookupNetIP(ctx, "ip", "api.example.test")
				if err != nil || len(addrs) != 2 {
					b.Fatalf("lookup via %s: %v %v", via, addrs, err)
				}
			}
		})
	}
}
