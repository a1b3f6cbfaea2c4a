package proxy

import (
	"errors"
	"fmt"
	"strings"
)

const (
	recordTypeAlert          = 0x15
	recordTypeHandshake      = 0x16
	handshakeTypeClientHello = 0x01
	extServerName            = 0
	extALPN                  = 16
	// extECH is encrypted_client_hello: the server_name beside it is the
	// outer (public) name, the name the client means is encrypted.
	extECH = 0xfe0d

	// As crypto/tls's server: a record carries at most 16 KiB, a handshake
	// message at most 64 KiB, and at most 16 ignored records (warning
	// alerts) come in a row.
	maxRecordPlaintext = 1 << 14
	maxHandshakeMsg    = 1 << 16
	maxUselessRecords  = 16
)

// errShortHello: the bytes so far are a valid beginning of a ClientHello;
// more are needed.
var errShortHello = errors.New("proxy: ClientHello incomplete")

// clientHello is what the sidecar needs of a TLS ClientHello.
type clientHello struct {
	// serverName is the host_name of server_name as crypto/tls's
	// ClientHelloInfo.ServerName has it, in ASCII lower case and without a
	// trailing dot; "" when absent.
	serverName string
	alpn       []string
	// ech: the hello carries encrypted_client_hello, so serverName is only
	// the outer, public name.
	ech bool
	// badName, when set, says why serverName cannot be taken as the name
	// the client means (several host names, bytes no DNS name has).
	badName string
}

// parseClientHello parses the TLS ClientHello at the start of b (TLS
// records, the handshake message possibly spread over several of them)
// without consuming anything. It returns errShortHello when b is a valid
// prefix that ends too soon.
func parseClientHello(b []byte) (clientHello, error) {
	var r helloReader
	return r.read(b)
}

// helloReader reassembles a ClientHello from TLS records as crypto/tls's
// server reads them: records of type handshake (or warning alerts, which
// it skips), any record version below 0x1000 (it checks no more before it
// has chosen a version), 1 to 16 KiB each, the message of at most 64 KiB
// in as many records as the client likes. read is called again with the
// same bytes and more: it only looks at records it has not consumed, so a
// hello trickled a byte at a time costs linear time. The zero value is
// ready.
type helloReader struct {
	off     int    // where the next record header starts
	msg     []byte // the handshake bytes of the records consumed
	useless int    // warning alerts in a row
}

func (h *helloReader) read(b []byte) (clientHello, error) {
	for {
		rec := b[h.off:]
		if len(rec) >= 1 && rec[0] != recordTypeHandshake && rec[0] != recordTypeAlert {
			return clientHello{}, fmt.Errorf("proxy: ClientHello: record type %d, want handshake", rec[0])
		}
		if len(rec) >= 2 && rec[1] >= 0x10 {
			return clientHello{}, fmt.Errorf("proxy: ClientHello: record version %#02x..", rec[1])
		}
		if len(rec) < 5 {
			return clientHello{}, errShortHello
		}
		n := int(rec[3])<<8 | int(rec[4])
		if n == 0 || n > maxRecordPlaintext {
			return clientHello{}, fmt.Errorf("proxy: ClientHello: record length %d", n)
		}
		if len(rec) < 5+n {
			if rec[0] == recordTypeHandshake {
				if err := checkHelloHeader(h.msg, rec[5:]); err != nil {
					return clientHello{}, err
				}
			}
			return clientHello{}, errShortHello
		}
		data := rec[5 : 5+n]
		h.off += 5 + n
		if rec[0] == recordTypeAlert {
			// crypto/tls drops warning alerts other than close_notify
			// before it has chosen a version; anything else ends the
			// handshake.
			if n != 2 || data[0] != 1 || data[1] == 0 {
				return clientHello{}, fmt.Errorf("proxy: ClientHello: alert %v", data)
			}
			if h.useless++; h.useless > maxUselessRecords {
				return clientHello{}, errors.New("proxy: ClientHello: too many ignored records")
			}
			continue
		}
		h.useless = 0
		h.msg = append(h.msg, data...)
		if err := checkHelloHeader(h.msg, nil); err != nil {
			return clientHello{}, err
		}
		if len(h.msg) >= 4 {
			if l := int(h.msg[1])<<16 | int(h.msg[2])<<8 | int(h.msg[3]); len(h.msg) >= 4+l {
				return parseHelloBody(h.msg[4 : 4+l])
			}
		}
	}
}

