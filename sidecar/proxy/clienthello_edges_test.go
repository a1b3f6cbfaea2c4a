package proxy

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// The edges of the ClientHello reader, each where crypto/tls's server
// draws it: what is refused is refused at the first byte that shows it,
// what crypto/tls accepts at its limit is read.

// warningAlert is a user_canceled warning alert record, which crypto/tls
// skips before a ClientHello.
var warningAlert = []byte{recordTypeAlert, 3, 1, 0, 2, 1, 90}

// TestHelloRefusedAtTheFirstByteThatShowsIt: bytes that can no longer be
// a ClientHello are an error as soon as they arrive, not a request for
// more, so sniffing decides at once instead of waiting for its deadline.
func TestHelloRefusedAtTheFirstByteThatShowsIt(t *testing.T) {
	evil := smallHello(t, "evil.example.com")
	firstOfTwo := splitRecords(evil, 4)[:9] // a whole record holding the handshake header alone
	for name, b := range map[string][]byte{
		"application data record after a record": append(slices.Clone(firstOfTwo), 0x17),
		"record version 16.x, two bytes":         {recordTypeHandshake, 0x10},
		"handshake type 2 in a record begun":     {recordTypeHandshake, 3, 1, 0, 10, 2},
		"length over 64 KiB in a record begun":   {recordTypeHandshake, 3, 1, 0, 10, 1, 1, 0, 1},
		"length over 64 KiB across two records":  {recordTypeHandshake, 3, 1, 0, 1, 1, recordTypeHandshake, 3, 1, 0, 10, 1, 0, 1},
		"an empty ClientHello body":              {recordTypeHandshake, 3, 1, 0, 4, 1, 0, 0, 0},
	} {
		_, err := parseClientHello(b)
		if err == nil || errors.Is(err, errShortHello) {
			t.Errorf("%s (%x): %v, want an error", name, b, err)
		}
	}
}

// TestHelloAtCryptoTLSLimits: a record of exactly 16 KiB, a handshake
// message announced at exactly 64 KiB, 16 warning alerts in a row and a
// header split a byte into its second record are all still a ClientHello
// (being read, or read).
func TestHelloAtCryptoTLSLimits(t *testing.T) {
	big := withExtension(t, smallHello(t, "big.example.com"), 0xff02, make([]byte, 20000))
	if _, err := parseClientHello(big); err == nil {
		t.Fatalf("the %d-byte hello in one record parses: the record limit is not checked", len(big))
	}
	full := fragment(big, maxRecordPlaintext) // the first record carries exactly 16 KiB
	if h, err := parseClientHello(full); err != nil || h.serverName != "big.example.com" {
		t.Fatalf("hello in records of 16 KiB: %+v %v", h, err)
	}

	alerts := append(bytes.Repeat(warningAlert, maxUselessRecords), smallHello(t, "evil.example.com")...)
	if h, err := parseClientHello(alerts); err != nil || h.serverName != "evil.example.com" {
		t.Fatalf("16 warning alerts, then a hello: %+v %v", h, err)
	}

	for name, b := range map[string][]byte{
		"a message of exactly 64 KiB, begun":           {recordTypeHandshake, 3, 1, 0x40, 0, 1, 1, 0, 0},
		"a header a byte into its second record":       {recordTypeHandshake, 3, 1, 0, 1, 1, recordTypeHandshake, 3, 1, 0, 10, 0, 1, 0},
		"a header two bytes into its second record":    {recordTypeHandshake, 3, 1, 0, 2, 1, 0, recordTypeHandshake, 3, 1, 0, 10, 1},
		"a record header and the handshake type alone": {recordTypeHandshake, 3, 1, 0, 10, 1},
	} {
		if _, err := parseClientHello(b); !errors.Is(err, errShortHello) {
			t.Errorf("%s (%x): %v, want errShortHello", name, b, err)
		}
	}
}

// TestServerNameLowerCasesLettersOnly: server_name is lower-cased as
// crypto/tls does, A to Z and nothing else.
func TestServerNameLowerCasesLettersOnly(t *testing.T) {
	if got, want := asciiLower("AZaz@[`{09-_.\xc3\x84"), "azaz@[`{09-_.\xc3\x84"; got != want {
		t.Fatalf("asciiLower: %q, want %q", got, want)
	}
	h, err := parseClientHello(withExtension(t, smallHello(t, ""), extServerName, sniExt("ZULU-9_0.AZ.example")))
	if err != nil || h.serverName != "zulu-9_0.az.example" || h.badName != "" {
		t.Fatalf("%+v %v", h, err)
	}
}

// TestIsDNSNameBounds: letters, digits, '-' and '_' in labels of 1 to 63
// bytes, 253 bytes in all; a byte beside each range is not a DNS name.
func TestIsDNSNameBounds(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Repeat(strings.Repeat("b", 49)+".", 5) + "bbb" // 6 labels
	for _, s := range []string{"az09-_", "a.z", "0.9", "-", "_", label63 + ".example", name253} {
		if !isDNSName(s) {
			t.Errorf("isDNSName(%q, %d bytes) = false, want true", s, len(s))
		}
	}
	for _, s := range []string{"", "a..b", ".a", "a.", label63 + "a.example", name253 + "b",
		"a`", "a{", "a/", "a:", "a@", "a[", "A", "a b", "a\x00"} {
		if isDNSName(s) {
			t.Errorf("isDNSName(%q, %d bytes) = true, want false", s, len(s))
		}
	}
}
