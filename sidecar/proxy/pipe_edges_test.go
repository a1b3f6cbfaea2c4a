package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// loopbackPipe is pipe between two loopback TCP connections: client is
// the downstream peer's end, app the upstream peer's. done is closed once
// both directions have ended.
func loopbackPipe(t *testing.T, env pipeEnv) (client, app *net.TCPConn, kick func(), done chan struct{}) {
	t.Helper()
	client, down := sniffPair(t)
	app, up := sniffPair(t)
	var toUp, toDown atomic.Int64
	done = make(chan struct{})
	kick = pipe(down, up, &toUp, &toDown, func(bool, int) {}, env, func() { close(done) })
	return client, app, kick, done
}

// waitDone fails the test unless done closes (a bound for a failing
// test, not a timing assertion: the pipe ends as soon as its cause).
func waitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the pipe did not end: %s", what)
	}
}

// pingBothWays sends a line each way through the pipe and checks it arrives.
func pingBothWays(t *testing.T, client, app net.Conn) {
	t.Helper()
	for _, d := range []struct{ from, to net.Conn }{{client, app}, {app, client}} {
		if _, err := d.from.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		_ = d.to.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 5)
		if _, err := io.ReadFull(d.to, b); err != nil || string(b) != "ping\n" {
			t.Fatalf("read %q, %v: want ping", b, err)
		}
	}
}

// TestResetSourceEndsBothDirections: an error reading one side (the app
// resets its connection) ends the whole pipe, though the other side sends
// nothing and keeps its connection open; it is not taken for an EOF,
// which would only half-close.
func TestResetSourceEndsBothDirections(t *testing.T) {
	var run sync.WaitGroup
	client, app, _, done := loopbackPipe(t, pipeEnv{run: &run})
	pingBothWays(t, client, app)
	_ = app.SetLinger(0)
	app.Close() // RST
	waitDone(t, done, "the app reset its connection")
	run.Wait()
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatalf("client read %d bytes after the app reset, want its connection closed", n)
	}
}

// TestKickedFlowsCarryOnWithoutParking: a kicked pipe (its connection is
// being closed) never parks again: its flows, silent past the idle period,
// carry on without a deadline and forward whatever comes until the close.
func TestKickedFlowsCarryOnWithoutParking(t *testing.T) {
	pk, err := newParker()
	if err != nil {
		t.Skipf("no parker here: %v", err)
	}
	defer pk.close()
	var parked sync.WaitGroup
	parked.Go(func() { _ = pk.run() })
	var run parkTries
	client, app, kick, done := loopbackPipe(t, pipeEnv{run: &run, park: pk, idle: 10 * time.Millisecond})
	pingBothWays(t, client, app)
	testutil.Eventually(t, "both flows parked", func() bool { return pk.parkedFlows() == 2 })
	adds, dones := run.adds.Load(), run.dones.Load()
	kick() // the sockets stay open
	// Each flow, resumed by the kick (a Done), tries to park again once
	// idle (an Add), and is refused (a Done) or, wrongly, parks.
	testutil.Eventually(t, "both kicked flows to try to park", func() bool {
		return run.adds.Load()-adds >= 2 && (run.dones.Load()-dones >= 4 || pk.parkedFlows() > 0)
	})
	if n := pk.parkedFlows(); n != 0 {
		t.Fatalf("%d flows parked after kick, want none", n)
	}
	pingBothWays(t, client, app)
	client.Close()
	app.Close()
	waitDone(t, done, "both peers closed")
	run.Wait()
	if err := pk.shutdown(); err != nil {
		t.Fatal(err)
	}
	parked.Wait()
}

// parkTries is a pipe's runner, a sync.WaitGroup, that counts its flows'
// calls of Add (a flow about to park: flow.park) and Done (a refused park,
// or a parked flow resumed).
type parkTries struct {
	sync.WaitGroup
	adds, dones atomic.Int64
}

func (r *parkTries) Add(n int) { r.adds.Add(1); r.WaitGroup.Add(n) }
func (r *parkTries) Done()     { r.dones.Add(1); r.WaitGroup.Done() }

// recordSource is a TLS source as copyGrowing sees one: a Read returns
// (what is left of) one record, already decrypted. A Read that may block
// takes the next record off the network, with the records that arrived
// with it (arrived[i]: record i came in the same segment as record i-1);
// under a deadline already past (readBuffered's), only what has arrived is
// returned, then a timeout.
type recordSource struct {
	records [][]byte
	arrived []bool
	held    int  // records[:held] have arrived
	past    bool // the read deadline is in the past
	// clearErr fails SetReadDeadline(time.Time{}), the clearing of the
	// deadline readBuffered set.
	clearErr error
}

func (s *recordSource) Read(p []byte) (int, error) {
	if len(s.records) == 0 {
		return 0, io.EOF
	}
	if s.held == 0 {
		if s.past {
			return 0, os.ErrDeadlineExceeded
		}
		s.held = 1
		for s.held < len(s.records) && s.arrived[s.held] {
			s.held++
		}
	}
	n := copy(p, s.records[0])
	if s.records[0] = s.records[0][n:]; len(s.records[0]) == 0 {
		s.records, s.arrived, s.held = s.records[1:], s.arrived[1:], s.held-1
	}
	return n, nil
}