// checkHelloHeader checks the handshake message header in msg followed by
// more, as far as it goes.
func checkHelloHeader(msg, more []byte) error {
	at := func(i int) byte {
		if i < len(msg) {
			return msg[i]
		}
		return more[i-len(msg)]
	}
	have := len(msg) + len(more)
	if have >= 1 && at(0) != handshakeTypeClientHello {
		return fmt.Errorf("proxy: ClientHello: handshake type %d", at(0))
	}
	if have >= 4 {
		if l := int(at(1))<<16 | int(at(2))<<8 | int(at(3)); l > maxHandshakeMsg {
			return fmt.Errorf("proxy: ClientHello: length %d too large", l)
		}
	}
	return nil
}

// reader is a bounds-checked cursor over a byte slice.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) uint(n int) int {
	v := 0
	for _, c := range r.bytes(n) {
		v = v<<8 | int(c)
	}
	return v
}

// vector reads a length-prefixed vector whose length takes n bytes.
func (r *reader) vector(n int) *reader {
	b := r.bytes(r.uint(n))
	return &reader{b: b, bad: r.bad}
}

func parseHelloBody(body []byte) (clientHello, error) {
	var h clientHello
	r := &reader{b: body}
	r.bytes(2 + 32) // legacy_version, random
	r.vector(1)     // legacy_session_id
	r.vector(2)     // cipher_suites
	r.vector(1)     // legacy_compression_methods
	if r.bad {
		return h, errors.New("proxy: ClientHello: truncated")
	}
	if len(r.b) == 0 {
		return h, nil // no extensions
	}
	exts := r.vector(2)
	seen := map[int]bool{}
	for len(exts.b) > 0 && !exts.bad {
		typ := exts.uint(2)
		data := exts.vector(2)
		if exts.bad {
			break
		}
		if seen[typ] {
			return h, fmt.Errorf("proxy: ClientHello: duplicate extension %d", typ)
		}
		seen[typ] = true
		var err error
		switch typ {
		case extServerName:
			h.serverName, h.badName, err = parseSNI(data)
		case extALPN:
			h.alpn, err = parseALPN(data)
		case extECH:
			h.ech = true
		}
		if err != nil {
			return clientHello{}, err
		}
	}
	if r.bad || exts.bad {
		return clientHello{}, errors.New("proxy: ClientHello: truncated extensions")
	}
	return h, nil
}

// parseSNI returns the host_name of a server_name extension as crypto/tls
// reads it (other name types skipped), and why it cannot be trusted as
// the name the client means, if so.
func parseSNI(r *reader) (name, bad string, err error) {
	list := r.vector(2)
	if list.bad || r.bad || len(list.b) == 0 {
		return "", "", errors.New("proxy: ClientHello: truncated server_name")
	}
	hostNames := 0
	for len(list.b) > 0 {
		typ := list.uint(1)
		v := list.vector(2)
		if list.bad || len(v.b) == 0 {
			return "", "", errors.New("proxy: ClientHello: truncated server_name")
		}
		if typ != 0 {
			continue // only host_name (0) is defined
		}
		if hostNames++; hostNames == 1 {
			name = string(v.b)
		}
	}
	if hostNames > 1 {
		bad = fmt.Sprintf("%d host names in server_name", hostNames)
	}
	name = strings.TrimSuffix(asciiLower(name), ".")
	if bad == "" && name != "" && !isDNSName(name) {
		bad = fmt.Sprintf("server_name %q is not a DNS name", name)
	}
	return name, bad, nil
}

func parseALPN(r *reader) ([]string, error) {
	list := r.vector(2)
	var out []string
	for len(list.b) > 0 && !list.bad {
		p := list.vector(1)
		if len(p.b) == 0 {
			return nil, errors.New("proxy: ClientHello: empty ALPN protocol")
		}
		out = append(out, string(p.b))
	}
	if list.bad || r.bad {
		return nil, errors.New("proxy: ClientHello: truncated ALPN")
	}
	return out, nil
}

// asciiLower lower-cases ASCII letters only, leaving every other byte as
// it is.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// isDNSName: at most 253 bytes of letters, digits, '-', '_' and dots,
// no empty label. (Lower case: the caller lower-cased it.)
func isDNSName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := range len(label) {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
