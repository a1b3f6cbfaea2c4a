package l7

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
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

// ReadHeld hands the transport the recorded bytes themselves (no copy of
// its own): n bytes and one more to see the end, never changed after, and
// every later try of the body reads the same bytes again.
func TestReplayReadHeld(t *testing.T) {
	read := func(t *testing.T, r io.Reader) string {
		t.Helper()
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	t.Run("whole", func(t *testing.T) {
		b := newReplayBody(io.NopCloser(strings.NewReader("hello")), 64)
		v, _ := b.view()
		held, whole, ok, err := v.(*bodyView).ReadHeld(5)
		if string(held) != "hello" || !whole || !ok || err != nil {
			t.Fatalf("ReadHeld(5) = %q, whole %v, ok %v, %v; want hello, whole", held, whole, ok, err)
		}
		if rest := read(t, v); rest != "" {
			t.Fatalf("the view read %q after ReadHeld", rest)
		}
		// A retry: the record again, by ReadHeld and by Read; the first
		// try's held unchanged.
		v2, _ := b.view()
		held2, whole2, ok2, err2 := v2.(*bodyView).ReadHeld(5)
		if string(held2) != "hello" || !whole2 || !ok2 || err2 != nil {
			t.Fatalf("retry's ReadHeld(5) = %q, %v, %v, %v", held2, whole2, ok2, err2)
		}
		v3, _ := b.view()
		if got := read(t, v3); got != "hello" || string(held) != "hello" {
			t.Fatalf("third try read %q, first try's held now %q", got, held)
		}
		if cap(held) != len(held) {
			t.Fatalf("held has room to append into the record: len %d cap %d", len(held), cap(held))
		}
	})
	t.Run("longer", func(t *testing.T) {
		b := newReplayBody(io.NopCloser(strings.NewReader("hello world")), 64)
		v, _ := b.view()
		held, whole, ok, err := v.(*bodyView).ReadHeld(5)
		if string(held) != "hello " || whole || !ok || err != nil {
			t.Fatalf("ReadHeld(5) = %q, whole %v, ok %v, %v; want \"hello \", not whole", held, whole, ok, err)
		}
		if rest := read(t, v); rest != "world" {
			t.Fatalf("the view read %q after ReadHeld, want world", rest)
		}
		v2, _ := b.view()
		if got := read(t, v2); got != "hello world" {
			t.Fatalf("retry read %q", got)
		}
	})
	t.Run("short", func(t *testing.T) {
		b := newReplayBody(io.NopCloser(strings.NewReader("hey")), 64)
		v, _ := b.view()
		held, whole, ok, err := v.(*bodyView).ReadHeld(5)
		if string(held) != "hey" || whole || !ok || err != nil {
			t.Fatalf("ReadHeld(5) of 3 bytes = %q, whole %v, ok %v, %v", held, whole, ok, err)
		}
	})
	t.Run("beyond the limit", func(t *testing.T) {
		b := newReplayBody(io.NopCloser(strings.NewReader("hello")), 5)
		v, _ := b.view()
		if held, _, ok, err := v.(*bodyView).ReadHeld(5); ok || err != nil || held != nil {
			t.Fatalf("ReadHeld(5) with a 5-byte record = %q, ok %v, %v; want not ok", held, ok, err)
		}
		if got := read(t, v); got != "hello" {
			t.Fatalf("after a refused ReadHeld the view read %q", got)
		}
	})
	t.Run("partly read", func(t *testing.T) {
		b := newReplayBody(io.NopCloser(strings.NewReader("hello")), 64)
		v, _ := b.view()
		p := make([]byte, 2)
		v.Read(p)
		if _, _, ok, err := v.(*bodyView).ReadHeld(3); ok || err != nil {
			t.Fatalf("ReadHeld after a Read: ok %v, %v; want not ok", ok, err)
		}
		if got := read(t, v); got != "llo" {
			t.Fatalf("the view read %q after a refused ReadHeld", got)
		}
	})
	t.Run("stale", func(t *testing.T) {
		b := newReplayBody(io.NopCloser(strings.NewReader("hello")), 64)
		v, _ := b.view()
		b.view()
		if _, _, _, err := v.(*bodyView).ReadHeld(5); err != errStaleTry {
			t.Fatalf("a superseded try's ReadHeld: %v, want errStaleTry", err)
		}
	})
	t.Run("error", func(t *testing.T) {
		boom := errors.New("boom")
		b := newReplayBody(io.NopCloser(io.MultiReader(strings.NewReader("he"), iotest.ErrReader(boom))), 64)
		v, _ := b.view()
		if _, _, _, err := v.(*bodyView).ReadHeld(5); err != boom {
			t.Fatalf("ReadHeld of a failing body: %v, want its error", err)
		}
	})
}
