//go:build e2e

package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// A capture read the way a reviewer would read it in Wireshark: packets
// decoded, TCP streams put back together, and the bytes of each stream
// parsed as TLS records, so "the traffic is TLS 1.3" is a statement about
// the flow in question, not about two bytes somewhere in the file.

// flowKey names one direction of a TCP connection.
type flowKey struct {
	src, dst netip.AddrPort
}

func (k flowKey) String() string { return k.src.String() + " > " + k.dst.String() }

// tcpStream is one direction's bytes, reassembled from the capture.
type tcpStream struct {
	key      flowKey
	isn      uint32 // the SYN's sequence number
	sawSYN   bool
	segments map[uint32][]byte // by sequence number; "any" sees a packet once per interface
}

// bytes returns the stream from its first byte (ISN+1) as far as it is
// contiguous, and whether it is contiguous to the end of what was captured.
func (s *tcpStream) bytes() ([]byte, bool) {
	if !s.sawSYN {
		return nil, false
	}
	seqs := make([]uint32, 0, len(s.segments))
	for q := range s.segments {
		seqs = append(seqs, q)
	}
	rel := func(q uint32) uint32 { return q - (s.isn + 1) }
	slices.SortFunc(seqs, func(a, b uint32) int { return int(int64(rel(a)) - int64(rel(b))) })
	var out []byte
	for _, q := range seqs {
		off, seg := rel(q), s.segments[q]
		switch {
		case int(off) > len(out):
			return out, false // a gap: a segment was not captured
		case int(off)+len(seg) <= len(out):
			continue // a retransmission already covered
		default:
			out = append(out, seg[len(out)-int(off):]...)
		}
	}
	return out, true
}

// parsePcap decodes a classic pcap file (either byte order, micro- or
// nanosecond stamps) of link type LINUX_SLL or LINUX_SLL2 (tcpdump -i any)
// or Ethernet, IPv4 and IPv6, into TCP streams.
func parsePcap(b []byte) (map[flowKey]*tcpStream, error) {
	if len(b) < 24 {
		return nil, fmt.Errorf("pcap: %d bytes, no file header", len(b))
	}
	var bo binary.ByteOrder
	switch m := binary.LittleEndian.Uint32(b); m {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("pcap: magic %#x", m)
	}
	link := bo.Uint32(b[20:]) & 0xffff
	streams := map[flowKey]*tcpStream{}
	for off := 24; off < len(b); {
		if off+16 > len(b) {
			return nil, fmt.Errorf("pcap: truncated record header at %d", off)
		}
		incl, orig := int(bo.Uint32(b[off+8:])), int(bo.Uint32(b[off+12:]))
		off += 16
		if off+incl > len(b) {
			return nil, fmt.Errorf("pcap: truncated packet at %d", off)
		}
		if incl < orig {
			return nil, fmt.Errorf("pcap: packet cut to %d of %d bytes (snap length)", incl, orig)
		}
		pkt := b[off : off+incl]
		off += incl
		var proto uint16
		switch link {
		case 113: // LINUX_SLL
			if len(pkt) < 16 {
				continue
			}
			proto, pkt = binary.BigEndian.Uint16(pkt[14:]), pkt[16:]
		case 276: // LINUX_SLL2
			if len(pkt) < 20 {
				continue
			}
			proto, pkt = binary.BigEndian.Uint16(pkt[0:]), pkt[20:]
		case 1: // Ethernet
			if len(pkt) < 14 {
				continue
			}
			proto, pkt = binary.BigEndian.Uint16(pkt[12:]), pkt[14:]
		default:
			return nil, fmt.Errorf("pcap: link type %d", link)
		}
		var src, dst netip.Addr
		switch proto {
		case 0x0800:
			if len(pkt) < 20 || pkt[9] != 6 {
				continue
			}
			ihl, total := int(pkt[0]&0x0f)*4, int(binary.BigEndian.Uint16(pkt[2:]))
			if total > len(pkt) || ihl < 20 || ihl > total {
				continue
			}
			src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
			pkt = pkt[ihl:total]
		case 0x86dd:
			if len(pkt) < 40 || pkt[6] != 6 { // no extension headers on these flows
				continue
			}
			plen := int(binary.BigEndian.Uint16(pkt[4:]))
			if 40+plen > len(pkt) {
				continue
			}
			src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
			pkt = pkt[40 : 40+plen]
		default:
			continue
		}
		if len(pkt) < 20 {
			continue
		}
		doff := int(pkt[12]>>4) * 4
		if doff < 20 || doff > len(pkt) {
			continue
		}
		k := flowKey{netip.AddrPortFrom(src, binary.BigEndian.Uint16(pkt[0:])), netip.AddrPortFrom(dst, binary.BigEndian.Uint16(pkt[2:]))}
		seq, flags := binary.BigEndian.Uint32(pkt[4:]), pkt[13]
		s := streams[k]
		if s == nil || (flags&0x02 != 0 && s.sawSYN && s.isn != seq) { // a new connection on a reused 4-tuple replaces the old
			s = &tcpStream{key: k, segments: map[uint32][]byte{}}
			streams[k] = s
		}
		if flags&0x02 != 0 { // SYN
			s.isn, s.sawSYN = seq, true
		}
		if payload := pkt[doff:]; len(payload) > 0 {
			if _, dup := s.segments[seq]; !dup {
				s.segments[seq] = bytes.Clone(payload)
			}
		}
	}
	return streams, nil
}

