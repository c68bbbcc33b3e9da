// Package bolt is the embedded backend of the table contract: every table of a Backend lives in
// one bbolt file. It is the default for local use and single-node servers.
//
// # File layout
//
// The file holds a meta bucket ("_meta": format version and ETag counter) and one bucket per
// table. A row is stored under the key partitionKey + "\x00" + rowKey, so that bbolt's byte
// order is the contract's partition-then-row-key order and a partition is a key prefix; its
// value is a compact, versioned binary encoding of the ETag and properties. FormatVersion
// documents the format byte by byte. ETags are W/"n", n counting up per file in the meta bucket
// in the same transaction as the rows, so they stay unique across reopens.
//
// # Group commit
//
// Each bbolt read-write transaction costs an fsync, which dominates the cost of a write. Submit
// therefore coalesces concurrent calls: the first caller that finds no commit in flight becomes
// the leader, takes every queued request, and applies them in arrival order inside one
// db.Update — each planned with table.PlanBatch against the rows as the earlier requests of the
// same transaction left them. A request whose plan fails gets its own error and writes nothing;
// the others still commit. After the commit the leader hands the requests queued meanwhile to
// one of their callers, the next leader, and then wakes every waiter of its own transaction with
// its result. No caller waits for a timer: under no contention a Submit is one plain
// transaction, and under contention a transaction carries everything that queued during the
// previous fsync. Reads run in bbolt read-only transactions, concurrently with writes.
//
// A commit that fails after it began writing (a failed page write or fsync) may or may not be
// durable: every request that took part in it fails with table.UnknownOutcome, an error that is
// both table.ErrTransient and table.ErrUnknownOutcome, never a definite failure. A request whose
// own batch was refused in that transaction keeps its *table.BatchError.
package bolt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/estuite/estuite/table"
)

// DefaultTimeout is how long Open waits by default for another process to release the file.
const DefaultTimeout = time.Second

// Options configure Open. The zero value (and a nil *Options) selects every default.
type Options struct {
	// FileMode is the permission of the file when Open creates it; 0 means 0o600. Missing parent
	// directories are created with the same permissions plus search (x) wherever read is
	// allowed (0o600 gives 0o700).
	FileMode os.FileMode

	// Timeout is how long Open waits for the file lock when another process holds the file
	// open: 0 means DefaultTimeout, a negative value means waiting indefinitely.
	Timeout time.Duration

	// NoSync skips fsync on commit.
	//
	// FOR TESTS ONLY. With NoSync an operating-system crash or power loss can lose writes that
	// Submit reported as done, or corrupt the whole file. Never set it on data you care about.
	NoSync bool
}

// Backend is one bbolt file holding a set of tables. It implements table.Backend and is safe for
// concurrent use.
type Backend struct {
	db *bbolt.DB
	gc committer
}

var _ table.Backend = (*Backend)(nil)

// Bucket and key names of the meta bucket; see FormatVersion.
var (
	metaBucket = []byte("_meta")
	formatKey  = []byte("format")
	etagKey    = []byte("etag")
)

