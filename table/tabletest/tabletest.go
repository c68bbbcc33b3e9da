// Package tabletest is the conformance suite of the table contract. Every backend runs it with
// one short test:
//
//	func TestConformance(t *testing.T) {
//		tabletest.Run(t, tabletest.Harness{NewTable: func(t *testing.T) table.Table { ... }})
//	}
//
// The suite checks what the event store relies on: point reads, the property types, keys with
// awkward characters, the semantics and atomicity of batches (including the index of the failing
// operation), ETags, the limits of Azure Table Storage, range queries with paging, scans of the
// whole table, optimistic concurrency under contention and canceled contexts. It is kept fast
// enough to run against Azurite (a few seconds).
package tabletest

import (
	"context"
	"testing"

	"github.com/estuite/estuite/table"
)

// Harness gives the suite fresh tables of the backend under test.
type Harness struct {
	// NewTable returns a new, empty table; it is called once per subtest.
	NewTable func(t *testing.T) table.Table

	// PageSize, when positive, is the most rows the backend puts in one query page, for a
	// backend whose pages are capped below table.MaxPageSize (such as the memory backend with
	// mem.Options.PageSize). The suite then also checks that no page exceeds it. 0 means the
	// backend's pages are only capped at table.MaxPageSize.
	PageSize int

	// Goroutines is how many goroutines the concurrency subtests run at once; 0 means 8.
	Goroutines int
}

// Run runs the whole conformance suite against the backend of h. Each subtest gets a fresh table
// from h.NewTable.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.NewTable == nil {
		t.Fatal("tabletest: Harness.NewTable is nil")
	}
	if h.PageSize < 0 || h.PageSize > table.MaxPageSize {
		t.Fatalf("tabletest: Harness.PageSize %d is outside [0, %d]", h.PageSize, table.MaxPageSize)
	}
	s := &suite{h: h}
	for _, g := range s.groups() {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.tests {
				t.Run(c.name, c.run)
			}
		})
	}
}

// QueryAll runs q to the end: it follows continuations, across empty pages too, and returns
// every row in the order the pages gave them, with the number of pages read (empty ones
// included). q.Continuation is where it starts ("" for the beginning).
func QueryAll(ctx context.Context, tbl table.Table, q table.Query) ([]table.Entity, int, error) {
	var rows []table.Entity
	pages := 0
	for {
		page, err := tbl.Query(ctx, q)
		if err != nil {
			return rows, pages, err
		}
		pages++
		rows = append(rows, page.Entities...)
		if page.Continuation == "" {
			return rows, pages, nil
		}
		q.Continuation = page.Continuation
	}
}

// ScanAll runs q to the end like QueryAll: it follows continuations, across empty pages too,
// and returns every row in the order the pages gave them, with the number of pages read (empty
// ones included). q.Continuation is where it starts ("" for the beginning).
func ScanAll(ctx context.Context, tbl table.Table, q table.ScanQuery) ([]table.Entity, int, error) {
	var rows []table.Entity
	pages := 0
	for {
		page, err := tbl.Scan(ctx, q)
		if err != nil {
			return rows, pages, err
		}
		pages++
		rows = append(rows, page.Entities...)
		if page.Continuation == "" {
			return rows, pages, nil
		}
		q.Continuation = page.Continuation
	}
}

type suite struct {
	h Harness
}

type group struct {
	name  string
	tests []test
}

type test struct {
	name string
	run  func(t *testing.T)
}

// table returns a fresh table for one subtest.
func (s *suite) table(t *testing.T) table.Table {
	t.Helper()
	tbl := s.h.NewTable(t)
	if tbl == nil {
		t.Fatal("Harness.NewTable returned nil")
	}
	return tbl
}

// pageCap is the largest page the backend may return for a query with the given limit.
func (s *suite) pageCap(limit int) int {
	c := table.MaxPageSize
	if limit > 0 && limit < c {
		c = limit
	}
	if s.h.PageSize > 0 && s.h.PageSize < c {
		c = s.h.PageSize
	}
	return c
}

func (s *suite) goroutines() int {
	if s.h.Goroutines > 0 {
		return s.h.Goroutines
	}
	return 8
}

