package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// behindPair is coalescedTLSPair with the client's coalescer switched to
// write-behind; gate, if set, is called before each socket write (by the
// writer goroutine).
func behindPair(t *testing.T, gate func()) (client *tls.Conn, co *coalescer, sock *countedConn, server *tls.Conn) {
	t.Helper()
	client, sock, server = coalescedTLSPair(t)
	sock.onWrite = gate
	co = client.NetConn().(*coalescer)
	co.writeBehind()
	return client, co, sock, server
}

// pendingBytes is what co holds for its writer.
func pendingBytes(co *coalescer) int {
	co.mu.Lock()
	defer co.mu.Unlock()
	return len(co.wb.pending)
}

// TestWriteBehindGathersInOrder: records written while the writer is busy
// leave together in its next system call, in the order written, and the
// peer reads exactly what was sent.
func TestWriteBehindGathersInOrder(t *testing.T) {
	var held atomic.Bool
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	client, co, sock, server := behindPair(t, func() {
		if held.CompareAndSwap(false, true) { // the first write waits
			entered <- struct{}{}
			<-release
		}
	})
	const records = 20
	sent := make([]byte, records*1000)
	_, _ = rand.Read(sent)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(sent))
		_ = server.SetReadDeadline(time.Now().Add(testutil.EventuallyTimeout))
		n, _ := io.ReadFull(server, b)
		got <- b[:n]
	}()
	before := sock.writes.Load() // the handshake's
	if _, err := client.Write(sent[:1000]); err != nil {
		t.Fatal(err)
	}
	testutil.Receive(t, entered, "the writer's first socket write")
	for i := 1; i < records; i++ {
		if n, err := client.Write(sent[i*1000 : (i+1)*1000]); n != 1000 || err != nil {
			t.Fatalf("Write %d: %d, %v (it must not wait for the socket)", i, n, err)
		}
	}
	if p := pendingBytes(co); p < (records-1)*1000 {
		t.Fatalf("%d bytes pending behind a busy writer, want the %d records' (at least %d)", p, records-1, (records-1)*1000)
	}
	close(release)
	if b := testutil.Receive(t, got, "the server's read"); !bytes.Equal(b, sent) {
		t.Fatalf("the server read %d bytes, not the %d sent in order", len(b), len(sent))
	}
	if n := sock.writes.Load() - before; n != 2 {
		t.Fatalf("%d records made %d socket writes, want 2 (the first, then the rest gathered)", records, n)
	}
}

