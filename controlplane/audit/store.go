package audit

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"k8s.io/utils/clock"

	apiaudit "github.com/weftmesh/weft/api/audit"
)

// DefaultStorePath is where the install mounts the audit volume.
const DefaultStorePath = "/var/lib/weft/audit.db"

var (
	// time key (8 bytes unix nanos of the receive time, big endian) +
	// identity key → JSON apiaudit.Event
	bucketEvents = []byte("events")
	bucketIDs    = []byte("ids") // identity key → time key + identity key
)

// DefaultMaxEvents bounds the store: at ~1 KiB per event on disk (JSON and
// bbolt's pages), 500,000 events stay well inside the install's 1 GiB
// emptyDir, which the kubelet would otherwise evict the control plane for.
const DefaultMaxEvents = 500_000

// identityKey is what makes an event unique: the stream's verified pod and
// namespace, then the sidecar's ID. Another pod cannot take a victim's
// next IDs: its own events are keyed under its own name.
func identityKey(e apiaudit.Event) []byte {
	return []byte(e.Namespace + "/" + e.Pod + "/" + e.ID)
}

// StoreConfig configures a Store. Zero fields get the defaults in their
// comments.
type StoreConfig struct {
	Path          string        // DefaultStorePath
	Retention     time.Duration // events older than this are pruned: 7 days
	PruneInterval time.Duration // how often Run prunes: 10m
	// MaxEvents caps the store: inserting past it evicts the oldest events
	// (by receive time) first. DefaultMaxEvents.
	MaxEvents int
	Logger    *slog.Logger
	Clock     clock.WithTicker
}

// Store holds audit events in a bbolt file. Safe for concurrent use.
type Store struct {
	cfg StoreConfig
	db  *bolt.DB
	log *slog.Logger
	// n counts stored events; written only inside bbolt's (serialised)
	// update transactions.
	n atomic.Int64
}

// OpenStore opens (or creates) the store's file. Only one process may hold
// it: a second OpenStore on the same file fails after a second.
func OpenStore(cfg StoreConfig) (*Store, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultStorePath
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	if cfg.PruneInterval <= 0 {
		cfg.PruneInterval = 10 * time.Minute
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o750); err != nil {
		return nil, fmt.Errorf("audit: store %s: %w", cfg.Path, err)
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("audit: open store %s: %w", cfg.Path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEvents, bucketIDs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("audit: store %s: %w", cfg.Path, err)
	}
	st := &Store{cfg: cfg, db: db, log: cfg.Logger}
	_ = db.View(func(tx *bolt.Tx) error {
		st.n.Store(int64(tx.Bucket(bucketIDs).Stats().KeyN))
		return nil
	})
	return st, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Insert stores the events it does not hold yet (by identity: namespace,
// pod and ID), in one transaction, and returns those (duplicates are
// skipped: inserting is idempotent). Events are ordered by Received (the
// control plane's clock; Time when Received is zero). Past MaxEvents the
// oldest are evicted in the same transaction; evicted says how many. When
// Insert returns nil, the events are on disk.
func (s *Store) Insert(events []apiaudit.Event) (added []apiaudit.Event, evicted int, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		added, evicted = added[:0], 0
		evb, idb := tx.Bucket(bucketEvents), tx.Bucket(bucketIDs)
		n := s.n.Load()
		for _, e := range events {
			if e.ID == "" {
				return errors.New("event without ID")
			}
			ik := identityKey(e)
			if idb.Get(ik) != nil {
				continue
			}
			v, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("event %s: %w", e.ID, err)
			}
			k := append(timeKey(cmp.Or(e.Received, e.Time)), ik...)
			if err := evb.Put(k, v); err != nil {
				return err
			}
			if err := idb.Put(ik, k); err != nil {
				return err
			}
			added = append(added, e)
			n++
		}
		// Oldest first, past the cap.
		old, err := deleteOldest(tx, func(_ []byte, deleted int) bool { return n-int64(deleted) > int64(s.cfg.MaxEvents) })
		if err != nil {
			return err
		}
		evicted = old
		s.n.Store(n - int64(old))
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("audit: insert %d events: %w", len(events), err)
	}
	return added, evicted, nil
}

// Len is the number of stored events.
func (s *Store) Len() int { return int(s.n.Load()) }

// Cap is the most events the store keeps (StoreConfig.MaxEvents).
func (s *Store) Cap() int { return s.cfg.MaxEvents }

// Query selects events. Zero fields match everything.
type Query struct {
	Since, Until time.Time // Since <= Received < Until (Time for events stored without it)
	Namespace    string
	// Workload matches the source's pod name, SPIFFE ID, or service
	// account ("sa" segment of the SPIFFE ID).
	Workload string
	// Destination matches DstHost, SNI, Host, the IP, or Destination()
	// ("host:port"); "*.example.com" matches names under example.com.
	Destination string
	Decision    string // allow, deny, audit
	Limit       int    // 0: no limit
	// ByWorkload groups a Summary by source workload and destination
	// instead of by destination.
	ByWorkload bool
}

// Match reports whether e passes the query's filters (not its time range).
func (q Query) Match(e apiaudit.Event) bool {
	switch {
	case q.Namespace != "" && e.Namespace != q.Namespace,
		q.Decision != "" && e.Decision != q.Decision,
		q.Workload != "" && !matchWorkload(q.Workload, e),
		q.Destination != "" && !matchDestination(q.Destination, e):
		return false
	}
	return true
}

// Query returns the matching events, newest first, at most q.Limit.
func (s *Store) Query(q Query) ([]apiaudit.Event, error) {
	var out []apiaudit.Event
	err := s.scan(q, true, func(e apiaudit.Event) bool {
		out = append(out, e)
		return q.Limit <= 0 || len(out) < q.Limit
	})
	return out, err
}

// scan calls f for each matching event in [Since, Until), newest first if
// reverse, until f returns false.
func (s *Store) scan(q Query, reverse bool, f func(apiaudit.Event) bool) error {
	lo := timeKey(q.Since)
	hi := []byte(nil)
	if !q.Until.IsZero() {
		hi = timeKey(q.Until)
	}
	inRange := func(k []byte) bool {
		return k != nil && bytes.Compare(k[:8], lo) >= 0 && (hi == nil || bytes.Compare(k[:8], hi) < 0)
	}
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		var k, v []byte
		step := c.Next
		switch {
		case !reverse:
			k, v = c.Seek(lo)
		case hi == nil:
			step = c.Prev
			k, v = c.Last()
		default:
			step = c.Prev
			if k, v = c.Seek(hi); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for ; inRange(k); k, v = step() {
			var e apiaudit.Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("audit: stored event %x: %w", k, err)
			}
			if q.Match(e) && !f(e) {
				return nil
			}
		}
		return nil
	})
}