// tlsFlow is what the records of one connection show.
type tlsFlow struct {
	ClientHello, ServerHello bool
	Version                  uint16 // the version the ServerHello selected (supported_versions in TLS 1.3)
	AppRecords               int    // application_data records, both directions
	Plain                    int    // bytes outside TLS records (0 for a TLS flow)
}

var errNotTLS = errors.New("not TLS")

// readTLS parses a client-to-server and a server-to-client byte stream as
// TLS records: the first client record a ClientHello, the first server
// record a ServerHello, and nothing but records after that.
func readTLS(c2s, s2c []byte) (tlsFlow, error) {
	var f tlsFlow
	for dir, stream := range [][]byte{c2s, s2c} {
		first := true
		for len(stream) > 0 {
			if len(stream) < 5 {
				return f, fmt.Errorf("%w: %d trailing bytes", errNotTLS, len(stream))
			}
			typ, ver, n := stream[0], binary.BigEndian.Uint16(stream[1:]), int(binary.BigEndian.Uint16(stream[3:]))
			if typ < 20 || typ > 23 || ver>>8 != 3 || n > 1<<14+256 {
				return f, fmt.Errorf("%w: record header % x", errNotTLS, stream[:5])
			}
			if 5+n > len(stream) {
				return f, fmt.Errorf("%w: record of %d bytes cut at %d", errNotTLS, n, len(stream)-5)
			}
			body := stream[5 : 5+n]
			stream = stream[5+n:]
			if first {
				first = false
				if typ != 22 || len(body) < 4 {
					return f, fmt.Errorf("%w: first record of type %d", errNotTLS, typ)
				}
				switch {
				case dir == 0 && body[0] == 1:
					f.ClientHello = true
				case dir == 1 && body[0] == 2:
					f.ServerHello = true
					f.Version = serverHelloVersion(body)
				default:
					return f, fmt.Errorf("%w: first handshake message %d", errNotTLS, body[0])
				}
				continue
			}
			if typ == 23 {
				f.AppRecords++
			}
		}
	}
	return f, nil
}

// serverHelloVersion reads the version a ServerHello handshake message
// selects: supported_versions (43) if present, else legacy_version.
func serverHelloVersion(hs []byte) uint16 {
	// type(1) len(3) legacy_version(2) random(32) session_id(1+n) cipher(2) compression(1) extensions(2+...)
	p := hs[4:]
	if len(p) < 35 {
		return 0
	}
	legacy := binary.BigEndian.Uint16(p)
	p = p[34:]
	sid := int(p[0])
	if len(p) < 1+sid+3+2 {
		return legacy
	}
	p = p[1+sid+3:]
	ext := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	if ext > len(p) {
		return legacy
	}
	for p = p[:ext]; len(p) >= 4; {
		typ, n := binary.BigEndian.Uint16(p), int(binary.BigEndian.Uint16(p[2:]))
		if 4+n > len(p) {
			break
		}
		if typ == 43 && n == 2 {
			return binary.BigEndian.Uint16(p[4:])
		}
		p = p[4+n:]
	}
	return legacy
}

// connsBetween returns the captured connections that a opened to b: each
// as its client-to-server and server-to-client streams.
func connsBetween(streams map[flowKey]*tcpStream, a, b netip.Addr) [][2]*tcpStream {
	var out [][2]*tcpStream
	for k, s := range streams {
		if k.src.Addr() != a || k.dst.Addr() != b || !s.sawSYN {
			continue
		}
		back := streams[flowKey{k.dst, k.src}]
		if back == nil {
			back = &tcpStream{key: flowKey{k.dst, k.src}, segments: map[uint32][]byte{}}
		}
		out = append(out, [2]*tcpStream{s, back})
	}
	return out
}
