package h2

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// endOf matches the frame that ends stream id's response: DATA or
// HEADERS with END_STREAM.
func endOf(id uint32) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.DataFrame:
			return f.StreamID == id && f.StreamEnded()
		case *http2.MetaHeadersFrame:
			return f.StreamID == id && f.StreamEnded()
		}
		return false
	}
}

// A complete response while the client still sends its body: the server
// says it wants no more of it with RST_STREAM(NO_ERROR) after the
// response's END_STREAM (RFC 9113 §8.1).
func TestServeResetsAnUnwantedRequestBody(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "no thanks")
	})})
	rc := dialRaw(t, addr)
	rc.post(1, "")
	rc.fr.WriteData(1, false, []byte("part of it"))
	rc.quietUntil("the response's end", endOf(1))
	rc.until("RST_STREAM(NO_ERROR) after it", rst(1, http2.ErrCodeNo))
}

// Once the client reset the stream, what the handler writes fails: a
// Write that sends at once, a WriteString after it (buffered or not: the
// error is sticky), and a Flush with nothing buffered.
func TestServeWritesFailAfterAReset(t *testing.T) {
	results := make(chan string, 1)
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		var got []string
		switch r.URL.Path {
		case "/write":
			n, err := w.Write(make([]byte, bufferSize+1)) // beyond the buffer: sent at once
			got = append(got, fmt.Sprintf("Write = %d, failed %v", n, err != nil))
			n, err = io.WriteString(w, "x")
			got = append(got, fmt.Sprintf("WriteString = %d, failed %v", n, err != nil))
		case "/flush":
			err := http.NewResponseController(w).Flush()
			got = append(got, fmt.Sprintf("Flush failed %v", err != nil))
		}
		results <- strings.Join(got, "; ")
	})})
	rc := dialRaw(t, addr)
	for i, tc := range []struct{ path, want string }{
		{"/write", "Write = 0, failed true; WriteString = 0, failed true"},
		{"/flush", "Flush failed true"},
	} {
		id := uint32(2*i + 1)
		rc.headers(id, true, get(tc.path)...)
		rc.quietUntil("the first DATA", func(f http2.Frame) bool { d, ok := f.(*http2.DataFrame); return ok && d.StreamID == id })
		rc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		select {
		case got := <-results:
			if got != tc.want {
				t.Errorf("%s after RST_STREAM: %s, want %s", tc.path, got, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the handler did not return", tc.path)
		}
	}
}

// A response header block bigger than the peer's frame size goes as
// HEADERS and CONTINUATION frames, the last with END_HEADERS (RFC 9113
// §6.10); the trailers' too.
func TestServeHeaderBlockInContinuations(t *testing.T) {
	big := strings.Repeat("a", 60000) // about 37,500 bytes with Huffman: three frames
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Big-Trailer")
		w.Header().Set("X-Big", big)
		io.WriteString(w, "body")
		w.Header().Set("X-Big-Trailer", big)
	})})
	res, err := h2cClient(t).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(body) != "body" || res.Header.Get("X-Big") != big || res.Trailer.Get("X-Big-Trailer") != big {
		t.Errorf("body %q (%v), X-Big of %d bytes, trailer X-Big-Trailer of %d bytes, want 4, %d and %d",
			body, err, len(res.Header.Get("X-Big")), len(res.Trailer.Get("X-Big-Trailer")), len(big), len(big))
	}
}

// parkedIn says whether a goroutine of this process waits on a sync.Cond
// inside the h2 function fn: a writer waiting for a window, parked, not
// spinning.
func parkedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	frame := []byte("/sidecar/l7/h2." + fn + "(")
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		head, _, _ := bytes.Cut(g, []byte("\n"))
		if bytes.Contains(head, []byte("[sync.Cond.Wait")) && bytes.Contains(g, frame) {
			return true
		}
	}
	return false
}

// A response that used its whole window, the stream's or the
// connection's (down to exactly 0), waits for a WINDOW_UPDATE: its
// goroutine is parked until one comes, not spinning, and then the rest
// is sent.
func TestServeWaitsForTheWindow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		initial uint32 // the client's SETTINGS_INITIAL_WINDOW_SIZE
		size    int    // the response's body
		first   int    // what the windows let through
	}{
		{"the stream's window", 10, 100, 10},
		{"the connection's window", 1 << 20, 65535 + 100, 65535},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write(make([]byte, tc.size))
			})})
			rc := dialRaw(t, addr)
			rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: tc.initial})
			rc.headers(1, true, get("/")...)
			got := 0
			for got < tc.first {
				f := rc.quietUntil("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
				got += len(f.(*http2.DataFrame).Data())
			}
			if got != tc.first {
				t.Fatalf("%d bytes of DATA, the windows allowing %d", got, tc.first)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !parkedIn("(*stream).writeFrames") {
				if time.Now().After(deadline) {
					t.Fatal("the response's writer is not parked waiting for the window")
				}
				time.Sleep(10 * time.Millisecond)
			}
			rc.fr.WriteWindowUpdate(0, uint32(tc.size))
			rc.fr.WriteWindowUpdate(1, uint32(tc.size))
			rc.quietUntil("the rest", func(f http2.Frame) bool {
				d, ok := f.(*http2.DataFrame)
				if ok {
					got += len(d.Data())
				}
				return ok && d.StreamEnded()
			})
			if got != tc.size {
				t.Errorf("%d bytes of DATA, want %d", got, tc.size)
			}
		})
	}
}
