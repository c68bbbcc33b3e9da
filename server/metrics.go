package server

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/estuite/estuite"
	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "estuite"

// metrics are the server's Prometheus metrics. Every label has a small, fixed set of values.
type metrics struct {
	appendSeconds  *prometheus.HistogramVec // by outcome: committed, duplicate, or an error code
	httpRequests   *prometheus.CounterVec   // by route and status code
	dispatchLag    prometheus.Gauge
	dispatchBack   prometheus.Gauge
	dispatchSteps  prometheus.Counter
	dispatchErrors prometheus.Counter
	eventLag       prometheus.Histogram // commit-to-feed time of every event dispatched
	feedHead       atomic.Int64         // highest feed position seen (dispatch steps, feed reads)

	mu sync.Mutex // serializes ObserveDispatch's read-modify-write of the gauges
}

func newMetrics(s *Server, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		appendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "append_duration_seconds",
			Help:    "Time Store.Append took for HTTP appends, by outcome (committed, duplicate, or the error code).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"outcome"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"route", "code"}),
		dispatchLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "dispatch_lag_seconds",
			Help: "Longest time from commit to feed write among the events of the last successful dispatch step.",
		}),
		dispatchBack: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "dispatch_backlog_events",
			Help: "Committed events not yet in the feed after the last successful dispatch step.",
		}),
		dispatchSteps: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "dispatch_steps_total",
			Help: "Dispatch steps run (failed ones included).",
		}),
		dispatchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "dispatch_errors_total",
			Help: "Dispatch steps that failed.",
		}),
		eventLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "dispatch_event_lag_seconds",
			Help:    "Time from each event's commit (its recorded time, on the writer's clock) to its feed write (on the dispatcher's clock), one observation per event this server's dispatcher wrote; negative values (clock skew) count as 0.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
	}
	for _, c := range []prometheus.Collector{m.appendSeconds, m.httpRequests, m.dispatchLag, m.dispatchBack,
		m.dispatchSteps, m.dispatchErrors, m.eventLag, &stateCollector{s: s}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observeRequest(route string, status int) {
	m.httpRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}

// observeFeedHead raises the feed head gauge to p; the feed only grows.
func (m *metrics) observeFeedHead(p int64) {
	for {
		cur := m.feedHead.Load()
		if p <= cur || m.feedHead.CompareAndSwap(cur, p) {
			return
		}
	}
}

// ObserveDispatch records a dispatch step in the metrics (steps, errors, lag, each event's lag,
// backlog, feed head) and in the statistics of GET /admin/stats. Pass it as
// estuite.DispatcherOptions.OnStep; it does not block.
func (s *Server) ObserveDispatch(st estuite.DispatchStats, err error) {
	s.stats.observe(st, err)
	m := s.metrics
	m.dispatchSteps.Inc()
	for _, lag := range st.Lags { // a failed step may still have written some events
		m.eventLag.Observe(max(lag, 0).Seconds())
	}
	if err != nil {
		m.dispatchErrors.Inc()
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dispatchLag.Set(st.MaxLag.Seconds())
	m.dispatchBack.Set(float64(st.Backlog))
	m.observeFeedHead(st.FeedHead)
}

// stateCollector reports, at scrape time, what the server and its store hold now: storage
// requests by kind (Store.RequestCounts), the feed head, the live streams, the dispatcher's
// health (Options.Dispatcher), and each durable subscription's distance from the feed head.
type stateCollector struct{ s *Server }

var (
	descStorage = prometheus.NewDesc(namespace+"_storage_requests_total",
		"Storage requests the store has made, by kind (point_read, query_page, batch, write, delete); retries count. Each is one billable transaction on Azure.", []string{"kind"}, nil)
	descFeedHead = prometheus.NewDesc(namespace+"_feed_head_position",
		"Highest feed position this server has seen (from dispatch steps and feed reads).", nil, nil)
	descLive = prometheus.NewDesc(namespace+"_live_subscriptions",
		"Open live feed streams (GET /feed/live).", nil, nil)
	descLivePos = prometheus.NewDesc(namespace+"_live_lowest_position",
		"Lowest feed position reached by an open live feed stream; absent when none is open.", nil, nil)

	descLeaseHeld = prometheus.NewDesc(namespace+"_dispatcher_lease_held",
		"1 while this server's dispatcher holds the store's dispatcher lease (it is the one dispatching), else 0. Summed over all servers of a store it should be 1.", nil, nil)
	descOldestPending = prometheus.NewDesc(namespace+"_dispatch_oldest_pending_seconds",
		"How long the oldest undispatched append this server's dispatcher knows of has been waiting (0: none; a dispatcher without the lease knows of none).", nil, nil)
	descPending = prometheus.NewDesc(namespace+"_dispatch_pending_streams",
		"Streams this server's dispatcher knows to have announced appends not yet in the feed.", nil, nil)
	descSinceProgress = prometheus.NewDesc(namespace+"_dispatch_seconds_since_progress",
		"Seconds since this server's dispatcher last made progress (wrote events, fenced a head or resolved a marker), on this server's clock; absent until it first has.", nil, nil)
	descShardLeaseHeld = prometheus.NewDesc(namespace+"_shard_lease_held",
		"In a store of several feed shards: 1 while this server's dispatcher of the shard holds its lease, else 0. Summed over all servers, 1 per shard.", []string{"shard"}, nil)
	descShardHead = prometheus.NewDesc(namespace+"_shard_feed_head_position",
		"In a store of several feed shards: the highest position of the shard's feed this server's dispatcher knows of.", []string{"shard"}, nil)
	descShardPending = prometheus.NewDesc(namespace+"_shard_dispatch_pending_streams",
		"In a store of several feed shards: streams of the shard this server's dispatcher knows to have announced appends not yet in its feed.", []string{"shard"}, nil)
	descShardOldest = prometheus.NewDesc(namespace+"_shard_dispatch_oldest_pending_seconds",
		"In a store of several feed shards: how long the oldest undispatched append of the shard this server's dispatcher knows of has been waiting.", []string{"shard"}, nil)
	descCheckpointDistance = prometheus.NewDesc(namespace+"_subscription_checkpoint_distance_events",
		"Feed head minus the stored checkpoint of a durable subscription, read at scrape time: how many feed positions it has not yet saved as handled.", []string{"subscription"}, nil)
)

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descStorage
	ch <- descFeedHead
	ch <- descLive
	ch <- descLivePos
	ch <- descLeaseHeld
	ch <- descOldestPending
	ch <- descPending
	ch <- descSinceProgress
	ch <- descShardLeaseHeld
	ch <- descShardHead
	ch <- descShardPending
	ch <- descShardOldest
	ch <- descCheckpointDistance
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	rc := c.s.store.RequestCounts()
	ch <- prometheus.MustNewConstMetric(descStorage, prometheus.CounterValue, float64(rc.PointReads), "point_read")
	ch <- prometheus.MustNewConstMetric(descStorage, prometheus.CounterValue, float64(rc.QueryPages), "query_page")
	ch <- prometheus.MustNewConstMetric(descStorage, prometheus.CounterValue, float64(rc.Batches), "batch")
	ch <- prometheus.MustNewConstMetric(descStorage, prometheus.CounterValue, float64(rc.Writes), "write")
	ch <- prometheus.MustNewConstMetric(descStorage, prometheus.CounterValue, float64(rc.Deletes), "delete")
	c.s.liveMu.Lock()
	n := len(c.s.live)
	lowest := int64(-1)
	for conn := range c.s.live {
		if p := conn.sub.Position(); lowest < 0 || p < lowest {
			lowest = p
		}
	}
	c.s.liveMu.Unlock()
	ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(n))
	if lowest >= 0 {
		ch <- prometheus.MustNewConstMetric(descLivePos, prometheus.GaugeValue, float64(lowest))
	}
	if d := c.s.dispatcher; d != nil {
		collectHealth(ch, d.Health(), time.Now())
	}
	if len(c.s.shardDisps) > 1 {
		for shard, d := range c.s.shardDisps {
			h, label := d.Health(), strconv.Itoa(shard)
			held := 0.0
			if h.LeaseHeld {
				held = 1
			}
			ch <- prometheus.MustNewConstMetric(descShardLeaseHeld, prometheus.GaugeValue, held, label)
			ch <- prometheus.MustNewConstMetric(descShardHead, prometheus.GaugeValue, float64(h.FeedHead), label)
			ch <- prometheus.MustNewConstMetric(descShardPending, prometheus.GaugeValue, float64(h.Pending), label)
			ch <- prometheus.MustNewConstMetric(descShardOldest, prometheus.GaugeValue, h.OldestPending.Seconds(), label)
		}
	}
	c.collectCheckpoints(ch) // may raise the feed head: report it after
	ch <- prometheus.MustNewConstMetric(descFeedHead, prometheus.GaugeValue, float64(c.s.metrics.feedHead.Load()))
}

