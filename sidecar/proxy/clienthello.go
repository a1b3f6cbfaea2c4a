package proxy

import (
	"errors"
	"fmt"
	"strings"
)

const (
	recordTypeHandshake      = 0x16
	handshakeTypeClientHello = 0x01
	extServerName            = 0
	extALPN                  = 16
)

// errShortHello: the bytes so far are a valid beginning of a ClientHello;
// more are needed.
var errShortHello = errors.New("proxy: ClientHello incomplete")

// clientHello is what the sidecar needs of a TLS ClientHello.
type clientHello struct {
	serverName string // lowercase; "" when absent
	alpn       []string
}

// parseClientHello parses the TLS ClientHello at the start of b (TLS
// records, the handshake message possibly spread over several of them)
// without consuming anything. It returns errShortHello when b is a valid
// prefix that ends too soon.
func parseClientHello(b []byte) (clientHello, error) {
	// Reassemble the handshake message from the records' fragments.
	var msg []byte
	for {
		if len(b) < 5 {
			return clientHello{}, errShortHello
		}
		if b[0] != recordTypeHandshake {
			return clientHello{}, fmt.Errorf("proxy: ClientHello: record type %d, want handshake", b[0])
		}
		if b[1] != 3 {
			return clientHello{}, fmt.Errorf("proxy: ClientHello: record version %d.%d", b[1], b[2])
		}
		n := int(b[3])<<8 | int(b[4])
		if n == 0 || n > 1<<14 {
			return clientHello{}, fmt.Errorf("proxy: ClientHello: record length %d", n)
		}
		if len(b) < 5+n {
			msg = append(msg, b[5:]...)
			if len(msg) >= 4 && msg[0] != handshakeTypeClientHello {
				return clientHello{}, fmt.Errorf("proxy: ClientHello: handshake type %d", msg[0])
			}
			return clientHello{}, errShortHello
		}
		msg = append(msg, b[5:5+n]...)
		b = b[5+n:]
		if len(msg) < 4 {
			continue
		}
		if msg[0] != handshakeTypeClientHello {
			return clientHello{}, fmt.Errorf("proxy: ClientHello: handshake type %d", msg[0])
		}
		l := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
		if l > maxSniff {
			return clientHello{}, fmt.Errorf("proxy: ClientHello: length %d too large", l)
		}
		if len(msg) >= 4+l {
			return parseHelloBody(msg[4 : 4+l])
		}
	}
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
	h, err := parseHelloFields(body)
	if err != nil {
		return clientHello{}, err
	}
	return h, nil
}

func parseHelloFields(body []byte) (clientHello, error) {
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
			h.serverName, err = parseSNI(data)
		case extALPN:
			h.alpn, err = parseALPN(data)
		}
		if err != nil {
			return h, err
		}
	}
	if r.bad || exts.bad {
		return h, errors.New("proxy: ClientHello: truncated extensions")
	}
	return h, nil
}

func parseSNI(r *reader) (string, error) {
	list := r.vector(2)
	for len(list.b) > 0 && !list.bad {
		typ := list.uint(1)
		name := list.vector(2)
		if typ != 0 || list.bad {
			continue // only host_name (0) is defined
		}
		s := string(name.b)
		if s == "" || len(s) > 255 || strings.ContainsFunc(s, func(c rune) bool { return c <= ' ' || c >= 0x7f }) {
			return "", fmt.Errorf("proxy: ClientHello: bad server_name %q", s)
		}
		return strings.ToLower(strings.TrimSuffix(s, ".")), nil
	}
	if list.bad || r.bad {
		return "", errors.New("proxy: ClientHello: truncated server_name")
	}
	return "", nil
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