// Open opens the bbolt file at path, creating it (and its parent directories) when missing.
// opts may be nil. The file is locked while open: another process opening it waits up to
// Options.Timeout. Close the Backend when done.
func Open(path string, opts *Options) (*Backend, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	mode := o.FileMode
	if mode == 0 {
		mode = 0o600
	}
	if err := os.MkdirAll(filepath.Dir(path), mode|(mode&0o444)>>2); err != nil {
		return nil, fmt.Errorf("bolt: %w", err)
	}
	db, err := bbolt.Open(path, mode, boltOptions(o))
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		switch v := meta.Get(formatKey); {
		case v == nil:
			return meta.Put(formatKey, []byte{FormatVersion})
		case len(v) != 1 || v[0] != FormatVersion:
			return fmt.Errorf("unsupported format version %v", v)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	b := &Backend{db: db}
	b.gc.db = db
	return b, nil
}

// boltOptions returns the bbolt options that Open uses.
func boltOptions(o Options) *bbolt.Options {
	timeout := o.Timeout
	switch {
	case timeout == 0:
		timeout = DefaultTimeout
	case timeout < 0:
		timeout = 0 // bbolt: wait indefinitely
	}
	return &bbolt.Options{
		Timeout:      timeout,
		NoSync:       o.NoSync,
		FreelistType: bbolt.FreelistMapType,
	}
}

// OpenTable returns the named table, creating its bucket when missing. It implements
// table.Backend.
func (b *Backend) OpenTable(_ context.Context, name string) (table.Table, error) {
	if err := table.ValidateTableName(name); err != nil {
		return nil, err
	}
	bucket := []byte(name)
	var exists bool
	err := b.db.View(func(tx *bbolt.Tx) error {
		exists = tx.Bucket(bucket) != nil
		return nil
	})
	if err == nil && !exists {
		err = b.db.Update(func(tx *bbolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucket)
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("bolt: open table %s: %w", name, err)
	}
	return &Table{db: b.db, gc: &b.gc, name: name, bucket: bucket}, nil
}

// Close closes the file, after the transactions in progress finish. Tables opened from the
// Backend fail afterwards (with an error wrapping bbolt.ErrDatabaseNotOpen).
func (b *Backend) Close() error {
	return b.db.Close()
}

// Table is one table of a Backend: one bbolt bucket. It implements table.Table and is safe for
// concurrent use.
type Table struct {
	db     *bbolt.DB
	gc     *committer
	name   string
	bucket []byte
}

var _ table.Table = (*Table)(nil)

// Get implements table.Table.
func (t *Table) Get(ctx context.Context, pk, rk string) (table.Entity, error) {
	if err := ctx.Err(); err != nil {
		return table.Entity{}, &table.TransientError{Err: err}
	}
	if err := table.ValidateKey("partition key", pk); err != nil {
		return table.Entity{}, err
	}
	if err := table.ValidateKey("row key", rk); err != nil {
		return table.Entity{}, err
	}
	var e table.Entity
	found := false
	err := t.db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(t.bucket)
		if bk == nil {
			return nil
		}
		v := bk.Get(rowKey(partitionPrefix(pk), rk))
		if v == nil {
			return nil
		}
		found = true
		return t.decode(pk, rk, v, &e)
	})
	if err != nil {
		return table.Entity{}, fmt.Errorf("bolt: get %s %q/%q: %w", t.name, pk, rk, err)
	}
	if !found {
		return table.Entity{}, fmt.Errorf("%w: row %q/%q of table %s", table.ErrNotFound, pk, rk, t.name)
	}
	return e, nil
}

// Query implements table.Table. The continuation is "r" followed by the row key to resume at.
func (t *Table) Query(ctx context.Context, q table.Query) (table.Page, error) {
	if err := ctx.Err(); err != nil {
		return table.Page{}, &table.TransientError{Err: err}
	}
	if err := table.ValidateQuery(q); err != nil {
		return table.Page{}, err
	}
	from := q.From
	if q.Continuation != "" {
		rest, ok := strings.CutPrefix(q.Continuation, "r")
		if !ok || rest == "" || table.ValidateBound("continuation", rest) != nil {
			return table.Page{}, table.Invalidf("bad continuation token %q", q.Continuation)
		}
		from = rest
	}
	limit := table.PageLimit(q)
	prefix := partitionPrefix(q.PartitionKey)
	var page table.Page
	err := t.db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(t.bucket)
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		for k, v := c.Seek(rowKey(prefix, from)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			rk := string(k[len(prefix):])
			if q.To != "" && rk >= q.To {
				break
			}
			if len(page.Entities) == limit {
				page.Continuation = "r" + rk
				break
			}
			var e table.Entity
			if err := t.decode(q.PartitionKey, rk, v, &e); err != nil {
				return err
			}
			page.Entities = append(page.Entities, e)
		}
		return nil
	})
	if err != nil {
		return table.Page{}, fmt.Errorf("bolt: query %s %q: %w", t.name, q.PartitionKey, err)
	}
	return page, nil
}

