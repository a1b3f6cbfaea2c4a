package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServerInvalidStatusCutsTheResponse: WriteHeader with a code out of
// 100–999 panics, as net/http's does: the connection ends unanswered.
func TestServerInvalidStatusCutsTheResponse(t *testing.T) {
	for _, code := range []int{99, 1000} {
		addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }), nil)
		if l := firstLine(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); !strings.HasPrefix(l, "no response") {
			t.Errorf("WriteHeader(%d): answered %q", code, l)
		}
	}
}

// TestServerOneContinue: a handler that sends the 100 Continue itself,
// then reads the body, has no second one sent by the body's read.
func TestServerOneContinue(t *testing.T) {
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusContinue)
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s", b)
	}), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
	br := bufio.NewReader(c)
	if l, _ := br.ReadString('\n'); l != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q", l)
	}
	br.ReadString('\n')
	io.WriteString(c, "hi")
	if l, _ := br.ReadString('\n'); l != "HTTP/1.1 200 OK\r\n" {
		t.Errorf("after the body: %q, want the final response (one 100 Continue only)", l)
	}
}

// TestServerNoBodyAfter101: a 101 written without a hijack takes no body
// (http.ErrBodyNotAllowed), as no 1xx does.
func TestServerNoBodyAfter101(t *testing.T) {
	got := make(chan error, 1)
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusSwitchingProtocols)
		_, err := io.WriteString(w, "x")
		got <- err
	}), nil)
	firstLine(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if err := <-got; !errors.Is(err, http.ErrBodyNotAllowed) {
		t.Errorf("a Write after 101: %v, want %v", err, http.ErrBodyNotAllowed)
	}
}

// TestServerWholeLimit: a response the handler wrote whole, up to
// wholeLimit, is sent with its Content-Length; one byte more is chunked.
func TestServerWholeLimit(t *testing.T) {
	for _, n := range []int{wholeLimit, wholeLimit + 1} {
		addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if m, err := io.WriteString(w, strings.Repeat("x", n)); m != n || err != nil {
				panic(fmt.Sprintf("a Write of %d bytes: %d, %v", n, m, err))
			}
		}), nil)
		resps, bodies, _ := exchange(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, "GET")
		chunked := len(resps[0].TransferEncoding) > 0
		if len(bodies[0]) != n || chunked != (n > wholeLimit) {
			t.Errorf("%d bytes written: %d received, chunked %v", n, len(bodies[0]), chunked)
		}
	}
}

// TestServerShortBodyClosesTheConnection: a handler that writes less
// than its declared Content-Length leaves the client waiting for the
// rest: the connection closes after it (the client sees the body cut).
func TestServerShortBodyClosesTheConnection(t *testing.T) {
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "abc")
	}), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a short body read as %q, %v; want the connection closed under it", b, err)
	}
}

// TestServerSkipsAnUnreadBodyThatArrived: a body the handler did not read
// but which arrived whole — exactly, nothing after it yet — is skipped
// and the connection serves the next request.
func TestServerSkipsAnUnreadBodyThatArrived(t *testing.T) {
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(20 * time.Millisecond) // the body has arrived
		}
		io.WriteString(w, r.URL.Path)
	}), nil)
	c := dialApp(t, addr)
	br := bufio.NewReader(c)
	for _, req := range []string{
		"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		io.ReadAll(resp.Body)
		if resp.Close {
			t.Errorf("%q: the response closes the connection", req)
		}
	}
}

// TestServerClosesAfterAnUnreadBodyNotArrived: a body the handler did not
// read and that has not all arrived cannot be skipped without waiting for
// the client: the connection closes after the response.
func TestServerClosesAfterAnUnreadBodyNotArrived(t *testing.T) {
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "not read")
	}), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhalf.")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	if !resp.Close {
		t.Error("the response does not say Connection: close")
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after the response: %v, want the connection closed (EOF)", err)
	}
}

// TestServerDefaultHeaderLimit: MaxHeaderBytes 0 means
// DefaultMaxHeaderBytes (1 MiB), not none: a 32 KiB head is served.
func TestServerDefaultHeaderLimit(t *testing.T) {
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(s *Server) { s.MaxHeaderBytes = 0 })
	if l := firstLine(t, addr, "GET / HTTP/1.1\r\nHost: a\r\nX: "+strings.Repeat("y", 32<<10)+"\r\n\r\n"); l != "HTTP/1.1 200 OK" {
		t.Errorf("a 32 KiB head with the default limit: %q", l)
	}
}

// TestServerRemoteAddr: a request says where it came from (the client's
// address, as net/http's server sets it), every request of a connection.
func TestServerRemoteAddr(t *testing.T) {
	got := make(chan string, 2)
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.RemoteAddr }), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
	for i := range 2 {
		if ra := <-got; ra != c.LocalAddr().String() {
			t.Errorf("request %d: RemoteAddr %q, want %q", i+1, ra, c.LocalAddr())
		}
	}
}

// TestServerAbsoluteFormTarget: a request whose target is in absolute form
// is served with the target's authority as its Host, whatever the Host
// field says or whether it is there (doc.go: RFC 9112 §3.2.2's proxy
// rule; net/http refuses the one without a Host field).
func TestServerAbsoluteFormTarget(t *testing.T) {
	hosts := make(chan string, 2)
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts <- r.Host + " " + r.URL.Path
	}), nil)
	for _, raw := range []string{
		"GET http://web.demo:8080/p HTTP/1.1\r\n\r\n",
		"GET http://web.demo:8080/p HTTP/1.1\r\nHost: other.demo\r\n\r\n",
	} {
		if l := firstLine(t, addr, raw); l != "HTTP/1.1 200 OK" {
			t.Fatalf("%q answered %q", raw, l)
		}
		if h := <-hosts; h != "web.demo:8080 /p" {
			t.Errorf("%q served as Host and path %q, want the target's", raw, h)
		}
	}
}
