package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h
// (the same number as SO_ORIGINAL_DST, at level SOL_IPV6).
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination a redirected connection was addressed
// to before Install's rules rewrote it: for a connection accepted on the
// outbound port, the remote service; for one accepted on the inbound port,
// the pod IP and the app's port. It asks the connection's conntrack entry
// (getsockopt SO_ORIGINAL_DST, or IP6T_SO_ORIGINAL_DST for IPv6). IPv4
// connections accepted on a dual-stack [::] listener are handled (the result
// is a plain IPv4 address). A connection that was not redirected returns its
// own local address; without a conntrack entry (no nat rules in the
// namespace) the error wraps ENOENT.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	if c == nil {
		return netip.AddrPort{}, errors.New("capture: OriginalDst: nil connection")
	}
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok || local == nil {
		return netip.AddrPort{}, errors.New("capture: OriginalDst: connection has no local TCP address")
	}
	v4 := local.AddrPort().Addr().Unmap().Is4()
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("capture: OriginalDst: %w", err)
	}
	var (
		dst    netip.AddrPort
		sysErr error
	)
	err = raw.Control(func(fd uintptr) {
		if v4 {
			dst, sysErr = originalDst4(int(fd))
		} else {
			dst, sysErr = originalDst6(int(fd))
		}
	})
	if err == nil {
		err = sysErr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("capture: OriginalDst of %s: %w", local, err)
	}
	return dst, nil
}

func originalDst4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	if err := getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), unix.SizeofSockaddrInet4); err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt(SOL_IP, SO_ORIGINAL_DST): %w", err)
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

func originalDst6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), unix.SizeofSockaddrInet6); err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST): %w", err)
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), nil
}

func getsockopt(fd, level, name int, p unsafe.Pointer, size uint32) error {
	l := size
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