// TestWriteBehindCloseSendsWhatIsPending: what was written just before
// Close — and crypto/tls's close_notify, which it queues and then follows
// with a write deadline of now — reaches the peer, which sees a clean end
// of stream (io.EOF), not a cut connection.
func TestWriteBehindCloseSendsWhatIsPending(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	var held atomic.Bool
	client, co, _, server := behindPair(t, func() {
		if held.CompareAndSwap(false, true) {
			entered <- struct{}{}
			<-release
		}
	})
	sent := make([]byte, 5000)
	_, _ = rand.Read(sent)
	if _, err := client.Write(sent[:1]); err != nil {
		t.Fatal(err)
	}
	testutil.Receive(t, entered, "the writer's first socket write")
	if _, err := client.Write(sent[1:]); err != nil {
		t.Fatal(err)
	}
	before := pendingBytes(co)
	closed := make(chan error, 1)
	go func() { closed <- client.Close() }()
	// Close waits for the writer (busy, not stuck in the socket) while it
	// sends the records and the close_notify queued behind them.
	for pendingBytes(co) == before {
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := testutil.Receive(t, closed, "Close"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_ = server.SetReadDeadline(time.Now().Add(testutil.EventuallyTimeout))
	got, err := io.ReadAll(server)
	if err != nil {
		t.Fatalf("the peer's read ended with %v after %d bytes, want a clean io.EOF (close_notify)", err, len(got))
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("the peer read %d bytes, not the %d sent", len(got), len(sent))
	}
	if _, err := client.Write(sent); err == nil {
		t.Fatal("a Write after Close succeeded")
	}
}

// fillBehind writes chunks to client from a goroutine until the peer (which
// never reads) and the kernel hold all they will and the Writes stop
// returning; ended gets the error the last Write ends with.
func fillBehind(t *testing.T, client *tls.Conn, co *coalescer) (ended chan error) {
	t.Helper()
	ended = make(chan error, 1)
	var written atomic.Int64
	go func() {
		chunk := make([]byte, 16<<10)
		for {
			if _, err := client.Write(chunk); err != nil {
				ended <- err
				return
			}
			written.Add(1)
		}
	}()
	last := int64(-1)
	for n := written.Load(); n != last; n = written.Load() {
		last = n
		time.Sleep(300 * time.Millisecond)
	}
	select {
	case err := <-ended:
		t.Fatalf("the Writes ended (%v) instead of waiting for room", err)
	default:
	}
	if p := pendingBytes(co); p > maxBehind {
		t.Fatalf("%d bytes pending behind a stuck writer, more than maxBehind %d", p, maxBehind)
	}
	return ended
}

// TestWriteBehindBackPressure: a peer that stops reading stops the Writes
// once maxBehind is pending (memory stays bounded); a write deadline ends
// the waiting Write, and Close, its writer stuck in the socket, returns
// (after behindCloseWait) and ends that write.
func TestWriteBehindBackPressure(t *testing.T) {
	client, co, _, _ := behindPair(t, nil) // the server never reads
	ended := fillBehind(t, client, co)
	if err := client.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := testutil.Receive(t, ended, "the waiting Write"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the waiting Write ended with %v, want the deadline", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- co.Close() }() // tls.Close would fail at once: its Writes are past the deadline
	testutil.Receive(t, closed, "Close with the writer stuck in a socket write")
	select {
	case <-co.wb.done:
	case <-time.After(testutil.EventuallyTimeout):
		t.Fatal("the stuck writer did not end when the socket closed")
	}
}

// TestWriteBehindCloseWithAWaitingWrite: Close ends a Write that waits for
// room behind a stuck writer (it fails), without a deadline.
func TestWriteBehindCloseWithAWaitingWrite(t *testing.T) {
	client, co, _, _ := behindPair(t, nil)
	ended := fillBehind(t, client, co)
	go func() { _ = co.Close() }()
	if err := testutil.Receive(t, ended, "the waiting Write"); err == nil {
		t.Fatal("the waiting Write succeeded after Close")
	}
}

// TestWriteBehindErrorIsSticky: once the writer's socket write fails (the
// peer reset the connection), every later Write fails too.
func TestWriteBehindErrorIsSticky(t *testing.T) {
	client, co, _, server := behindPair(t, nil)
	raw := server.NetConn().(*net.TCPConn)
	_ = raw.SetLinger(0)
	raw.Close() // RST
	chunk := make([]byte, 4<<10)
	var err error
	for i := 0; i < 10000 && err == nil; i++ {
		_, err = client.Write(chunk)
		if err == nil {
			time.Sleep(time.Millisecond)
		}
	}
	if err == nil {
		t.Fatal("Writes kept succeeding on a reset connection")
	}
	if _, err2 := client.Write(chunk); err2 == nil {
		t.Fatalf("a Write after the failure (%v) succeeded", err)
	}
	co.mu.Lock()
	werr := co.wb.err
	co.mu.Unlock()
	if werr == nil {
		t.Fatalf("the Writes failed (%v) but the writer recorded no error", err)
	}
}

// TestBehindOnlyForHTTP2: the switch is made for connections that
// negotiated h2 (the L7 path's pooled connections) and no other (an L4
// flow's or a tunnel's keep crypto/tls's direct writes and the flows'
// coalesced ones).
func TestBehindOnlyForHTTP2(t *testing.T) {
	for _, alpn := range [][]string{{"h2"}, nil, {"http/1.1"}} {
		ca := testutil.NewCA(t, td, nil)
		l := testutil.Listen(t)
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{testutil.Certificate(t, ca, workloadID("demo", "server"), "server.test")},
				MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}})
			_ = s.Handshake()
			t.Cleanup(func() { s.Close() })
		}()
		raw, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		co := newCoalescer(raw)
		c := tls.Client(co, &tls.Config{ServerName: "server.test", RootCAs: testutil.Roots(ca), MinVersion: tls.VersionTLS13, NextProtos: alpn})
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		behindIfH2(c)
		co.mu.Lock()
		on := co.wb != nil
		co.mu.Unlock()
		if want := len(alpn) > 0 && alpn[0] == "h2"; on != want {
			t.Errorf("ALPN %v: write-behind %v, want %v", alpn, on, want)
		}
		c.Close()
	}
}
