package estuite

import (
	"context"
	"errors"
	"fmt"

	"github.com/estuite/estuite/table"
)

// RewrapResult is what Store.RewrapKeys did.
type RewrapResult struct {
	// Keys is the number of key rows read; Forgotten the tombstones among them (no key to
	// rewrap).
	Keys, Forgotten int
	// Rewrapped is the number of data keys now wrapped by the store's MasterKey that were
	// wrapped by a previous master key, or stored unwrapped.
	Rewrapped int
	// Current is the number already wrapped by MasterKey.
	Current int
	// Failures counts the keys that could not be rewrapped (wrapped by a master key the store
	// does not have, or malformed); Failed names the first 100 of their subjects.
	Failures int
	Failed   []string
}

// fail counts a key that could not be rewrapped.
func (r *RewrapResult) fail(subject string) {
	r.Failures++
	if len(r.Failed) < 100 {
		r.Failed = append(r.Failed, subject)
	}
}

// RewrapKeys rewraps every subject's data key under the store's MasterKey: the keys wrapped by
// one of its PreviousMasterKeys, and those stored unwrapped before the store had a master key.
// Rotating the master key is: open every process with the new key as MasterKey and the old one
// in PreviousMasterKeys, run RewrapKeys, then drop the old key (a store without it fails with
// ErrMasterKey on a key it did not rewrap; RewrapResult.Failures must be 0 first).
//
// It scans the whole key table (on Azure a full table scan: a maintenance operation, one read
// page per 1,000 subjects) and writes one request per key it rewraps, under the ETag it read,
// so a subject forgotten meanwhile stays forgotten. The data keys themselves do not change, so
// no event is read or written again, and running it twice rewraps nothing the second time.
func (s *Store) RewrapKeys(ctx context.Context) (RewrapResult, error) {
	var res RewrapResult
	if err := s.checkOpen(); err != nil {
		return res, err
	}
	if s.master == nil {
		return res, invalid("master key", "is not set: RewrapKeys rewraps the data keys under Options.MasterKey")
	}
	err := s.keys.scanPages(ctx, table.ScanQuery{}, func(p table.Page) error {
		for _, row := range p.Entities {
			if err := s.rewrap(ctx, row, &res); err != nil {
				return err
			}
		}
		return nil
	})
	return res, err
}

// rewrap rewraps one key row under the master key, if it is not already.
func (s *Store) rewrap(ctx context.Context, row table.Entity, res *RewrapResult) error {
	res.Keys++
	subject, _ := row.Properties[propSubject].(string)
	if _, ok := row.Properties[propForgotten]; ok {
		res.Forgotten++
		return nil
	}
	if id, _ := row.Properties[propMasterKeyID].(string); id == s.master.id {
		res.Current++
		return nil
	}
	if row.RowKey != keyRowKey || subject == "" || subjectKeyPartition(subject) != row.PartitionKey {
		res.fail(fmt.Sprintf("%s (a malformed key row)", row.PartitionKey))
		return nil
	}
	raw, _, err := s.rawKey(subject, row)
	if err != nil {
		res.fail(subject)
		return nil
	}
	props := make(map[string]any, len(row.Properties))
	for k, v := range row.Properties {
		props[k] = v
	}
	props[propKey], props[propMasterKeyID] = s.master.wrap(subject, raw), s.master.id
	op := table.Op{Kind: table.Replace, Entity: table.Entity{PartitionKey: row.PartitionKey, RowKey: keyRowKey, Properties: props}, IfMatch: row.ETag}
	_, err = withRetry(ctx, s.keys.retry, func() ([]string, error) { return s.keys.submitOnce(ctx, row.PartitionKey, []table.Op{op}) })
	var be *table.BatchError
	switch {
	case err == nil:
		res.Rewrapped++
	case errors.As(err, &be):
		// The row changed since the scan — forgotten (the tombstone stays), or rewrapped by
		// another run, or by this one when a retry follows an attempt whose answer was lost:
		// see which.
		now, err := s.keys.get(ctx, row.PartitionKey, keyRowKey)
		if err != nil {
			return err
		}
		if _, ok := now.Properties[propForgotten]; ok {
			res.Forgotten++
		} else if id, _ := now.Properties[propMasterKeyID].(string); id == s.master.id {
			res.Rewrapped++
		} else {
			res.fail(subject)
		}
	default:
		return err
	}
	return nil
}