// Prune deletes events older than the retention and returns how many.
func (s *Store) Prune() (int, error) {
	cutoff := timeKey(s.cfg.Clock.Now().Add(-s.cfg.Retention))
	total := 0
	for {
		// Bounded transactions.
		var n int
		err := s.db.Update(func(tx *bolt.Tx) error {
			var err error
			n, err = deleteOldest(tx, func(k []byte, deleted int) bool { return bytes.Compare(k[:8], cutoff) < 0 && deleted < 10000 })
			if err != nil {
				return err
			}
			s.n.Add(-int64(n))
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("audit: prune: %w", err)
		}
		total += n
		if n < 10000 {
			return total, nil
		}
	}
}

// deleteOldest deletes events, oldest first, while more holds of the next
// event's key and how many are deleted so far, with their identities; it
// returns how many it deleted. It collects the keys, then deletes them:
// deleting under a moving cursor skips keys.
func deleteOldest(tx *bolt.Tx, more func(k []byte, deleted int) bool) (int, error) {
	evb, idb := tx.Bucket(bucketEvents), tx.Bucket(bucketIDs)
	var keys [][]byte
	c := evb.Cursor()
	for k, _ := c.First(); k != nil && more(k, len(keys)); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := evb.Delete(k); err != nil {
			return 0, err
		}
		if err := idb.Delete(k[8:]); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// Run prunes every PruneInterval until ctx ends; prune reports each pass
// (for metrics; may be nil).
func (s *Store) Run(ctx context.Context, pruned func(int)) error {
	t := s.cfg.Clock.NewTicker(s.cfg.PruneInterval)
	defer t.Stop()
	for {
		n, err := s.Prune()
		if err != nil {
			s.log.Error("prune failed", "err", err)
		} else if n > 0 {
			s.log.Info("pruned events", "events", n, "retention", s.cfg.Retention)
		}
		if pruned != nil && n > 0 {
			pruned(n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

func timeKey(t time.Time) []byte {
	var n uint64
	if !t.IsZero() {
		// UnixNano wraps past int64 nanoseconds (after 2262-04-11), to a
		// negative number for centuries: a later time is the last key.
		switch ns := t.UnixNano(); {
		case t.Unix() < 0:
			n = 0
		case ns < 0 || t.Year() > 2262:
			n = math.MaxUint64
		default:
			n = uint64(ns)
		}
	}
	return binary.BigEndian.AppendUint64(nil, n)
}
