package bench

import (
	"encoding/json"
	"fmt"
	"github.com/estuite/estuite"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is a run written out: what ran where, the prices, and each workload's result and cost.
// `estuite bench --json` prints it.
type Report struct {
	// Date is when the run ended (UTC).
	Date time.Time `json:"date"`
	// Command is the command line that ran it, if known.
	Command string `json:"command,omitempty"`
	// Backend describes the storage the run used.
	Backend string `json:"backend"`
	// Machine describes the computer the run used (OS, architecture, CPUs, Go version).
	Machine string `json:"machine"`
	// Scale is the factor the default sizes were multiplied by.
	Scale float64 `json:"scale"`
	// Prices is the price table the costs use.
	Prices Prices `json:"prices"`
	// Workloads holds each workload's measurement and cost, in run order.
	Workloads []WorkloadReport `json:"workloads"`
}

// WorkloadReport is one workload's measurement and its cost.
type WorkloadReport struct {
	Result Result `json:"result"`
	Cost   Cost   `json:"cost"`
}

// NewReport prices results with p.
func NewReport(results []Result, p Prices) Report {
	r := Report{Date: time.Now().UTC(), Prices: p}
	for _, res := range results {
		r.Workloads = append(r.Workloads, WorkloadReport{Result: res, Cost: res.Cost(p)})
	}
	return r
}

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as tables for a terminal.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }
	fmt.Fprintf(w, "Estuite bench — %s, %s, scale %g\n\n", r.Backend, r.Machine, r.Scale)

	fmt.Fprintln(w, "Storage transactions by role and kind (each billed, but \"queries\", whose pages are billed):")
	p("workload\trole\tevents\tpoint reads\tqueries\tpages\tbatches\twrites\tdeletes\ttotal\tper event\t\n")
	for _, wr := range r.Workloads {
		res := wr.Result
		for _, role := range []struct {
			name   string
			c      estuite.RequestCounts
			events int64
		}{
			{"write", res.Requests.Write, res.EventsWritten}, {"dispatch", res.Requests.Dispatch, res.EventsWritten},
			{readRole(res.Workload), res.Requests.Read, res.EventsRead},
		} {
			c := role.c
			if c.Total() == 0 && role.name != "write" && role.name != "dispatch" {
				continue
			}
			p("%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t\n", res.Workload.Name, role.name, role.events,
				c.PointReads, c.Queries, c.QueryPages, c.Batches, c.Writes, c.Deletes, c.Total(), per(c.Total(), role.events))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nThroughput (events per second; on an emulator a lower bound) and latency (ms):")
	p("workload\tappend ev/s\tdispatch ev/s\tread ev/s\toperation\tcount\tp50\tp95\tp99\tmax\t\n")
	for _, wr := range r.Workloads {
		res := wr.Result
		rate := func(v float64) string {
			if v == 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f", v)
		}
		lat := res.Latency
		if len(lat) == 0 {
			lat = []Latency{{Operation: "-"}}
		}
		for i, l := range lat {
			if i == 0 {
				p("%s\t%s\t%s\t%s\t", res.Workload.Name, rate(res.EventsPerSecond.Write), rate(res.EventsPerSecond.Dispatch), rate(res.EventsPerSecond.Read))
			} else {
				p("\t\t\t\t")
			}
			p("%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t\n", l.Operation, l.Count, l.P50, l.P95, l.P99, l.Max)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nDollars (%s, prices of %s: Table Storage %s $%g per 10,000 transactions, $%g per GB-month; Cosmos DB %s $%g per million RU, $%g per GB-month):\n",
		r.Prices.Currency, r.Prices.Date, r.Prices.TableStorage.Redundancy, r.Prices.TableStorage.PerTenThousandTransactions,
		r.Prices.TableStorage.PerGBMonth, r.Prices.Cosmos.Mode, r.Prices.Cosmos.PerMillionRU, r.Prices.Cosmos.PerGBMonth)
	fmt.Fprintln(w, "  (per million events written and dispatched; per million events read; bytes per event and dollars per month")
	fmt.Fprintln(w, "   per million events stored, by table; the same work on the floor and, estimated, on Cosmos DB)")
	p("workload\twritten\tfloor\tread\tfloor\tB/ev streams\tB/ev events\tstored streams\tstored events\tCosmos written\tCosmos read\t\n")
	for _, wr := range r.Workloads {
		c := wr.Cost
		read, floorRead, cosmosRead := "-", "-", "-"
		if wr.Result.EventsRead > 0 {
			read, floorRead, cosmosRead = dollars(c.ReadPerMillion), dollars(c.Floor.ReadPerMillion), dollars(c.Cosmos.ReadPerMillion)
		}
		p("%s\t%s\t%s\t%s\t%s\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t\n", c.Workload, dollars(c.WritePerMillion), dollars(c.Floor.WritePerMillion),
			read, floorRead, c.BytesPerEvent.Streams, c.BytesPerEvent.Events,
			dollars(c.StoragePerMillionMonthly.Streams), dollars(c.StoragePerMillionMonthly.Events), dollars(c.Cosmos.WritePerMillion), cosmosRead)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nfloor: one batch per append and no feed (also what a Streamstone-style store pays here), one query per 1,000 events read.")
	fmt.Fprintln(w, "Cosmos DB: "+strings.TrimSpace(CosmosAssumptions))
	return nil
}

// CosmosAssumptions states the request-unit model of the Cosmos DB estimate in a sentence.
const CosmosAssumptions = `estimated from the calls of the run: a point read 1 RU per KB, a write 5 RU per KB,
a delete 5 RU, a query page 1 RU per KB returned (at least 1), sizes rounded up to whole KB, a batch the sum
of its operations; item sizes are the entities' JSON without Cosmos DB's system properties and index.`

// dollars formats an amount with enough digits to be read at any size.
func dollars(v float64) string {
	switch {
	case v == 0:
		return "$0"
	case v >= 100:
		return fmt.Sprintf("$%.0f", v)
	case v >= 1:
		return fmt.Sprintf("$%.2f", v)
	case v >= 0.01:
		return fmt.Sprintf("$%.3f", v)
	default:
		return fmt.Sprintf("$%.5f", v)
	}
}

// readRole names a workload's read phase in the reports: "remove" for a Remove workload (its
// events are those removed or erased), "read" otherwise.
func readRole(w Workload) string {
	if w.Read == Remove {
		return "remove"
	}
	return "read"
}
