package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// heldBody is a HeldBody over a fixed answer, counting its calls.
type heldBody struct {
	io.Reader
	held        []byte
	whole, ok   bool
	err         error
	calls, read int
}

func (b *heldBody) ReadHeld(n int) ([]byte, bool, bool, error) {
	b.calls++
	return b.held, b.whole, b.ok, b.err
}

func (b *heldBody) Read(p []byte) (int, error) {
	b.read++
	return b.Reader.Read(p)
}

// readWhole takes a HeldBody's bytes as they are (the memory the body
// keeps: no copy), refuses them short as io.ReadFull would, passes on its
// error, and reads the body itself when the body says it cannot.
func TestReadWholeTakesHeldBody(t *testing.T) {
	rec := []byte("hello")
	b := &heldBody{Reader: strings.NewReader("unused"), held: rec, whole: true, ok: true}
	held, whole, err := readWhole(b, 5)
	if err != nil || !whole || string(held) != "hello" || &held[0] != &rec[0] || b.read != 0 {
		t.Fatalf("readWhole = %q, %v, %v (same memory %v, %d reads); want the body's own bytes, whole", held, whole, err, len(held) > 0 && &held[0] == &rec[0], b.read)
	}
	b = &heldBody{held: []byte("hello "), ok: true}
	if held, whole, err := readWhole(b, 5); err != nil || whole || string(held) != "hello " {
		t.Fatalf("readWhole of a longer body = %q, %v, %v; want 6 bytes, not whole", held, whole, err)
	}
	for _, c := range []struct {
		held []byte
		want error
	}{{nil, io.EOF}, {[]byte("hey"), io.ErrUnexpectedEOF}} {
		b = &heldBody{held: c.held, ok: true}
		if _, _, err := readWhole(b, 5); err != c.want {
			t.Fatalf("readWhole of %d of 5 bytes: %v, want %v", len(c.held), err, c.want)
		}
	}
	boom := errors.New("boom")
	if _, _, err := readWhole(&heldBody{err: boom}, 5); err != boom {
		t.Fatalf("readWhole of a failing HeldBody: %v, want its error", err)
	}
	b = &heldBody{Reader: strings.NewReader("hello")}
	if held, whole, err := readWhole(b, 5); err != nil || !whole || string(held) != "hello" || b.calls != 1 || b.read == 0 {
		t.Fatalf("readWhole of a body that cannot hold = %q, %v, %v (%d ReadHeld, %d reads)", held, whole, err, b.calls, b.read)
	}
}

// Responses' DATA is kept in pooled arrays until read (dataBufs): bodies
// around the array's size, read a few bytes at a time on streams that
// overlap, some closed half read, each get their own bytes and nothing
// of another's.
func TestClientPooledDataKeepsBodiesApart(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr, _ := srv.serve(t, http.HandlerFunc(echo), 100)
			tr := newClient(t)
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for i := range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					size := []int{1, 100, dataBufSize - 1, dataBufSize, dataBufSize + 1, 3 * dataBufSize}[i%6]
					want := strings.Repeat(string(rune('a'+i%26)), size)
					// The guard: a request never ended fails instead of
					// hanging the test.
					ctx, cancel := context.WithTimeout(context.Background(), acGuard)
					defer cancel()
					resp, err := tr.RoundTrip(newRequest(t, ctx, "POST", "http://"+addr+"/", strings.NewReader(want)))
					if err != nil {
						errs <- err
						return
					}
					defer resp.Body.Close()
					var got []byte
					p := make([]byte, 7)
					for i%5 != 4 || len(got) < size/2 { // every fifth closed half read
						n, err := resp.Body.Read(p)
						got = append(got, p[:n]...)
						if err == io.EOF {
							break
						}
						if err != nil {
							errs <- err
							return
						}
					}
					if !strings.HasPrefix(want, string(got)) || i%5 != 4 && len(got) != size {
						errs <- fmt.Errorf("stream %d read %d bytes, not a prefix of its own %d (%.20q)", i, len(got), size, got)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
