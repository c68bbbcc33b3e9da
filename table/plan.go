package table

import (
	"maps"
	"time"
)

// Write is one row change that a planned batch makes: Entity is the row's new content, or nil
// when the row is deleted.
type Write struct {
	RowKey string
	Entity *Entity
}

// PlanBatch is a helper for backends that store rows themselves (memory, bbolt). It checks every
// op of a batch that passed ValidateBatch against the current rows (lookup returns a row of
// partitionKey by row key), and returns the writes that apply it and the new ETag of each op.
// newETag is called once per written row. Nothing is written by PlanBatch: the caller applies the
// writes, all of them, inside one atomic step. Validation is left to the caller so that it can
// happen outside the backend's critical section.
func PlanBatch(partitionKey string, ops []Op, lookup func(rowKey string) (Entity, bool), newETag func() string) ([]Write, []string, error) {
	return planBatch(partitionKey, ops, lookup, newETag, true)
}

// PlanBatchShared is PlanBatch for a backend that encodes each write's properties before the
// caller's next call and keeps no reference to them (bbolt): the written entities share the ops'
// property maps and values instead of copies (a merge still gets a map of its own), and times
// keep the caller's precision and zone — the encoder must convert them as CloneProperties does.
func PlanBatchShared(partitionKey string, ops []Op, lookup func(rowKey string) (Entity, bool), newETag func() string) ([]Write, []string, error) {
	return planBatch(partitionKey, ops, lookup, newETag, false)
}

func planBatch(partitionKey string, ops []Op, lookup func(rowKey string) (Entity, bool), newETag func() string, clone bool) ([]Write, []string, error) {
	writes := make([]Write, len(ops))
	etags := make([]string, len(ops))
	for i, op := range ops {
		rk := op.Entity.RowKey
		cur, exists := lookup(rk)
		ifMatch := op.IfMatch
		if ifMatch == "" {
			ifMatch = AnyETag
		}
		switch op.Kind {
		case Insert:
			if exists {
				return nil, nil, &BatchError{Index: i, Code: "EntityAlreadyExists", Err: ErrAlreadyExists}
			}
		case Replace, Merge, Delete:
			if !exists {
				return nil, nil, &BatchError{Index: i, Code: "ResourceNotFound", Err: ErrNotFound}
			}
			if ifMatch != AnyETag && ifMatch != cur.ETag {
				return nil, nil, &BatchError{Index: i, Code: "UpdateConditionNotSatisfied", Err: ErrPreconditionFailed}
			}
		}
		if op.Kind == Delete {
			writes[i] = Write{RowKey: rk}
			continue
		}
		props := op.Entity.Properties
		if clone {
			props = CloneProperties(props)
		}
		if op.Kind == Merge {
			merged := CloneProperties(cur.Properties)
			maps.Copy(merged, props)
			props = merged
			// The merged row must still fit an entity, as Azure checks.
			if err := ValidateProperties(Entity{PartitionKey: partitionKey, RowKey: rk, Properties: props}); err != nil {
				return nil, nil, &BatchError{Index: i, Code: "EntityTooLarge", Err: err}
			}
		}
		etag := newETag()
		writes[i] = Write{RowKey: rk, Entity: &Entity{PartitionKey: partitionKey, RowKey: rk, ETag: etag, Properties: props}}
		etags[i] = etag
	}
	return writes, etags, nil
}

// CloneProperties returns a deep copy of props, with times in UTC truncated to the microsecond,
// so that a stored entity shares no memory with its caller.
func CloneProperties(props map[string]any) map[string]any {
	out := make(map[string]any, len(props))
	for k, v := range props {
		switch v := v.(type) {
		case []byte:
			out[k] = append([]byte(nil), v...)
		case time.Time:
			out[k] = v.UTC().Truncate(time.Microsecond)
		default:
			out[k] = v
		}
	}
	return out
}

// CloneEntity returns a deep copy of e.
func CloneEntity(e Entity) Entity {
	e.Properties = CloneProperties(e.Properties)
	return e
}
