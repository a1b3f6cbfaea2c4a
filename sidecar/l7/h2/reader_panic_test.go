package h2

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// panicConn panics in Read, once armed: a stand-in for a bug in the
// connection's reader (the panic comes out of the reader's bufio read).
type panicConn struct {
	net.Conn
	armed *atomic.Bool
}

const readerPanicValue = "h2 test: the reader's bug"

func (c panicConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.armed.Load() {
		panic(readerPanicValue)
	}
	return n, err
}

// A panic of a connection's reader crashes the process at once, with its
// stack: it does not wait for the connection's running handlers first —
// a handler may ignore its cancelled context, or wait on a lock the
// reader held, and the process then hung for ever with the connection,
// its handlers and (for the workers' lock) every later stream of every
// connection. The server runs in a child process, since the crash is the
// behaviour: a handler that never returns is running when the reader
// panics; the child must die of the panic, not hang.
func TestServerReaderPanicDoesNotWaitForHandlers(t *testing.T) {
	if os.Getenv("WEFT_H2_READER_PANIC_CHILD") == "1" {
		readerPanicChild(t)
		return
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestServerReaderPanicDoesNotWaitForHandlers$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "WEFT_H2_READER_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the child hung after its reader panicked (killed after a minute): a running handler held the panic back\n%s", out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("the child exited with %v, want it to crash of the reader's panic\n%s", err, out)
	}
	if !strings.Contains(string(out), "panic: "+readerPanicValue) || !strings.Contains(string(out), "handler running") {
		t.Fatalf("the child did not crash of the reader's panic with its handler running\n%s", out)
	}
	if strings.Contains(string(out), "child: serve returned") {
		t.Fatalf("the reader's panic was swallowed: serve returned\n%s", out)
	}
}

func readerPanicChild(t *testing.T) {
	var armed atomic.Bool
	started := make(chan struct{})
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/forever" {
			close(started)
			select {} // ignores its context: never returns
		}
	})}
	addr, _ := listen(t, func(c net.Conn) {
		err := srv.ServeConn(context.Background(), panicConn{c, &armed})
		println("child: serve returned:", err)
	})
	tr := newClient(t)
	go func() {
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/forever", nil))
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	println("child: handler running")
	armed.Store(true)
	// Any frame makes the reader read: a second request.
	go func() {
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
		if err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(45 * time.Second) // the panic ends the process long before
	println("child: still alive 45 s after")
}
