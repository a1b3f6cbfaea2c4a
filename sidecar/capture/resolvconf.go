package capture

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
)

// maxResolvConfLine bounds one line of resolv.conf; glibc reads lines of up
// to 8 KiB.
const maxResolvConfLine = 64 << 10

// ParseResolvConf returns the nameservers of a resolv.conf(5), in file
// order without duplicates: the address of every `nameserver ADDR` line.
// Other keywords (search, domain, options, sortlist, ...) and comment lines
// (first character # or ;) are ignored, and so is anything after the
// address on a nameserver line, as glibc does. An IPv6 zone
// (fe80::1%eth0) is dropped and an IPv4-mapped IPv6 address becomes the
// IPv4 address, as the rule set matches them. A file without nameserver
// lines returns nil (glibc then asks 127.0.0.1, which is never captured).
//
// Unlike glibc, which skips a nameserver it cannot parse, a nameserver
// line without a valid IP address is an error naming the line, as is a
// file with more than MaxDNSServers distinct nameservers: a resolv.conf
// weft does not understand should not half-configure DNS capture.
func ParseResolvConf(r io.Reader) ([]netip.Addr, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxResolvConfLine)
	var out []netip.Addr
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "nameserver" {
			continue // blank, comment (# and ; are never "nameserver"), other keyword
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("capture: resolv.conf line %d: nameserver without an address", n)
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			return nil, fmt.Errorf("capture: resolv.conf line %d: nameserver %q: not an IP address", n, f[1])
		}
		a = a.WithZone("").Unmap()
		if slices.Contains(out, a) {
			continue
		}
		if len(out) == MaxDNSServers {
			return nil, fmt.Errorf("capture: resolv.conf line %d: more than %d nameservers", n, MaxDNSServers)
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("capture: resolv.conf: a line is longer than %d bytes", maxResolvConfLine)
		}
		return nil, fmt.Errorf("capture: read resolv.conf: %w", err)
	}
	return out, nil
}
