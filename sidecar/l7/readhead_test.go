package l7

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestReadHead: readHead returns a response head up to and with its empty
// line, leaving what follows (the tunnel's first bytes) in the reader;
// lines longer than the reader's buffer are read whole; a head over the
// limit and a stream that ends inside a head are errors. From a finite
// reader, so a readHead that missed the empty line reads on to the end
// and fails here, rather than waiting on a live connection for ever.
func TestReadHead(t *testing.T) {
	long := "X-Long: " + strings.Repeat("a", 100) + "\r\n" // longer than the 16-byte buffer below
	for _, tc := range []struct {
		name, in, head, rest string
		limit                int
		err                  error
	}{
		{name: "head and tunnel bytes", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\nhello",
			head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n", rest: "hello", limit: 1 << 10},
		{name: "bare LF lines", in: "HTTP/1.1 200 OK\nA: b\n\nrest",
			head: "HTTP/1.1 200 OK\nA: b\n\n", rest: "rest", limit: 1 << 10},
		{name: "a line over the buffer", in: "HTTP/1.1 101 Switching Protocols\r\n" + long + "\r\nafter",
			head: "HTTP/1.1 101 Switching Protocols\r\n" + long + "\r\n", rest: "after", limit: 1 << 10},
		{name: "exactly the limit", in: "HTTP/1.1 200 OK\r\n\r\nx",
			head: "HTTP/1.1 200 OK\r\n\r\n", rest: "x", limit: len("HTTP/1.1 200 OK\r\n\r\n")},
		{name: "one byte over the limit", in: "HTTP/1.1 200 OK\r\n\r\n",
			limit: len("HTTP/1.1 200 OK\r\n\r\n") - 1, err: errHeadTooLarge},
		{name: "a line over the limit", in: "HTTP/1.1 101 Switching Protocols\r\n" + long + "\r\n",
			limit: 64, err: errHeadTooLarge},
		{name: "ends inside the head", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n",
			limit: 1 << 10, err: io.ErrUnexpectedEOF},
		{name: "ends inside a line", in: "HTTP/1.1 101 Swi", limit: 1 << 10, err: io.ErrUnexpectedEOF},
		{name: "nothing", in: "", limit: 1 << 10, err: io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tc.in), 16)
			head, err := readHead(br, tc.limit)
			if !errors.Is(err, tc.err) {
				t.Fatalf("readHead = %q, %v; want error %v", head, err, tc.err)
			}
			if tc.err != nil {
				return
			}
			if string(head) != tc.head {
				t.Errorf("head = %q, want %q", head, tc.head)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tc.rest {
				t.Errorf("left in the reader: %q, want %q", rest, tc.rest)
			}
		})
	}
}
