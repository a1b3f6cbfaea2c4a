package l7

import (
	"io"
	"strings"
	"testing"
)

// Each try's view of a body gives its bytes and then io.EOF, making
// progress on every read, the first try from the app's body and a retry
// from the recorded bytes alike: a transport reads a body until EOF, and
// a read of 0 bytes without an error would keep it reading forever. (Its
// file sorts first: a mutation run's go test -failfast stops at its
// failure, before the tests that such a body would hang.)
func TestReplayViewsEndWithEOF(t *testing.T) {
	b := newReplayBody(io.NopCloser(strings.NewReader("hello world")), 64)
	for try := range 2 {
		v, ok := b.view()
		if !ok {
			t.Fatalf("try %d: no view of a body within the limit", try)
		}
		var got []byte
		p := make([]byte, 4)
		for reads := 1; ; reads++ {
			n, err := v.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil || n == 0 || reads > 10 {
				t.Fatalf("try %d, read %d: %d bytes, %v (%q so far): want progress, then io.EOF", try, reads, n, err, got)
			}
		}
		if string(got) != "hello world" {
			t.Fatalf("try %d read %q", try, got)
		}
	}
}
