package server

import (
	"net/http"
	"sync"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/bench"
)

// GET /admin/stats: what the server saw over the last minutes, from memory only. Every
// StatsInterval a goroutine (started by New, stopped by Close) takes a sample: the storage
// requests of each kind the store made since the previous sample (Store.RequestCounts), what the
// dispatchers in this process report (Dispatcher.Health) and what their steps told
// ObserveDispatch. The last StatsWindow of samples are kept. Taking a sample makes no storage
// request, and neither does answering.
const (
	// StatsInterval is how often the server samples its statistics.
	StatsInterval = 5 * time.Second
	// StatsWindow is how far back GET /admin/stats reaches.
	StatsWindow = 15 * time.Minute
	// maxStatsErrors is how many recent dispatch errors the statistics keep.
	maxStatsErrors = 20
)

// routeStats is the route of the statistics.
const routeStats = "GET /admin/stats"

// The storage request kinds, as /metrics labels them (estuite_storage_requests_total).
var requestKinds = []string{"point_read", "query_page", "batch", "write", "delete"}

// byKind spreads request counts over requestKinds, in their order.
func byKind(c estuite.RequestCounts) [5]int64 {
	return [5]int64{c.PointReads, c.QueryPages, c.Batches, c.Writes, c.Deletes}
}

// statsSample is what one interval saw.
type statsSample struct {
	end      time.Time
	seconds  float64
	requests [5]int64 // by requestKinds
	disp     dispatchSample
}

// dispatchSample is what the dispatchers of this process said about an interval: their health at
// its end, and what their steps reported during it.
type dispatchSample struct {
	dispatchers    int
	leasesHeld     int
	feedHead       int64
	pendingStreams int
	oldestPending  time.Duration
	events         int64
	maxLag         time.Duration
	backlog        int64
	errors         int64
}

// statsError is a failed dispatch step.
type statsError struct {
	time  time.Time
	shard int
	err   string
}

// stats keeps the samples. Its lock is taken briefly by the sampler, by ObserveDispatch and by
// the handler.
type stats struct {
	s      *Server
	prices bench.Prices

	mu       sync.Mutex
	samples  []statsSample // oldest first, at most StatsWindow/StatsInterval
	last     time.Time     // when the interval in progress began
	lastReqs estuite.RequestCounts
	steps    dispatchSample // the interval in progress: events, maxLag, errors
	backlogs map[int]int64  // by shard: the backlog after its last successful step reported
	errs     []statsError   // oldest first, at most maxStatsErrors
}

func newStats(s *Server, prices bench.Prices, now time.Time) *stats {
	return &stats{s: s, prices: prices, last: now, lastReqs: s.store.RequestCounts(), backlogs: make(map[int]int64)}
}

// run samples every StatsInterval until done is closed.
func (st *stats) run(done <-chan struct{}) {
	t := time.NewTicker(StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			st.sample(now)
		}
	}
}

// observe records a dispatch step (ObserveDispatch, ObserveShardStep) in the interval in progress.
func (st *stats) observe(ds estuite.DispatchStats, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.steps.events += int64(len(ds.Lags))
	for _, lag := range ds.Lags {
		st.steps.maxLag = max(st.steps.maxLag, lag)
	}
	if err != nil {
		st.steps.errors++
		e := statsError{time: time.Now(), shard: ds.Shard, err: err.Error()}
		if n := len(st.errs); n > 0 && st.errs[n-1].err == e.err && st.errs[n-1].shard == e.shard {
			st.errs[n-1] = e // the same error again: keep its latest time only
			return
		}
		st.errs = append(st.errs, e)
		if len(st.errs) > maxStatsErrors {
			st.errs = st.errs[1:]
		}
		return
	}
	st.backlogs[ds.Shard] = ds.Backlog
}

// current is the interval in progress, up to now. st.mu is held.
// It returns the store's request counts it was measured against too.
func (st *stats) current(now time.Time) (statsSample, estuite.RequestCounts) {
	reqs := st.s.store.RequestCounts()
	smp := statsSample{end: now, seconds: max(now.Sub(st.last).Seconds(), 0), requests: byKind(reqs.Sub(st.lastReqs)), disp: st.steps}
	for _, b := range st.backlogs {
		smp.disp.backlog += b
	}
	st.s.dispatchHealth(&smp.disp)
	return smp, reqs
}

// sample ends the interval in progress at now and keeps it.
func (st *stats) sample(now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	smp, reqs := st.current(now)
	st.samples = append(st.samples, smp)
	if n := int(StatsWindow / StatsInterval); len(st.samples) > n {
		st.samples = st.samples[len(st.samples)-n:]
	}
	st.last, st.lastReqs = now, reqs
	st.steps = dispatchSample{}
}

// dispatchHealth adds what this process's dispatchers report to d.
func (s *Server) dispatchHealth(d *dispatchSample) {
	disps := s.shardDisps
	if len(disps) == 0 && s.dispatcher != nil {
		disps = []*estuite.Dispatcher{s.dispatcher}
	}
	d.dispatchers = len(disps)
	if len(disps) == 0 {
		d.feedHead = s.metrics.feedHead.Load()
	}
	for _, disp := range disps {
		h := disp.Health()
		if h.LeaseHeld {
			d.leasesHeld++
		}
		d.feedHead += h.FeedHead
		d.pendingStreams += h.Pending
		d.oldestPending = max(d.oldestPending, h.OldestPending)
	}
}

