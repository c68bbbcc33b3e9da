// Package verifyjson is the wire form of a verification over HTTP (POST /admin/verify and
// GET /admin/verify/{id}, docs/http-api.md): the server encodes with it and the client decodes
// with it, so that the two cannot drift apart.
package verifyjson

import (
	"github.com/estuite/estuite"
)

// MaxListItems is how many entries of each of a report's lists the wire form holds. The full
// length of each list is in Report.Counts, and Report.Truncated says whether any was cut.
const MaxListItems = 1000

// Job states.
const (
	StateRunning  = "running"
	StateDone     = "done"
	StateFailed   = "failed"
	StateCanceled = "canceled"
)

// Job is a verification job as GET /admin/verify/{id} answers it.
type Job struct {
	ID       string   `json:"id"`
	State    string   `json:"state"`
	Started  string   `json:"started"`
	Finished *string  `json:"finished"`
	Progress Progress `json:"progress"`
	Report   *Report  `json:"report"`
	Error    *string  `json:"error"`
}

// Progress is how far a running job is (the last estuite.VerifyProgress it reported), with the
// feed head read when it started and an estimate of the fraction done.
type Progress struct {
	Phase         string  `json:"phase"`
	Rows          int64   `json:"rows"`
	Streams       int64   `json:"streams"`
	FeedPositions int64   `json:"feedPositions"`
	FeedHead      int64   `json:"feedHead"`
	Fraction      float64 `json:"fraction"`
}

// Report is an estuite.VerifyReport on the wire, with its lists cut to MaxListItems entries.
type Report struct {
	OK              bool           `json:"ok"`
	Streams         int64          `json:"streams"`
	Events          int64          `json:"events"`
	FeedHead        int64          `json:"feedHead"`
	FeedHeads       []int64        `json:"feedHeads"`
	Missing         []StreamRange  `json:"missing"`
	Holes           []StreamRange  `json:"holes"`
	Pending         []StreamRange  `json:"pending"`
	Duplicates      []FeedFault    `json:"duplicates"`
	Gaps            []PositionSpan `json:"gaps"`
	OrderViolations []FeedFault    `json:"orderViolations"`
	Unparseable     []RowFault     `json:"unparseable"`
	ProgressBehind  []StreamRange  `json:"progressBehind"`
	Redacted        int64          `json:"redacted"`
	WrongRedactions []StreamRange  `json:"wrongRedactions"`
	Lost            []StreamRange  `json:"lost"`
	Uncatalogued    []string       `json:"uncatalogued"`
	Counts          Counts         `json:"counts"`
	Truncated       bool           `json:"truncated"`
}

// Counts are the full lengths of a report's lists.
type Counts struct {
	Missing         int `json:"missing"`
	Holes           int `json:"holes"`
	Pending         int `json:"pending"`
	Duplicates      int `json:"duplicates"`
	Gaps            int `json:"gaps"`
	OrderViolations int `json:"orderViolations"`
	Unparseable     int `json:"unparseable"`
	ProgressBehind  int `json:"progressBehind"`
	WrongRedactions int `json:"wrongRedactions"`
	Lost            int `json:"lost"`
	Uncatalogued    int `json:"uncatalogued"`
}

// StreamRange is an estuite.StreamRange.
type StreamRange struct {
	Stream string `json:"stream"`
	From   int64  `json:"from"`
	To     int64  `json:"to"`
}

// PositionSpan is an estuite.PositionRange.
type PositionSpan struct {
	Shard int   `json:"shard"`
	From  int64 `json:"from"`
	To    int64 `json:"to"`
}

// FeedFault is an estuite.FeedFault.
type FeedFault struct {
	Shard    int    `json:"shard"`
	Position int64  `json:"position"`
	Stream   string `json:"stream"`
	Version  int64  `json:"version"`
	Reason   string `json:"reason"`
}

// RowFault is an estuite.RowFault.
type RowFault struct {
	Table        string `json:"table"`
	PartitionKey string `json:"partitionKey"`
	RowKey       string `json:"rowKey"`
	Reason       string `json:"reason"`
}

// convert maps the first MaxListItems entries of in with f, always to a non-nil slice (the wire
// form says [] for an empty list), and reports whether it cut any.
func convert[T, W any](in []T, f func(T) W) ([]W, bool) {
	n := min(len(in), MaxListItems)
	out := make([]W, n)
	for i := range n {
		out[i] = f(in[i])
	}
	return out, len(in) > n
}