// collectHealth reports a dispatcher's health as it was at now.
func collectHealth(ch chan<- prometheus.Metric, h estuite.DispatcherHealth, now time.Time) {
	held := 0.0
	if h.LeaseHeld {
		held = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeaseHeld, prometheus.GaugeValue, held)
	ch <- prometheus.MustNewConstMetric(descOldestPending, prometheus.GaugeValue, h.OldestPending.Seconds())
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(h.Pending))
	if !h.LastProgress.IsZero() {
		ch <- prometheus.MustNewConstMetric(descSinceProgress, prometheus.GaugeValue, max(now.Sub(h.LastProgress), 0).Seconds())
	}
}

// collectCheckpoints reports each durable subscription's distance from the feed head: one query
// of the checkpoint partition, then (when there is a checkpoint) a read of the feed head, so that
// no checkpoint read is newer than the head it is measured against.
func (c *stateCollector) collectCheckpoints(ch chan<- prometheus.Metric) {
	if c.s.maxSubs == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeStorageTimeout)
	defer cancel()
	cps, err := c.s.store.Checkpoints(ctx, c.s.maxSubs)
	if err != nil {
		c.s.log.LogAttrs(ctx, slog.LevelWarn, "metrics: reading the subscription checkpoints failed", slog.String("err", err.Error()))
		return
	}
	if len(cps) == 0 {
		return
	}
	heads := make([]int64, c.s.store.FeedShards())
	for shard := range heads {
		head, err := c.s.store.FeedHeadOf(ctx, shard)
		if err != nil {
			c.s.log.LogAttrs(ctx, slog.LevelWarn, "metrics: reading the feed head failed", slog.String("err", err.Error()))
			return
		}
		heads[shard] = head
	}
	c.s.metrics.observeFeedHead(heads[0])
	// Per subscription, the distance summed over the shards it has checkpoints in (one with a
	// single shard).
	distance := make(map[string]int64)
	var names []string
	for _, cp := range cps {
		if cp.Shard >= len(heads) {
			continue
		}
		if _, ok := distance[cp.Name]; !ok {
			names = append(names, cp.Name)
		}
		distance[cp.Name] += max(heads[cp.Shard]-cp.Position, 0)
	}
	for _, name := range names {
		ch <- prometheus.MustNewConstMetric(descCheckpointDistance, prometheus.GaugeValue, float64(distance[name]), name)
	}
}