// The JSON of GET /admin/stats (docs/http-api.md).
type (
	statsJSON struct {
		IntervalSeconds float64           `json:"intervalSeconds"`
		WindowSeconds   float64           `json:"windowSeconds"`
		Dispatchers     int               `json:"dispatchers"`
		Samples         []statsSampleJSON `json:"samples"`
		Current         statsSampleJSON   `json:"current"`
		Errors          []statsErrorJSON  `json:"errors"`
		Prices          statsPricesJSON   `json:"prices"`
		MonthlyCost     monthlyCostJSON   `json:"monthlyCost"`
	}
	statsSampleJSON struct {
		Time                 string           `json:"time"`
		Seconds              float64          `json:"seconds"`
		Requests             map[string]int64 `json:"requests"`
		FeedHead             int64            `json:"feedHead"`
		LeasesHeld           int              `json:"leasesHeld"`
		PendingStreams       int              `json:"pendingStreams"`
		OldestPendingSeconds float64          `json:"oldestPendingSeconds"`
		Events               int64            `json:"events"`
		MaxLagSeconds        float64          `json:"maxLagSeconds"`
		Backlog              int64            `json:"backlog"`
		DispatchErrors       int64            `json:"dispatchErrors"`
	}
	statsErrorJSON struct {
		Time  string `json:"time"`
		Shard int    `json:"shard"`
		Error string `json:"error"`
	}
	statsPricesJSON struct {
		Date                       string             `json:"date"`
		Source                     string             `json:"source"`
		Currency                   string             `json:"currency"`
		Redundancy                 string             `json:"redundancy"`
		PerTenThousandTransactions float64            `json:"perTenThousandTransactions"`
		PerRequest                 map[string]float64 `json:"perRequest"`
	}
	monthlyCostJSON struct {
		Currency          string             `json:"currency"`
		Seconds           float64            `json:"seconds"`
		RequestsPerSecond map[string]float64 `json:"requestsPerSecond"`
		ByKind            map[string]float64 `json:"byKind"`
		Total             float64            `json:"total"`
	}
)

func toSampleJSON(smp statsSample) statsSampleJSON {
	reqs := make(map[string]int64, len(requestKinds))
	for i, kind := range requestKinds {
		reqs[kind] = smp.requests[i]
	}
	d := smp.disp
	return statsSampleJSON{Time: formatTime(smp.end), Seconds: smp.seconds, Requests: reqs, FeedHead: d.feedHead,
		LeasesHeld: d.leasesHeld, PendingStreams: d.pendingStreams, OldestPendingSeconds: d.oldestPending.Seconds(),
		Events: d.events, MaxLagSeconds: max(d.maxLag, 0).Seconds(), Backlog: d.backlog, DispatchErrors: d.errors}
}

// report is the statistics as GET /admin/stats answers them at now.
func (st *stats) report(now time.Time) statsJSON {
	st.mu.Lock()
	defer st.mu.Unlock()
	cur, _ := st.current(now)
	out := statsJSON{IntervalSeconds: StatsInterval.Seconds(), WindowSeconds: StatsWindow.Seconds(), Dispatchers: cur.disp.dispatchers,
		Samples: make([]statsSampleJSON, len(st.samples)), Current: toSampleJSON(cur), Errors: make([]statsErrorJSON, len(st.errs))}
	// The monthly cost is the rate of the whole window, the interval in progress included.
	var total [5]int64
	seconds := cur.seconds
	for i, smp := range st.samples {
		out.Samples[i] = toSampleJSON(smp)
		seconds += smp.seconds
		for k := range total {
			total[k] += smp.requests[k]
		}
	}
	for k := range total {
		total[k] += cur.requests[k]
	}
	for i, e := range st.errs {
		out.Errors[i] = statsErrorJSON{Time: formatTime(e.time), Shard: e.shard, Error: e.err}
	}
	p := st.prices
	out.Prices = statsPricesJSON{Date: p.Date, Source: p.Source, Currency: p.Currency, Redundancy: p.TableStorage.Redundancy,
		PerTenThousandTransactions: p.TableStorage.PerTenThousandTransactions, PerRequest: map[string]float64{}}
	out.MonthlyCost = monthlyCostJSON{Currency: p.Currency, Seconds: seconds, RequestsPerSecond: map[string]float64{}, ByKind: map[string]float64{}}
	for i, kind := range requestKinds {
		// Table Storage bills every request alike: an entity group transaction, a query page and
		// a point read are one transaction each.
		out.Prices.PerRequest[kind] = p.PerTransaction()
		rate := 0.0
		if seconds > 0 {
			rate = float64(total[i]) / seconds
		}
		out.MonthlyCost.RequestsPerSecond[kind] = rate
		cost := p.TransactionsMonthly(rate)
		out.MonthlyCost.ByKind[kind] = cost
		out.MonthlyCost.Total += cost
	}
	return out
}

// ObserveShardStep records a dispatch step of any feed shard in the statistics of GET
// /admin/stats (events dispatched, lag, backlog, errors), and in nothing else: pass it as the
// OnStep of the dispatchers of Options.ShardDispatchers but the one of Options.Dispatcher, whose
// OnStep is ObserveDispatch (which records the step in the statistics too). It does not block.
func (s *Server) ObserveShardStep(st estuite.DispatchStats, err error) { s.stats.observe(st, err) }

// handleStats serves GET /admin/stats.
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.stats.report(time.Now()))
}
