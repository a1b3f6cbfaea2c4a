package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// countedConn counts the writes that reach the socket; onWrite, if set,
// is called before each. Once fail is set its writes fail as
// writeBounded's do when the write timeout passes (the socket stays open).
type countedConn struct {
	net.Conn
	writes  atomic.Int64
	onWrite func()
	fail    atomic.Bool
}

func (c *countedConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	if c.onWrite != nil {
		c.onWrite()
	}
	if c.fail.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	return c.Conn.Write(b)
}

// coalescedTLSPair is a TLS 1.3 connection over loopback TCP: the client
// over a coalescer over a counted socket, as the sidecar dials a peer, and
// the server's end, both past the handshake.
func coalescedTLSPair(t *testing.T) (client *tls.Conn, sock *countedConn, server *tls.Conn) {
	t.Helper()
	return coalescedTLSPairALPN(t, nil)
}

// coalescedTLSPairALPN is coalescedTLSPair with the client offering alpn
// (the server takes h2 and http/1.1).
func coalescedTLSPairALPN(t *testing.T, alpn []string) (client *tls.Conn, sock *countedConn, server *tls.Conn) {
	t.Helper()
	ca := testutil.NewCA(t, td, nil)
	l := testutil.Listen(t)
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{testutil.Certificate(t, ca, workloadID("demo", "server"), "server.test")},
			MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}})
		_ = s.Handshake()
		accepted <- s
	}()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sock = &countedConn{Conn: raw}
	client = tls.Client(newCoalescer(sock), &tls.Config{ServerName: "server.test", RootCAs: testutil.Roots(ca), MinVersion: tls.VersionTLS13, NextProtos: alpn})
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	server = testutil.Receive(t, accepted, "the server's handshake")
	if server == nil {
		t.Fatal("no connection accepted")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, sock, server
}

// TestCoalescedWriteIsOneSystemCall: a flow's Write of bufSize bytes leaves
// in one write to the socket, whatever the records (crypto/tls starts with
// MSS-sized ones), and the peer reads exactly what was sent; outside a
// flow's Write, crypto/tls's records go out one by one as before.
func TestCoalescedWriteIsOneSystemCall(t *testing.T) {
	client, sock, server := coalescedTLSPair(t)
	w := coalesced(client)
	if _, ok := w.(*coalescedTLS); !ok {
		t.Fatalf("coalesced(%T) = %T, want a *coalescedTLS", client, w)
	}
	const writes = 6 // past crypto/tls's 128 KiB of small records
	sent := make([]byte, writes*bufSize)
	_, _ = rand.Read(sent)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(sent)+bufSize)
		_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.ReadAtLeast(server, b, len(sent))
		got <- b[:n]
	}()
	before := sock.writes.Load()
	for i := range writes {
		if n, err := w.Write(sent[i*bufSize : (i+1)*bufSize]); n != bufSize || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if n := sock.writes.Load() - before; n != writes {
		t.Fatalf("%d Writes of %d bytes made %d writes to the socket, want %d", writes, bufSize, n, writes)
	}
	if b := testutil.Receive(t, got, "the server's read"); !bytes.Equal(b, sent) {
		t.Fatalf("the server read %d bytes, not the %d sent", len(b), len(sent))
	}

	// The same bytes written to the *tls.Conn itself: one write per record.
	go func() {
		b := make([]byte, bufSize)
		_, _ = io.ReadFull(server, b)
		got <- b
	}()
	before = sock.writes.Load()
	if _, err := client.Write(sent[:bufSize]); err != nil {
		t.Fatal(err)
	}
	if n := sock.writes.Load() - before; n != bufSize/recordSize {
		t.Fatalf("a plain Write of %d bytes made %d socket writes, want one per 16 KiB record", bufSize, n)
	}
	if b := testutil.Receive(t, got, "the server's read"); !bytes.Equal(b, sent[:bufSize]) {
		t.Fatal("the plain write arrived changed")
	}
}

// TestCoalescedWriteGivesThePlaintextBack: the pooled buffer that held a
// flow's plaintext is back in the pool before the records are written, so
// a write stuck on a peer that stopped reading holds only the records.
func TestCoalescedWriteGivesThePlaintextBack(t *testing.T) {
	client, sock, server := coalescedTLSPair(t)
	w := coalesced(client).(*coalescedTLS)
	go func() { _, _ = io.Copy(io.Discard, server) }()
	bp := bufPool.Get().(*[]byte)
	var heldAtWrite []bool
	sock.onWrite = func() { heldAtWrite = append(heldAtWrite, w.sealed != nil) }
	w.sealed = bp
	if _, err := w.Write((*bp)[:bufSize]); err != nil {
		t.Fatal(err)
	}
	sock.onWrite = nil
	if len(heldAtWrite) != 1 || heldAtWrite[0] || w.sealed != nil {
		t.Fatalf("plaintext buffer still held at the socket writes: %v (after: %v)", heldAtWrite, w.sealed != nil)
	}
}

