package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// writeLog is a server pod's connections to its app, each Write recorded.
type writeLog struct {
	mu     sync.Mutex
	writes [][]byte
}

func (l *writeLog) take() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.writes
	l.writes = nil
	return w
}

type writeSpy struct {
	net.Conn
	log *writeLog
}

func (s writeSpy) Write(b []byte) (int, error) {
	s.log.mu.Lock()
	s.log.writes = append(s.log.writes, bytes.Clone(b))
	s.log.mu.Unlock()
	return s.Conn.Write(b)
}

// spyOnApp makes a pod's connections to its app writeSpies.
func spyOnApp(l *writeLog) func(*Config) {
	return func(c *Config) {
		c.DialFrom = func(ctx context.Context, network string, src netip.Addr, addr string) (net.Conn, error) {
			conn, err := dialFromAddr(ctx, network, src, addr)
			if err != nil {
				return nil, err
			}
			return writeSpy{Conn: conn, log: l}, nil
		}
	}
}

// h2Frame is a frame of an HTTP/2 byte stream and the Write it began in.
type h2Frame struct {
	typ, flags byte
	stream     uint32
	write      int
}

// h2Frames parses the frames of a client's writes (the preface first).
func h2Frames(t *testing.T, writes [][]byte) []h2Frame {
	t.Helper()
	var all []byte
	var starts []int // the offset in all at which each Write begins
	for _, w := range writes {
		starts = append(starts, len(all))
		all = append(all, w...)
	}
	if !bytes.HasPrefix(all, []byte(h2Preface)) {
		t.Fatalf("the client's first bytes are not HTTP/2's preface: %q", all[:min(len(all), 24)])
	}
	var fs []h2Frame
	for off := len(h2Preface); off < len(all); {
		if len(all)-off < 9 {
			t.Fatalf("a frame header cut at byte %d of %d", off, len(all))
		}
		n := int(all[off])<<16 | int(all[off+1])<<8 | int(all[off+2])
		w := 0
		for w+1 < len(starts) && starts[w+1] <= off {
			w++
		}
		fs = append(fs, h2Frame{typ: all[off+3], flags: all[off+4], stream: binary.BigEndian.Uint32(all[off+5:]) &^ (1 << 31), write: w})
		off += 9 + n
		if off > len(all) {
			t.Fatalf("a frame of %d bytes cut at the end of the stream", n)
		}
	}
	return fs
}