// Scan implements table.Table: a cursor over the table's bucket from the first key of
// q.FromPartition. The continuation is "k" followed by the unpadded base64url encoding of the
// bbolt key (partitionKey + "\x00" + rowKey) of the row to resume at.
func (t *Table) Scan(ctx context.Context, q table.ScanQuery) (table.Page, error) {
	if err := ctx.Err(); err != nil {
		return table.Page{}, &table.TransientError{Err: err}
	}
	if err := table.ValidateScan(q); err != nil {
		return table.Page{}, err
	}
	start := partitionPrefix(q.FromPartition)
	if q.Continuation != "" {
		k, err := decodeScanContinuation(q.Continuation)
		if err != nil {
			return table.Page{}, err
		}
		start = k
	}
	limit := table.ScanPageLimit(q)
	var page table.Page
	err := t.db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(t.bucket)
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		for k, v := c.Seek(start); k != nil; k, v = c.Next() {
			pk, rk, ok := bytes.Cut(k, []byte{0})
			if !ok {
				return fmt.Errorf("corrupt row key %q", k)
			}
			if q.ToPartition != "" && string(pk) >= q.ToPartition {
				break
			}
			if len(page.Entities) == limit {
				page.Continuation = "k" + base64.RawURLEncoding.EncodeToString(k)
				break
			}
			var e table.Entity
			if err := t.decode(string(pk), string(rk), v, &e); err != nil {
				return err
			}
			page.Entities = append(page.Entities, e)
		}
		return nil
	})
	if err != nil {
		return table.Page{}, fmt.Errorf("bolt: scan %s: %w", t.name, err)
	}
	return page, nil
}

// decodeScanContinuation returns the bbolt key that a scan continuation resumes at.
func decodeScanContinuation(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, "k")
	k, err := base64.RawURLEncoding.DecodeString(rest)
	if !ok || err != nil {
		return nil, table.Invalidf("bad scan continuation token %q", s)
	}
	pk, rk, ok := bytes.Cut(k, []byte{0})
	if !ok || table.ValidateBound("continuation", string(pk)) != nil || table.ValidateBound("continuation", string(rk)) != nil {
		return nil, table.Invalidf("bad scan continuation token %q", s)
	}
	return k, nil
}

// decode fills e with the row pk/rk stored as v.
func (t *Table) decode(pk, rk string, v []byte, e *table.Entity) error {
	etag, props, err := decodeRow(v)
	if err != nil {
		return fmt.Errorf("row %q/%q: %w", pk, rk, err)
	}
	*e = table.Entity{PartitionKey: pk, RowKey: rk, ETag: etag, Properties: props}
	return nil
}

// Submit implements table.Table. Concurrent calls share one bbolt transaction (see the package
// documentation). When ctx is done before the call's batch is taken into a transaction, Submit
// returns ctx's error (wrapped as a table.TransientError) and writes nothing; once taken, it
// waits for the outcome.
func (t *Table) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, &table.TransientError{Err: err}
	}
	if err := table.ValidateBatch(pk, ops); err != nil {
		return nil, err
	}
	r := &request{table: t, pk: pk, ops: ops, wake: make(chan struct{})}
	t.gc.submit(ctx, r)
	return r.etags, r.err
}

// partitionPrefix is the key prefix of the rows of partition pk.
func partitionPrefix(pk string) []byte {
	p := make([]byte, 0, len(pk)+1)
	p = append(p, pk...)
	return append(p, 0)
}

// rowKey is the bbolt key of row rk in the partition of prefix (a fresh slice).
func rowKey(prefix []byte, rk string) []byte {
	k := make([]byte, 0, len(prefix)+len(rk))
	k = append(k, prefix...)
	return append(k, rk...)
}

// formatETag is the ETag of counter value n.
func formatETag(n uint64) string {
	return `W/"` + strconv.FormatUint(n, 10) + `"`
}

// applyRequest plans r against the rows of tx and writes the result. A failed plan is r's own
// error (r.err) and writes nothing; a returned error is a storage failure that must abort tx.
func applyRequest(tx *bbolt.Tx, r *request, newETag func() string) error {
	parts := append([]part{{table: r.table, pk: r.pk, ops: r.ops}}, r.extra...)
	plans := make([]*plannedPart, len(parts))
	for i, p := range parts {
		pl, err := planPart(tx, p, newETag)
		if err != nil {
			if len(parts) > 1 {
				err = &table.PartError{Part: i, Err: err}
			}
			r.err = err // the request fails alone, writing nothing
			return nil
		}
		plans[i] = pl
	}
	for _, pl := range plans {
		if err := pl.apply(); err != nil {
			return err
		}
	}
	r.etags = plans[0].etags
	for _, pl := range plans[1:] {
		r.extraETags = append(r.extraETags, pl.etags)
	}
	return nil
}