// back maps a wire list back; an empty list becomes nil, as Store.Verify leaves it.
func back[W, T any](in []W, f func(W) T) []T {
	if len(in) == 0 {
		return nil
	}
	out := make([]T, len(in))
	for i, w := range in {
		out[i] = f(w)
	}
	return out
}

func streamRange(r estuite.StreamRange) StreamRange { return StreamRange{r.Stream, r.From, r.To} }
func (r StreamRange) report() estuite.StreamRange {
	return estuite.StreamRange{Stream: r.Stream, From: r.From, To: r.To}
}
func feedFault(f estuite.FeedFault) FeedFault {
	return FeedFault{f.Shard, f.Position, f.Stream, f.Version, f.Reason}
}
func (f FeedFault) report() estuite.FeedFault {
	return estuite.FeedFault{Shard: f.Shard, Position: f.Position, Stream: f.Stream, Version: f.Version, Reason: f.Reason}
}

// FromReport returns the wire form of r, its lists cut to MaxListItems entries each.
func FromReport(r *estuite.VerifyReport) *Report {
	out := &Report{OK: r.OK(), Streams: r.Streams, Events: r.Events, FeedHead: r.FeedHead, Redacted: r.Redacted,
		FeedHeads: append([]int64{}, r.FeedHeads...)}
	cut := make([]bool, 11)
	out.Missing, cut[0] = convert(r.Missing, streamRange)
	out.Holes, cut[1] = convert(r.Holes, streamRange)
	out.Pending, cut[2] = convert(r.Pending, streamRange)
	out.Duplicates, cut[3] = convert(r.Duplicates, feedFault)
	out.Gaps, cut[4] = convert(r.Gaps, func(g estuite.PositionRange) PositionSpan { return PositionSpan{g.Shard, g.From, g.To} })
	out.OrderViolations, cut[5] = convert(r.OrderViolations, feedFault)
	out.Unparseable, cut[6] = convert(r.Unparseable, func(f estuite.RowFault) RowFault {
		return RowFault{f.Table, f.PartitionKey, f.RowKey, f.Reason}
	})
	out.ProgressBehind, cut[7] = convert(r.ProgressBehind, streamRange)
	out.WrongRedactions, cut[8] = convert(r.WrongRedactions, streamRange)
	out.Lost, cut[9] = convert(r.Lost, streamRange)
	out.Uncatalogued, cut[10] = convert(r.Uncatalogued, func(s string) string { return s })
	for _, c := range cut {
		out.Truncated = out.Truncated || c
	}
	out.Counts = Counts{Missing: len(r.Missing), Holes: len(r.Holes), Pending: len(r.Pending), Duplicates: len(r.Duplicates),
		Gaps: len(r.Gaps), OrderViolations: len(r.OrderViolations), Unparseable: len(r.Unparseable),
		ProgressBehind: len(r.ProgressBehind), WrongRedactions: len(r.WrongRedactions), Lost: len(r.Lost),
		Uncatalogued: len(r.Uncatalogued)}
	return out
}

// ToReport returns the estuite.VerifyReport that r stands for (with the entries r holds: all of
// them unless r.Truncated).
func (r *Report) ToReport() *estuite.VerifyReport {
	toRange := func(s StreamRange) estuite.StreamRange { return s.report() }
	toFault := func(f FeedFault) estuite.FeedFault { return f.report() }
	return &estuite.VerifyReport{
		Streams: r.Streams, Events: r.Events, FeedHead: r.FeedHead, FeedHeads: r.FeedHeads, Redacted: r.Redacted,
		Missing:    back(r.Missing, toRange),
		Holes:      back(r.Holes, toRange),
		Pending:    back(r.Pending, toRange),
		Duplicates: back(r.Duplicates, toFault),
		Gaps: back(r.Gaps, func(g PositionSpan) estuite.PositionRange {
			return estuite.PositionRange{Shard: g.Shard, From: g.From, To: g.To}
		}),
		OrderViolations: back(r.OrderViolations, toFault),
		Unparseable: back(r.Unparseable, func(f RowFault) estuite.RowFault {
			return estuite.RowFault{Table: f.Table, PartitionKey: f.PartitionKey, RowKey: f.RowKey, Reason: f.Reason}
		}),
		ProgressBehind:  back(r.ProgressBehind, toRange),
		WrongRedactions: back(r.WrongRedactions, toRange),
		Lost:            back(r.Lost, toRange),
		Uncatalogued:    back(r.Uncatalogued, func(s string) string { return s }),
	}
}