// TestL7AppGetsARequestInOneWrite: the server sidecar hands a request it
// holds whole to its app in one Write — to an h2c (gRPC) app a unary
// call's HEADERS and its DATA with END_STREAM, to an HTTP/1.1 app a
// request's head (AppH1). Writing them apart costs a system call and a
// wake-up of the app per piece. The gRPC calls come from an app that
// sends each call's HEADERS and DATA together (grpc-go's client mostly
// does, not always): each sidecar's HTTP/2 server then starts the handler
// with the body whole (l7/h2: a handler starts once the frames already
// read are taken), and each HTTP/2 client writes what it holds whole at
// once.
func TestL7AppGetsARequestInOneWrite(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	var log writeLog

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	port := l.Addr().(*net.TCPAddr).AddrPort().Port()
	g := &grpcBackend{pod: startPod(t, ca, webID, spyOnApp(&log))}
	g.pod.nat.setDefault(netip.AddrPortFrom(podBIP, port))
	g.pod.cfg.Store(l7ServerConfig(port, model.HTTP2))
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)},
		map[string][]model.Endpoint{l7Route: {{Addr: g.pod.inboundAddr()}}}))
	const calls = 20
	if n := rawUnaryCalls(t, a.outboundAddr().String(), calls); n != calls {
		t.Fatalf("%d of %d gRPC calls answered OK", n, calls)
	}

	headers := map[uint32]int{} // stream → the Write of its HEADERS
	ended := 0
	for _, f := range h2Frames(t, log.take()) {
		switch {
		case f.typ == 0x1: // HEADERS
			headers[f.stream] = f.write
		case f.typ == 0x0 && f.flags&0x1 != 0: // DATA, END_STREAM
			ended++
			if w, ok := headers[f.stream]; !ok || w != f.write {
				t.Errorf("stream %d: its HEADERS in Write %d (seen %v), its last DATA in Write %d: want one Write", f.stream, w, ok, f.write)
			}
		}
	}
	if ended != calls {
		t.Errorf("%d requests ended with DATA to the h2c app, want the %d calls", ended, calls)
	}

	var h1log writeLog // the HTTP/1.1 app's pod's own (the h2c one may still send a PING's ACK)
	h1 := startHTTPBackendWith(t, ca, "h1", spyOnApp(&h1log))
	a.cfg.Store(l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {h1.endpoint()}}))
	c := httpClient(t, a)
	for range 5 {
		if code, body := doReq(t, c, http.MethodGet, "/"); code != http.StatusOK {
			t.Fatalf("HTTP/1.1 app: %d %s", code, body)
		}
	}
	writes := h1log.take()
	for i, w := range writes {
		if !bytes.HasPrefix(w, []byte("GET / HTTP/1.1\r\n")) || bytes.Index(w, []byte("\r\n\r\n")) != len(w)-4 {
			t.Errorf("HTTP/1.1 app: Write %d is not one whole request head: %q", i, w)
		}
	}
	if len(writes) != 5 {
		t.Errorf("HTTP/1.1 app: %d Writes for 5 requests", len(writes))
	}
}

// TestBoundedConnTimesOutAStalledPeer: the server sidecar's connections to
// an h2c app are written through boundedConn: a Write to a peer that
// stopped reading ends at the write timeout, counted once.
func TestBoundedConnTimesOutAStalledPeer(t *testing.T) {
	c, _ := loopbackPair(t) // the peer never reads
	var timedOut atomic.Int64
	bc := boundedConn{Conn: c, d: 100 * time.Millisecond, timedOut: func() { timedOut.Add(1) }}
	done := make(chan error, 1)
	go func() {
		_, err := bc.Write(make([]byte, 64<<20))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) || timedOut.Load() != 1 {
			t.Fatalf("Write to a stalled peer: %v, timed out counted %d; want a deadline error, counted once", err, timedOut.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Write to a stalled peer was not bounded by the write timeout")
	}
}

// rawUnaryCalls makes n gRPC health checks over one h2c connection to
// addr, one after another, each call's HEADERS and DATA in one Write, and
// returns how many ended with grpc-status 0.
func rawUnaryCalls(t *testing.T, addr string, n int) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var out bytes.Buffer
	wf := http2.NewFramer(&out, nil)
	out.WriteString(http2.ClientPreface)
	if err := wf.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	rf := http2.NewFramer(nil, c)
	rf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	ok := 0
	for i := range n {
		id := uint32(2*i + 1)
		hb.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.health.v1.Health/Check"},
			{":authority", "web.demo:80"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := wf.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if err := wf.WriteData(id, true, make([]byte, 5)); err != nil { // an empty message
			t.Fatal(err)
		}
		if _, err := c.Write(out.Bytes()); err != nil {
			t.Fatal(err)
		}
		out.Reset()
	call:
		for {
			f, err := rf.ReadFrame()
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = wf.WriteSettingsAck()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					_ = wf.WritePing(true, f.Data)
				}
			case *http2.RSTStreamFrame:
				t.Fatalf("call %d: reset: %v", i, f.ErrCode)
			case *http2.MetaHeadersFrame:
				if f.StreamID == id && f.StreamEnded() {
					if f.PseudoValue("status") == "" && headerValue(f, "grpc-status") == "0" {
						ok++
					}
					break call
				}
			}
		}
	}
	return ok
}

func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.RegularFields() {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}