// plannedPart is a part checked against the rows of a transaction, ready to be written.
type plannedPart struct {
	bk     *bbolt.Bucket
	prefix []byte
	writes []table.Write
	values [][]byte
	etags  []string
}

// planPart checks one part's ops against the transaction's rows and encodes its writes.
func planPart(tx *bbolt.Tx, p part, newETag func() string) (*plannedPart, error) {
	bk := tx.Bucket(p.table.bucket)
	if bk == nil {
		return nil, fmt.Errorf("%w: table %s", table.ErrNotFound, p.table.name)
	}
	prefix := partitionPrefix(p.pk)
	var readErr error
	lookup := func(rk string) (table.Entity, bool) {
		v := bk.Get(rowKey(prefix, rk))
		if v == nil {
			return table.Entity{}, false
		}
		var e table.Entity
		if err := p.table.decode(p.pk, rk, v, &e); err != nil {
			readErr = err
			return table.Entity{}, false
		}
		return e, true
	}
	// The writes are encoded below, before the request ends: no copy of their properties.
	writes, etags, err := table.PlanBatchShared(p.pk, p.ops, lookup, newETag)
	if readErr != nil {
		return nil, fmt.Errorf("bolt: submit %s %q: %w", p.table.name, p.pk, readErr)
	}
	if err != nil {
		return nil, err
	}
	values := make([][]byte, len(writes))
	for i, w := range writes {
		if w.Entity != nil {
			if values[i], err = encodeRowTimes(w.Entity.ETag, w.Entity.Properties, true); err != nil {
				return nil, &table.BatchError{Index: i, Code: "InvalidInput", Err: table.Invalidf("%v", err)}
			}
		}
	}
	return &plannedPart{bk: bk, prefix: prefix, writes: writes, values: values, etags: etags}, nil
}

func (pl *plannedPart) apply() error {
	for i, w := range pl.writes {
		k := rowKey(pl.prefix, w.RowKey)
		var err error
		if w.Entity == nil {
			err = pl.bk.Delete(k)
		} else {
			err = pl.bk.Put(k, pl.values[i])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// readCounter returns the ETag counter stored in the meta bucket.
func readCounter(meta *bbolt.Bucket) (uint64, error) {
	v := meta.Get(etagKey)
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return binary.BigEndian.Uint64(v), nil
	}
	return 0, errors.New("bolt: corrupt ETag counter")
}

// SubmitParts implements table.MultiSubmitter: the parts commit in one bbolt transaction, so
// that they become visible and durable together. Every part's table must come from this backend.
func (b *Backend) SubmitParts(ctx context.Context, parts []table.Part) ([][]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, &table.TransientError{Err: err}
	}
	if len(parts) == 0 {
		return nil, table.Invalidf("no parts")
	}
	ps := make([]part, len(parts))
	seen := make(map[string]bool, len(parts))
	for i, p := range parts {
		t, ok := p.Table.(*Table)
		if !ok || t.gc != &b.gc {
			return nil, &table.PartError{Part: i, Err: table.Invalidf("table of another backend")}
		}
		if err := table.ValidateBatch(p.PartitionKey, p.Ops); err != nil {
			return nil, &table.PartError{Part: i, Err: err}
		}
		key := t.name + "\x00" + p.PartitionKey
		if seen[key] {
			return nil, &table.PartError{Part: i, Err: table.Invalidf("partition %q of table %s appears twice", p.PartitionKey, t.name)}
		}
		seen[key] = true
		ps[i] = part{table: t, pk: p.PartitionKey, ops: p.Ops}
	}
	r := &request{table: ps[0].table, pk: ps[0].pk, ops: ps[0].ops, extra: ps[1:], wake: make(chan struct{})}
	b.gc.submit(ctx, r)
	if r.err != nil {
		return nil, r.err
	}
	return append([][]string{r.etags}, r.extraETags...), nil
}