func (s *recordSource) SetReadDeadline(t time.Time) error {
	s.past = !t.IsZero() && t.Before(time.Now())
	if t.IsZero() {
		return s.clearErr
	}
	return nil
}

// newRecordSource splits data into records of the given sizes; together[i]
// says record i arrived with the one before it.
func newRecordSource(data []byte, sizes []int, together []bool) *recordSource {
	s := &recordSource{arrived: together}
	for _, n := range sizes {
		s.records = append(s.records, data[:n])
		data = data[n:]
	}
	return s
}

// TestCopyGrowingWritesWhatArrivedTogether: a read that fills the small
// buffer moves to a bufSize one, topped up at once with the records the
// source already holds, so records that arrived together leave in one
// write (and the switch costs none); a record that has not arrived is not
// waited for; a read shorter than one record gives the big buffer back;
// EOF ends the copy without an empty chunk.
func TestCopyGrowingWritesWhatArrivedTogether(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sizes    []int
		together []bool
		chunks   []int
	}{
		{"five full records that arrived together",
			[]int{recordSize, recordSize, recordSize, recordSize, recordSize},
			[]bool{false, true, true, true, true},
			[]int{bufSize, bufSize, recordSize}},
		{"records one at a time, a short one between",
			[]int{recordSize, recordSize, recordSize, 1 << 10, recordSize},
			[]bool{false, false, false, false, false},
			[]int{recordSize, recordSize, recordSize, 1 << 10, recordSize}},
		{"two together, then one, then a pair that overflows the buffer",
			[]int{recordSize, recordSize / 2, recordSize, recordSize, recordSize},
			[]bool{false, true, false, false, true},
			[]int{recordSize + recordSize/2, recordSize, bufSize}},
		{"light traffic stays in the small buffer",
			[]int{100, smallBufSize - 1, 7},
			[]bool{false, true, true},
			[]int{100, smallBufSize - 1, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			total := 0
			for _, n := range tc.sizes {
				total += n
			}
			data := make([]byte, total)
			for i := range data {
				data[i] = byte(i * 7)
			}
			src := newRecordSource(bytes.Clone(data), tc.sizes, tc.together)
			var chunks []int
			var got []byte
			err := copyGrowing(src, func(b []byte) error {
				chunks = append(chunks, len(b))
				got = append(got, b...)
				return nil
			}, nil)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("copyGrowing: %v, copied %d of %d bytes", err, len(got), len(data))
			}
			if !slices.Equal(chunks, tc.chunks) {
				t.Fatalf("chunks %v, want %v", chunks, tc.chunks)
			}
		})
	}
}

// TestCopyGrowingGivesTheBigBufferBackWhenTrafficIsLight: the big buffer
// is kept while reads fill at least a record and given back after the
// first read shorter than one, so a flow that turned quiet waits on the
// small buffer: the buffer each chunk was read into shows it.
func TestCopyGrowingGivesTheBigBufferBackWhenTrafficIsLight(t *testing.T) {
	sizes := []int{recordSize, recordSize, 100, 100, 100}
	data := make([]byte, 2*recordSize+300)
	src := newRecordSource(data, sizes, []bool{false, false, false, false, false})
	var bufs []int
	if err := copyGrowing(src, func(b []byte) error { bufs = append(bufs, cap(b)); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if want := []int{bufSize, bufSize, bufSize, smallBufSize, smallBufSize}; !slices.Equal(bufs, want) {
		t.Fatalf("chunks read into buffers of %v bytes, want %v", bufs, want)
	}
}

// TestReadBufferedReportsAnUnclearedDeadline: when the past deadline that
// readBuffered set cannot be cleared, it says so (the next read would time
// out at once), with the bytes it read.
func TestReadBufferedReportsAnUnclearedDeadline(t *testing.T) {
	stuck := errors.New("deadline stuck")
	src := newRecordSource([]byte("hello, world"), []int{5, 7}, []bool{false, false})
	src.held, src.clearErr = 1, stuck
	b := make([]byte, 16)
	if n, err := readBuffered(src, b); n != 5 || !errors.Is(err, stuck) {
		t.Fatalf("readBuffered: %d, %v: want 5 bytes and %v", n, err, stuck)
	}
	// The same when the reads ended because b was full, not at the timeout.
	full := newRecordSource([]byte("hello, world"), []int{5, 7}, []bool{false, false})
	full.held, full.clearErr = 1, stuck
	if n, err := readBuffered(full, b[:5]); n != 5 || !errors.Is(err, stuck) {
		t.Fatalf("readBuffered into a buffer it fills: %d, %v: want 5 bytes and %v", n, err, stuck)
	}
	if n, err := readBuffered(bytes.NewReader([]byte("hello")), b); n != 0 || err != nil {
		t.Fatalf("readBuffered of a source without deadlines: %d, %v: want nothing read", n, err)
	}
}
