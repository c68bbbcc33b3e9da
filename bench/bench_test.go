package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
)

// fixed is the hand-counted workload: one single-event append to each of three new streams, a
// dispatcher that drains them step by step, and one durable projection that reads the feed.
var fixed = Workload{Name: "fixed", Streams: 3, Commits: 3, CommitSize: 1, Writers: 1, Read: Project}

// dirtyShard is the documented dirty-marker shard of a stream (docs/storage-format.md: dirty00 …
// dirty03 by SHA-256 of the stream's partition key).
func dirtyShard(pk string) int {
	sum := sha256.Sum256([]byte(pk))
	return int(uint32(sum[0])<<8|uint32(sum[1])) % 4
}

func TestFixedWorkloadCountsMatchTheStorageFormat(t *testing.T) {
	results, err := Run(context.Background(), mem.New(nil), []Workload{fixed}, &Options{TablePrefix: "t"})
	if err != nil {
		t.Fatal(err)
	}
	res := results[0]

	// Each append to a new stream with expected version 0: the write-ahead dirty marker (one
	// upsert) and the batch of commit row, head row and event row. No head read: the stream is
	// expected not to exist.
	wantWrite := estuite.RequestCounts{Writes: 3, Batches: 3}

	// The dispatcher, step 1: the feed-page hint and page 0's header (two point reads, neither
	// found), page 0's stream markers (one query), the four dirty-marker shards (four queries),
	// each dirty stream from its first event to its head (three queries), the stream catalog's
	// rows of the three new streams (one upsert batch), one feed batch (page header, three
	// events, three stream markers), then the markers deleted under their ETags:
	// one batch per shard holding two or more, one single delete per shard holding one. Step 2
	// finds the four shards empty (four queries) and the drain ends.
	perShard := map[int]int{}
	r := runner{w: fixed}
	for i := range fixed.Streams {
		perShard[dirtyShard(r.streamName(i))]++
	}
	wantDispatch := estuite.RequestCounts{PointReads: 2, Queries: 12, QueryPages: 12, Batches: 2}
	for _, n := range perShard {
		if n == 1 {
			wantDispatch.Deletes++
		} else {
			wantDispatch.Batches++
		}
	}

	// The projection: its checkpoint (a point read, not found), a feed read that returns the
	// three events, one that finds the end, and the checkpoint written once caught up.
	wantRead := estuite.RequestCounts{PointReads: 1, Queries: 2, QueryPages: 2, Writes: 1}

	if res.Requests.Write != wantWrite {
		t.Errorf("write requests %+v, want %+v", res.Requests.Write, wantWrite)
	}
	if res.Requests.Dispatch != wantDispatch {
		t.Errorf("dispatch requests %+v, want %+v (markers per shard %v)", res.Requests.Dispatch, wantDispatch, perShard)
	}
	if res.Requests.Read != wantRead {
		t.Errorf("read requests %+v, want %+v", res.Requests.Read, wantRead)
	}
	if res.EventsWritten != 3 || res.EventsDispatched != 3 || res.EventsRead != 3 || res.FeedEventsScanned != 3 || res.Appends != 3 {
		t.Errorf("events written %d, dispatched %d, read %d, scanned %d, appends %d; want 3 each",
			res.EventsWritten, res.EventsDispatched, res.EventsRead, res.FeedEventsScanned, res.Appends)
	}
	// Stream table: per stream a commit, a head and an event row. Event table: the page header,
	// three feed events, three stream markers, three catalog rows and the projection's checkpoint
	// (the dirty markers are gone).
	if res.Size.Streams.Rows != 9 || res.Size.Events.Rows != 11 {
		t.Errorf("rows: streams %d, events %d; want 9 and 11", res.Size.Streams.Rows, res.Size.Events.Rows)
	}

	// Dollars are the counts times the prices.
	p := DefaultPrices()
	c := res.Cost(p)
	tx := p.TableStorage.PerTenThousandTransactions / 10000
	writeTx := wantWrite.Total() + wantDispatch.Total()
	checks := []struct {
		name      string
		got, want float64
	}{
		{"transactions write", float64(c.Transactions.Write), 6},
		{"transactions read", float64(c.Transactions.Read), 4},
		{"written and dispatched", c.WritePerMillion, float64(writeTx) * tx / 3 * 1e6},
		{"append", c.AppendPerMillion, 6 * tx / 3 * 1e6},
		{"dispatch", c.DispatchPerMillion, float64(wantDispatch.Total()) * tx / 3 * 1e6},
		{"read", c.ReadPerMillion, 4 * tx / 3 * 1e6},
		{"floor write", c.Floor.WritePerMillion, 3 * tx / 3 * 1e6},
		{"floor read", c.Floor.ReadPerMillion, 1 * tx / 3 * 1e6},
		{"stream table per month", c.StorageMonthly.Streams, float64(res.Size.Streams.Bytes) * p.TableStorage.PerGBMonth / (1 << 30)},
		{"event table per month", c.StorageMonthly.Events, float64(res.Size.Events.Bytes) * p.TableStorage.PerGBMonth / (1 << 30)},
		{"cosmos written", c.Cosmos.WritePerMillion, (res.CosmosRU.Write + res.CosmosRU.Dispatch) * p.Cosmos.PerMillionRU / 1e6 / 3 * 1e6},
	}
	for _, ch := range checks {
		if math.Abs(ch.got-ch.want) > 1e-12*math.Max(1, math.Abs(ch.want)) {
			t.Errorf("%s: %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if !c.Streamstone.NoFeed {
		t.Error("a Streamstone-style design has no feed to project")
	}
	// Each append's batch is three small rows (5 RU each) and its marker one (5 RU).
	if res.CosmosRU.Write != 3*(3*5+5) {
		t.Errorf("Cosmos RU of the appends %v, want %v", res.CosmosRU.Write, 3*(3*5+5))
	}
}

func TestCosmosModel(t *testing.T) {
	for _, c := range []struct {
		got, want float64
	}{
		{CosmosReadRU(1), 1}, {CosmosReadRU(1024), 1}, {CosmosReadRU(1025), 2},
		{CosmosWriteRU(900), 5}, {CosmosWriteRU(3000), 15},
		{CosmosQueryPageRU(0), 1}, {CosmosQueryPageRU(10 * 1024), 10},
	} {
		if c.got != c.want {
			t.Errorf("got %v, want %v", c.got, c.want)
		}
	}
}

func TestPricesFile(t *testing.T) {
	p := DefaultPrices()
	if p.Date != "2026-11" || p.TableStorage.PerTenThousandTransactions != 0.00036 || p.TableStorage.PerGBMonth != 0.045 ||
		p.Cosmos.PerMillionRU != 0.25 || p.Source == "" {
		t.Fatalf("default prices %+v", p)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	own := strings.Replace(string(DefaultPricesJSON()), "0.00036", "0.0005", 1)
	got, err := LoadPrices(write("own.json", own))
	if err != nil || got.TableStorage.PerTenThousandTransactions != 0.0005 {
		t.Fatalf("own prices: %+v, %v", got, err)
	}
	for _, c := range []struct{ name, content, want string }{
		{"syntax.json", `{"date": `, "not a valid price table"},
		{"unknown.json", strings.Replace(own, `"perGBMonth": 0.045`, `"perGBMonth": 0.045, "perTransaction": 1`, 1), `unknown field "perTransaction"`},
		{"missing.json", strings.Replace(own, `"perTenThousandTransactions": 0.0005,`, "", 1), "tableStorage.perTenThousandTransactions is missing"},
		{"negative.json", strings.Replace(own, `"perMillionRU": 0.25`, `"perMillionRU": -1`, 1), "cosmos.perMillionRU is negative"},
		{"nodate.json", strings.Replace(own, `"date": "2026-11",`, "", 1), "date is missing"},
		{"nocosmos.json", `{"date":"x","source":"y","currency":"USD","tableStorage":{"redundancy":"LRS","perTenThousandTransactions":1,"perGBMonth":1}}`, "cosmos is missing"},
	} {
		path := write(c.name, c.content)
		_, err := LoadPrices(path)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming the file and saying %q", c.name, err, c.want)
		}
	}
	if _, err := LoadPrices(filepath.Join(dir, "absent.json")); err == nil || !strings.Contains(err.Error(), "price file") {
		t.Errorf("absent file: %v", err)
	}
}

func TestEveryWorkloadRunsAtTinyScale(t *testing.T) {
	var ws []Workload
	for _, w := range DefaultWorkloads() {
		ws = append(ws, w.Scaled(0.01))
	}
	var phases []string
	results, err := Run(context.Background(), mem.New(nil), ws, &Options{TablePrefix: "tiny", Progress: func(p Progress) {
		phases = append(phases, p.Workload+"/"+p.Phase)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(ws) {
		t.Fatalf("%d results for %d workloads", len(results), len(ws))
	}
	for _, res := range results {
		w := res.Workload
		if res.EventsWritten != w.Events() || res.EventsDispatched != w.Events() {
			t.Errorf("%s: written %d, dispatched %d, want %d", w.Name, res.EventsWritten, res.EventsDispatched, w.Events())
		}
		// Every append is its batch and at most one request for its marker: the appenders never
		// read.
		if c := res.Requests.Write; c.PointReads != 0 || c.QueryPages != 0 || c.Batches < int64(w.Commits) || c.Total() > 2*int64(w.Commits) {
			t.Errorf("%s: write requests %+v for %d appends", w.Name, c, w.Commits)
		}
		switch w.Read {
		case Rehydrate:
			length := w.ReadPerRehydration()
			if res.Rehydrations != int64(w.Rehydrations) || res.EventsRead != int64(w.Rehydrations)*length {
				t.Errorf("%s: %d rehydrations, %d events read", w.Name, res.Rehydrations, res.EventsRead)
			}
			// A stream that fits one page is one query (the events and the head); a longer one
			// a page, a head read and a query per 1,000 events more. With a snapshot (the reader
			// has not met the stream): a probe of 100 rows, then the events after the snapshot.
			var want int64
			switch whole := w.Events() / int64(w.Streams); {
			case w.SnapshotEvery > 0:
				want = 2
			case whole <= 997:
				want = 1
			default:
				want = 2 + (whole-1000+999)/1000
			}
			if got := res.Requests.Read.Total(); got != want*int64(w.Rehydrations) {
				t.Errorf("%s: %+v read requests for %d rehydrations, want %d each", w.Name, res.Requests.Read, w.Rehydrations, want)
			}
		case Project, FollowLive:
			want := w.Events()
			if w.Filtered {
				want /= EventTypes
			}
			if res.EventsRead != want {
				t.Errorf("%s: projection handled %d events, want %d", w.Name, res.EventsRead, want)
			}
		case Remove:
			// Deleted streams lose every event, maxCount streams all but their last commit,
			// forgotten subjects' events are erased in place.
			per := w.Events() / int64(w.Streams)
			var removed, erased int64
			for i := 0; i < w.Streams; i++ {
				switch i % 4 {
				case 0, 2:
					removed += per
				case 1:
					removed += max(0, per-int64(w.CommitSize))
				case 3:
					erased += per
				}
			}
			if res.Removed != removed || res.EventsRead != removed+erased {
				t.Errorf("%s: removed %d and %d in all, want %d removed and %d erased", w.Name, res.Removed, res.EventsRead, removed, erased)
			}
		}
		if res.Size.Streams.Rows == 0 || res.Size.Events.Rows == 0 {
			t.Errorf("%s: size %+v", w.Name, res.Size)
		}
		if len(res.Latency) == 0 {
			t.Errorf("%s: no latency", w.Name)
		}
	}
	if len(phases) == 0 || phases[len(phases)-1] != ws[len(ws)-1].Name+"/done" {
		t.Errorf("progress ended with %v", phases[max(0, len(phases)-3):])
	}

	report := NewReport(results, DefaultPrices())
	var text, js, svg bytes.Buffer
	if err := report.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if !strings.Contains(text.String(), w.Name) {
			t.Errorf("text report lacks %s:\n%s", w.Name, text.String())
		}
	}
	if err := report.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := WriteChartSVG(&svg, ChartSeriesFrom(report), "test run"); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&svg)
	for {
		if _, err := dec.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("chart is not well-formed XML: %v", err)
			}
			break
		}
	}
}

func TestSelectAndScale(t *testing.T) {
	all := DefaultWorkloads()
	got, err := Select(all, "append-50, projection")
	if err != nil || len(got) != 2 || got[0].Name != "append-50" || got[1].Name != "projection" {
		t.Fatalf("Select: %v, %v", got, err)
	}
	if _, err := Select(all, "append-7"); err == nil || !strings.Contains(err.Error(), "append-1") {
		t.Errorf("unknown workload: %v", err)
	}
	if got, _ := Select(all, ""); len(got) != len(all) {
		t.Errorf("empty list selects %d", len(got))
	}
	for _, w := range all {
		s := w.Scaled(0.01)
		if s.CommitSize != w.CommitSize || s.Streams < 1 || s.Commits < s.Streams {
			t.Errorf("%s scaled: %+v", w.Name, s)
		}
		if w.Read == Rehydrate && s.Events()/int64(s.Streams) != w.Events()/int64(w.Streams) {
			t.Errorf("%s: scaling changed the stream length", w.Name)
		}
	}
}
