package h2

import (
	"io"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
)

// post opens stream id with a POST's HEADERS (and a content-length when
// cl is not empty), not ending it.
func (rc *rawConn) post(id uint32, cl string) {
	rc.t.Helper()
	fields := []string{":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/"}
	if cl != "" {
		fields = append(fields, "content-length", cl)
	}
	rc.headers(id, false, fields...)
}

// windowUpdates reads until stream id's response, returning the
// increments of the WINDOW_UPDATEs for the stream and for the connection
// that came before it.
func (rc *rawConn) windowUpdates(id uint32, status string) (stream, conn uint32) {
	rc.t.Helper()
	rc.quietUntil("the response", func(f http2.Frame) bool {
		if wu, ok := f.(*http2.WindowUpdateFrame); ok {
			if wu.StreamID == id {
				stream += wu.Increment
			} else if wu.StreamID == 0 {
				conn += wu.Increment
			}
		}
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == id && h.PseudoValue("status") == status
	})
	return stream, conn
}

// A stream's window is given back once half of it was read: 65,536 bytes
// read of a 131,072-byte window send WINDOW_UPDATE(65536).
func TestServeGivesBackHalfTheStreamWindow(t *testing.T) {
	got := make(chan struct{})
	addr := serve(t, &Server{StreamWindow: 1 << 17, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadFull(r.Body, make([]byte, 65536))
		close(got)
		io.ReadAll(r.Body)
	})})
	rc := dialRaw(t, addr)
	rc.post(1, "")
	rc.fr.WriteData(1, false, make([]byte, 65535))
	rc.fr.WriteData(1, false, make([]byte, 1))
	<-got
	rc.fr.WriteData(1, true, nil)
	if stream, _ := rc.windowUpdates(1, "200"); stream != 65536 {
		t.Errorf("half the stream's window read: WINDOW_UPDATE(1, %d), want 65536", stream)
	}
}

// A body closed unread gives its buffered bytes back to the connection:
// they will never be read.
func TestServeClosedBodyGivesBackTheConnectionWindow(t *testing.T) {
	addr := serve(t, &Server{ConnWindow: 65535, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body.Read(make([]byte, 1)) // the whole frame is buffered then
		r.Body.Close()
	})})
	rc := dialRaw(t, addr)
	rc.post(1, "")
	rc.fr.WriteData(1, false, make([]byte, 60000))
	if _, conn := rc.windowUpdates(1, "200"); conn < 60000 {
		t.Errorf("60,000 bytes read or dropped: WINDOW_UPDATE(0, %d), want them back", conn)
	}
}

// DATA that reaches the declared content-length before END_STREAM is
// not past it; trailers after exactly the declared bytes are served.
func TestServeBodyOfItsDeclaredLength(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil || len(b) != 4 {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("X-Trailer", r.Trailer.Get("X-T"))
	})})
	rc := dialRaw(t, addr)
	rc.post(1, "4")
	rc.fr.WriteData(1, false, []byte("abcd"))
	rc.fr.WriteData(1, true, nil)
	rc.quietUntil("200 for a body of its length", status(1, "200"))
	rc.headers(3, false, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/", "content-length", "4", "trailer", "X-T")
	rc.fr.WriteData(3, false, []byte("abcd"))
	rc.headers(3, true, "x-t", "v")
	f := rc.quietUntil("200 for a body of its length and trailers", status(3, "200"))
	if v := f.(*http2.MetaHeadersFrame).Fields; len(v) == 0 {
		t.Error("no fields")
	}
}

// A handler that panics (not with http.ErrAbortHandler) has its stream
// reset: what it wrote is not taken for a whole response.
func TestServeHandlerPanicResets(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		panic("boom")
	})})
	rc := dialRaw(t, addr)
	rc.headers(1, true, get("/")...)
	rc.until("RST_STREAM(INTERNAL_ERROR)", func(f http2.Frame) bool {
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == 1 {
			t.Fatalf("a panicking handler's response was sent: %v", h.PseudoValue("status"))
		}
		return rst(1, http2.ErrCodeInternal)(f)
	})
}

// A final response written before the body is read answers the
// request's Expect: 100-continue: no 100 Continue follows it when the
// handler then reads, and an interim 1xx before does not count as final.
func TestServeNoContinueAfterTheFinalResponse(t *testing.T) {
	for _, code := range []int{http.StatusOK, http.StatusAccepted} {
		addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			w.(http.Flusher).Flush()
			io.ReadAll(r.Body)
		})})
		rc := dialRaw(t, addr)
		rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/", "expect", "100-continue")
		rc.quietUntil("the final response", func(f http2.Frame) bool {
			h, ok := f.(*http2.MetaHeadersFrame)
			return ok && h.StreamID == 1 && h.PseudoValue("status") != "100"
		})
		rc.fr.WriteData(1, true, []byte("body"))
		rc.quietUntil("the response's end", func(f http2.Frame) bool {
			if h, ok := f.(*http2.MetaHeadersFrame); ok && h.PseudoValue("status") == "100" {
				t.Fatalf("%d: a 100 Continue after the final response", code)
			}
			d, ok := f.(*http2.DataFrame)
			return ok && d.StreamID == 1 && d.StreamEnded()
		})
	}
	// An interim response first: the 100 Continue still goes when the
	// handler reads.
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusEarlyHints)
		io.ReadAll(r.Body)
	})})
	rc := dialRaw(t, addr)
	rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/", "expect", "100-continue")
	rc.quietUntil("100 Continue after a 103", status(1, "100"))
}

// DATA on a stream the client ended, its handler still running, is a
// stream error STREAM_CLOSED (RFC 9113 §5.1, half-closed (remote)); DATA
// on a stream still open whose handler closed the body is dropped, the
// stream and the connection serving on.
func TestServeDataAfterTheRequestEnded(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	closed := make(chan struct{})
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			r.Body.Close()
			closed <- struct{}{}
		}
		<-release
	})})
	rc := dialRaw(t, addr)
	rc.headers(1, true, get("/")...)
	rc.fr.WriteData(1, false, []byte("late"))
	rc.quietUntil("RST_STREAM(STREAM_CLOSED) for DATA after END_STREAM", rst(1, http2.ErrCodeStreamClosed))
	rc.headers(3, false, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/close")
	<-closed
	rc.fr.WriteData(3, false, []byte("unwanted"))
	rc.fr.WritePing(false, [8]byte{5})
	rc.quietUntil("PING ACK: DATA on a closed body dropped", pingAck)
}