func (s *suite) groups() []group {
	return []group{
		{"Get", []test{
			{"MissingRowIsNotFound", s.testGetMissing},
			{"InvalidKeysAreInvalid", s.testGetInvalidKeys},
		}},
		{"Properties", []test{
			{"RoundTripEveryType", s.testRoundTrip},
			{"MaximumSizesRoundTrip", s.testMaxSizes},
			{"TimeKeepsMicroseconds", s.testTimePrecision},
			{"NoAliasingWithCaller", s.testNoAliasing},
			{"MaxPropertyCount", s.testMaxPropertyCount},
			{"EntityOfMaxSizeWorks", s.testEntityMaxSize},
			{"EntityTooLargeIsInvalid", s.testEntityTooLarge},
			{"PropertyTooLargeIsInvalid", s.testPropertyTooLarge},
			{"UnsupportedTypesAreInvalid", s.testUnsupportedTypes},
			{"BadPropertyNamesAreInvalid", s.testBadPropertyNames},
		}},
		{"Keys", []test{
			{"SpecialCharactersRoundTrip", s.testSpecialKeys},
			{"MaxLengthKeysWork", s.testMaxKeys},
			{"InvalidKeysAreInvalid", s.testInvalidKeys},
		}},
		{"Insert", []test{
			{"CreatesRow", s.testInsertCreates},
			{"ExistingRowFailsWholeBatch", s.testInsertExisting},
			{"AfterDeleteCreatesNewRow", s.testInsertAfterDelete},
		}},
		{"Replace", []test{
			{"RightETagReplacesAllProperties", s.testReplaceRightETag},
			{"WrongETagIsPreconditionFailed", s.testReplaceWrongETag},
			{"MissingRowIsNotFound", s.testReplaceMissing},
			{"AnyETagReplacesExisting", s.testReplaceAnyETag},
		}},
		{"Merge", []test{
			{"KeepsOtherProperties", s.testMergeKeeps},
			{"WrongETagIsPreconditionFailed", s.testMergeWrongETag},
			{"MissingRowIsNotFound", s.testMergeMissing},
		}},
		{"Upsert", []test{
			{"CreatesAndOverwrites", s.testUpsert},
		}},
		{"Delete", []test{
			{"RightETagDeletes", s.testDeleteRightETag},
			{"WrongETagIsPreconditionFailed", s.testDeleteWrongETag},
			{"MissingRowIsNotFound", s.testDeleteMissing},
		}},
		{"ETag", []test{
			{"ChangesOnEveryWrite", s.testETagChanges},
			{"SubmitReturnsStoredETags", s.testBatchETags},
		}},
		{"Batch", []test{
			{"FailingOpIndex", s.testFailureIndex},
			{"MaxOpsWorks", s.testMaxOps},
			{"TooManyOpsIsInvalid", s.testTooManyOps},
			{"MaxBytes", s.testMaxBytes},
			{"OtherPartitionIsInvalid", s.testOtherPartition},
			{"TwoOpsOnOneRowIsInvalid", s.testDuplicateRow},
			{"EmptyBatchIsInvalid", s.testEmptyBatch},
			{"UnknownOpKindIsInvalid", s.testUnknownKind},
		}},
		{"Query", []test{
			{"RowKeyOrder", s.testQueryOrder},
			{"Range", s.testQueryRange},
			{"OnlyItsPartition", s.testQueryPartitions},
			{"MissingPartitionIsEmpty", s.testQueryMissingPartition},
			{"Limit", s.testQueryLimit},
			{"PagingPast1000Rows", s.testQueryPaging},
			{"InvalidQueryIsInvalid", s.testQueryInvalid},
		}},
		{"Scan", []test{
			{"PartitionThenRowKeyOrder", s.testScanOrder},
			{"PartitionBounds", s.testScanBounds},
			{"Limit", s.testScanLimit},
			{"PagingPast1000Rows", s.testScanPaging},
			{"EmptyTableIsEmpty", s.testScanEmpty},
			{"InvalidScanIsInvalid", s.testScanInvalid},
		}},
		{"Concurrency", []test{
			{"ReplaceSameETagOneWins", s.testConcurrentReplace},
			{"InsertSameRowOneWins", s.testConcurrentInsert},
			{"DistinctRowsAllWin", s.testConcurrentDistinct},
			{"CounterLosesNoUpdate", s.testConcurrentCounter},
		}},
		{"Context", []test{
			{"CanceledCallsFailAndWriteNothing", s.testCanceled},
		}},
	}
}
