package audit

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	apiaudit "github.com/weftmesh/weft/api/audit"
	wm "github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/sleep"
	"github.com/weftmesh/weft/sidecar/internal/envoy"
	alsv3 "github.com/weftmesh/weft/sidecar/internal/envoy/service/accesslog/v3"
)

// Config configures a Recorder. Zero fields get the defaults in their
// comments.
type Config struct {
	// SourceID, Pod and Namespace are stamped on every event (required).
	// Instead of SourceID, SVID may give it: the ID of the pod's X.509-SVID
	// once there is one (events recorded before get it when they are sent).
	SourceID  spiffeid.ID
	SVID      x509svid.Source
	Pod       string
	Namespace string
	// Out receives one JSON line per event (default os.Stdout).
	Out io.Writer
	// Conn reaches the control plane's access-log service (Envoy's
	// envoy.service.accesslog.v3.AccessLogService): the sidecar's mTLS
	// connection, the one ADS uses, since the control plane requires the
	// client SVID. Nil: events go to Out only.
	Conn grpc.ClientConnInterface
	// InstanceID prefixes event IDs; it must differ between sidecar starts
	// (default: 64 random bits, hex).
	InstanceID string

	BufferSize        int           // events held until acknowledged: 10000
	BatchSize         int           // events per stream (one acknowledgement): 1000
	EntriesPerMessage int           // log entries per StreamAccessLogsMessage: 100
	FlushDelay        time.Duration // how long a first event waits for company: 200ms
	SendTimeout       time.Duration // one batch's stream, open to response: 30s
	MinBackoff        time.Duration // after a failed batch: 500ms, doubling
	MaxBackoff        time.Duration // 30s
	DrainTimeout      time.Duration // last flush once Run's ctx ends: 2s

	Logger  *slog.Logger
	Clock   clock.Clock
	Metrics *wm.Registry // where the recorder's series go; nil: a private registry
}

func (c *Config) defaults() error {
	switch {
	case c.SourceID.IsZero() && c.SVID == nil:
		return errors.New("audit: New: Config.SourceID and Config.SVID are both empty")
	case c.Pod == "" || c.Namespace == "":
		return fmt.Errorf("audit: New: Config.Pod %q and Config.Namespace %q are required", c.Pod, c.Namespace)
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.InstanceID == "" {
		var b [8]byte
		_, _ = crand.Read(b[:])
		c.InstanceID = hex.EncodeToString(b[:])
	}
	num := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	dur := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	num(&c.BufferSize, 10000)
	num(&c.BatchSize, 1000)
	num(&c.EntriesPerMessage, 100)
	dur(&c.FlushDelay, 200*time.Millisecond)
	dur(&c.SendTimeout, 30*time.Second)
	dur(&c.MinBackoff, 500*time.Millisecond)
	dur(&c.MaxBackoff, 30*time.Second)
	dur(&c.DrainTimeout, 2*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Metrics == nil {
		c.Metrics = wm.NewRegistry()
	}
	return nil
}

// Recorder writes egress audit events to stdout and delivers them to the
// control plane (see the package doc for the delivery guarantee).
type Recorder struct {
	cfg Config
	log *slog.Logger
	buf *buffer
	seq atomic.Uint64
	m   *metrics
	id  atomic.Pointer[string] // the source SPIFFE ID once known

	outMu sync.Mutex
}

// New checks cfg and registers the recorder's metrics; Run delivers.
func New(cfg Config) (*Recorder, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &Recorder{cfg: cfg, log: cfg.Logger, buf: newBuffer(cfg.BufferSize)}
	m, err := newMetrics(cfg.Metrics, func() float64 { return float64(r.buf.len()) })
	if err != nil {
		return nil, fmt.Errorf("audit: New: metrics: %w", err)
	}
	r.m = m
	if !cfg.SourceID.IsZero() {
		id := cfg.SourceID.String()
		r.id.Store(&id)
	}
	return r, nil
}

// sourceID is the pod's SPIFFE ID, or "" while it has no SVID yet.
func (r *Recorder) sourceID() string {
	if id := r.id.Load(); id != nil {
		return *id
	}
	svid, err := r.cfg.SVID.GetX509SVID()
	if err != nil || svid == nil {
		return ""
	}
	id := svid.ID.String()
	r.id.Store(&id)
	return id
}

// Record stamps e (ID, source identity, time if unset), writes it to Out as
// one JSON line and queues it for the control plane. It never blocks on the
// network; when the queue is full the event is dropped (it still reaches
// Out) and counted.
func (r *Recorder) Record(e apiaudit.Event) {
	e.ID = seqID(r.cfg.InstanceID, r.seq.Add(1))
	e.SourceID, e.Pod, e.Namespace = r.sourceID(), r.cfg.Pod, r.cfg.Namespace
	if e.Time.IsZero() {
		e.Time = r.cfg.Clock.Now()
	}
	e.Time = e.Time.UTC()
	r.m.recorded()
	line, err := apiaudit.MarshalLine(e)
	if err == nil {
		r.outMu.Lock()
		_, err = r.cfg.Out.Write(line)
		r.outMu.Unlock()
	}
	if err != nil {
		r.log.Warn("writing event", "id", e.ID, "err", err)
	}
	if !r.buf.push(e) {
		r.m.drop(DropBufferFull, 1)
		r.log.Warn("buffer full, event dropped", "id", e.ID, "size", r.cfg.BufferSize)
	}
}

// Stats is what the recorder has done so far.
type Stats struct {
	Recorded  int64 // events given to Record
	Delivered int64 // acknowledged by the control plane
	Buffered  int   // waiting for an acknowledgement
	// DroppedFull and DroppedRejected never reach the control plane.
	DroppedFull, DroppedRejected int64
	SendFailures                 int64 // batches that failed and were kept for a resend
}

// Stats reports the counters (for status pages and tests).
func (r *Recorder) Stats() Stats {
	return Stats{Recorded: int64(r.m.events.Value()), Delivered: int64(r.m.delivered.Value()), Buffered: r.buf.len(),
		DroppedFull: int64(r.m.full.Value()), DroppedRejected: int64(r.m.rejected.Value()), SendFailures: int64(r.m.failures.Value())}
}

// Run delivers buffered events to the control plane until ctx ends, then
// tries once more for DrainTimeout. Without a Conn it only waits.
func (r *Recorder) Run(ctx context.Context) error {
	if r.cfg.Conn == nil {
		<-ctx.Done()
		return nil
	}
	backoff := r.cfg.MinBackoff
	for {
		if r.buf.len() == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-r.buf.wake:
			}
			if r.buf.len() < r.cfg.BatchSize && !sleep.For(ctx, r.cfg.Clock, r.cfg.FlushDelay) {
				return r.drain(ctx)
			}
		}
		if ctx.Err() != nil {
			return r.drain(ctx)
		}
		batch := r.buf.peek(r.cfg.BatchSize)
		err := r.send(ctx, batch)
		switch {
		case err == nil:
			r.delivered(batch)
			backoff = r.cfg.MinBackoff
		case status.Code(err) == codes.InvalidArgument:
			// Refused as malformed: it would be refused forever.
			r.buf.ack(len(batch))
			r.m.drop(DropRejected, len(batch))
			r.log.Error("control plane rejected a batch; dropped", "events", len(batch), "first", batch[0].ID, "err", err)
		case ctx.Err() != nil:
			return r.drain(ctx)
		default:
			r.m.failed()
			r.log.Warn("delivery failed; will resend", "events", len(batch), "buffered", r.buf.len(), "retry_in", backoff, "err", err)
			if !sleep.For(ctx, r.cfg.Clock, backoff/2+rand.N(backoff/2+1)) {
				return r.drain(ctx)
			}
			backoff = min(2*backoff, r.cfg.MaxBackoff)
		}
	}
}