// TestCloseEndsAStuckCoalescedWrite: a flow's flush stuck on a peer that
// stopped reading (no write deadline) does not hold up Close, which ends it
// by closing the socket, as it ends crypto/tls's own blocked write (were
// the close_notify to wait for the flush, the stuck write would end only at
// the 5 s deadline crypto/tls gives that alert).
func TestCloseEndsAStuckCoalescedWrite(t *testing.T) {
	client, _, _ := coalescedTLSPair(t) // the server never reads
	ended := writeUntilStuck(coalesced(client), bufSize)
	closed := make(chan error, 1)
	go func() { closed <- client.Close() }()
	// Close returns before the 5 s write deadline crypto/tls gives its
	// close_notify could have ended the stuck write: it does not wait for
	// the flush. (A Close behind a locked flush returns only at that
	// deadline.)
	select {
	case <-closed:
	case <-time.After(4 * time.Second):
		t.Fatal("Close waited for the stuck coalesced write")
	}
	// Ended by Close: the socket closed under it, or the deadline of now
	// that crypto/tls sets once its close_notify is queued (whichever the
	// poller delivers first; seen both ways).
	if err := testutil.Receive(t, ended, "the stuck write"); !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the stuck write ended with %v, want it ended by Close", err)
	}
}

// gateConn is a socket whose first write waits for release.
type gateConn struct {
	net.Conn
	mu      sync.Mutex
	wire    bytes.Buffer
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	fail    error
}

func (g *gateConn) Write(b []byte) (int, error) {
	g.once.Do(func() { close(g.entered); <-g.release })
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail != nil {
		return 0, g.fail
	}
	return g.wire.Write(b)
}

func (g *gateConn) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.wire.String()
}

// TestCoalescerKeepsOrder: bytes written by another goroutine while a
// flush is writing (crypto/tls answering a KeyUpdate, a Close's alert) are
// gathered without waiting and leave after the flushed ones; once the flush
// is over writes go straight through again; after a failed flush, what was
// gathered is dropped, not sent out of order later.
func TestCoalescerKeepsOrder(t *testing.T) {
	g := &gateConn{entered: make(chan struct{}), release: make(chan struct{})}
	co := newCoalescer(g)
	co.hold(make([]byte, 0, 8))
	_, _ = co.Write([]byte("one,"))
	_, _ = co.Write([]byte("two,"))
	flushed := make(chan error, 1)
	go func() { flushed <- co.flush() }()
	<-g.entered // the flush is writing, unlocked
	wrote := make(chan struct{}, 1)
	go func() {
		_, _ = co.Write([]byte("three,"))
		wrote <- struct{}{}
	}()
	testutil.Receive(t, wrote, "a write during a flush") // gathered, not waiting
	close(g.release)
	if err := testutil.Receive(t, flushed, "the flush"); err != nil {
		t.Fatal(err)
	}
	if _, err := co.Write([]byte("four")); err != nil {
		t.Fatal(err)
	}
	if got := g.String(); got != "one,two,three,four" {
		t.Fatalf("the socket got %q", got)
	}

	g.fail = errors.New("broken")
	co.hold(nil)
	_, _ = co.Write([]byte("five"))
	if err := co.flush(); !errors.Is(err, g.fail) {
		t.Fatalf("flush: %v, want the socket's error", err)
	}
	g.fail = nil
	_, _ = co.Write([]byte("six"))
	if got := g.String(); got != "one,two,three,foursix" {
		t.Fatalf("after a failed flush the socket got %q", got)
	}
}

// TestCoalescerBoundsLateWrites: a peer that stops reading (the flush is
// stuck) and keeps asking for KeyUpdates makes crypto/tls write an answer
// for each; the coalescer gathers only maxLate bytes of them, then the
// writer waits for the flush, as it waited on the socket before, instead
// of growing the buffer with every answer. Once the flush ends, every
// answer goes out, in order.
func TestCoalescerBoundsLateWrites(t *testing.T) {
	g := &gateConn{entered: make(chan struct{}), release: make(chan struct{})}
	co := newCoalescer(g)
	co.hold(nil)
	_, _ = co.Write([]byte("records,"))
	flushed := make(chan error, 1)
	go func() { flushed <- co.flush() }()
	<-g.entered
	const answer = 100 // bytes, one answer
	const answers = 2 * maxLate / answer
	var done atomic.Int64
	go func() {
		for i := range answers {
			_, _ = co.Write(bytes.Repeat([]byte{byte('a' + i%26)}, answer))
			done.Add(1)
		}
	}()
	fit := int64(maxLate / answer)
	testutil.Eventually(t, "the late answers that fit gathered", func() bool { return done.Load() >= fit })
	time.Sleep(100 * time.Millisecond) // a writer past the bound would go on
	if n := done.Load(); n != fit {
		t.Fatalf("%d answers of %d bytes gathered while the flush was stuck, want %d (maxLate %d)", n, answer, fit, maxLate)
	}
	close(g.release)
	if err := testutil.Receive(t, flushed, "the flush"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "every answer written", func() bool { return done.Load() == answers })
	want := "records,"
	for i := range answers {
		want += string(bytes.Repeat([]byte{byte('a' + i%26)}, answer))
	}
	if got := g.String(); got != want {
		t.Fatalf("the socket got %d bytes out of order or short, want %d", len(got), len(want))
	}
}

// writeUntilStuck writes chunks of size bytes to w from a goroutine and
// returns once no Write has completed for a while (a peer that never
// reads: the kernel's buffers, and whatever is under w, are full); ended
// gets the error the last Write ends with.
func writeUntilStuck(w io.Writer, size int) (ended chan error) {
	ended = make(chan error, 1)
	var written atomic.Int64
	go func() {
		chunk := make([]byte, size)
		for {
			if _, err := w.Write(chunk); err != nil {
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
	return ended
}