// drain makes one last attempt to deliver what is buffered.
func (r *Recorder) drain(ctx context.Context) error {
	if r.buf.len() == 0 {
		return nil
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.DrainTimeout)
	defer cancel()
	batch := r.buf.peek(r.cfg.BatchSize)
	if err := r.send(dctx, batch); err != nil {
		r.log.Warn("undelivered events at shutdown", "events", r.buf.len(), "err", err)
		return nil
	}
	r.delivered(batch)
	if n := r.buf.len(); n > 0 {
		r.log.Warn("undelivered events at shutdown", "events", n)
	}
	return nil
}

func (r *Recorder) delivered(batch []apiaudit.Event) {
	r.buf.ack(len(batch))
	r.m.acked(len(batch))
}

// send delivers batch on one stream; nil means the control plane stored
// every event of it.
func (r *Recorder) send(ctx context.Context, batch []apiaudit.Event) error {
	for i := range batch {
		if batch[i].SourceID == "" {
			if batch[i].SourceID = r.sourceID(); batch[i].SourceID == "" {
				return errors.New("audit: the pod has no SVID yet")
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.SendTimeout)
	defer cancel()
	st, err := envoy.OpenStream[alsv3.StreamAccessLogsMessage, alsv3.StreamAccessLogsResponse](ctx, r.cfg.Conn, alsMethod, false)
	if err != nil {
		return fmt.Errorf("audit: open stream: %w", err)
	}
	for i := 0; i < len(batch); i += r.cfg.EntriesPerMessage {
		chunk := batch[i:min(i+r.cfg.EntriesPerMessage, len(batch))]
		logs := &alsv3.StreamAccessLogsMessage_TCPAccessLogEntries{}
		for _, e := range chunk {
			logs.LogEntry = append(logs.LogEntry, Entry(e))
		}
		msg := &alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_TcpLogs{TcpLogs: logs}}
		if i == 0 {
			msg.Identifier = Identifier(r.cfg.Pod, r.cfg.Namespace)
		}
		if err := st.Send(msg); err != nil {
			if errors.Is(err, io.EOF) {
				// The server ended the stream; its status says why.
				if _, err = st.CloseAndRecv(); err == nil {
					err = errors.New("stream ended before the batch was sent")
				}
			}
			return fmt.Errorf("audit: send: %w", err)
		}
	}
	if _, err := st.CloseAndRecv(); err != nil {
		return fmt.Errorf("audit: acknowledgement: %w", err)
	}
	return nil
}
