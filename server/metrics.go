package server

import (
	"strconv"
	"sync"
	"sync/atomic"

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
	feedHead       atomic.Int64 // highest feed position seen (dispatch steps, feed reads)

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
	}
	for _, c := range []prometheus.Collector{m.appendSeconds, m.httpRequests, m.dispatchLag, m.dispatchBack,
		m.dispatchSteps, m.dispatchErrors, &stateCollector{s: s}} {
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

// ObserveDispatch records a dispatch step in the metrics (steps, errors, lag, backlog, feed head).
// Pass it as estuite.DispatcherOptions.OnStep; it does not block.
func (s *Server) ObserveDispatch(st estuite.DispatchStats, err error) {
	m := s.metrics
	m.dispatchSteps.Inc()
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
// requests by kind (Store.RequestCounts), the feed head, and the live streams.
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
)

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descStorage
	ch <- descFeedHead
	ch <- descLive
	ch <- descLivePos
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	rc := c.s.store.RequestCounts()
	ch <- prometheus.MustNewConstMetric(descStorage, prometheus.CounterValue, float64(rc.PointReads), "point_read")
	ch <- prometheus.MustNewConstMetric(descStorage, prometheus.CounterValue, float64(rc.QueryPages), "query_page")
	ch <- prometheus.MustNewConstMetric(descStorage, prometheus.CounterValue, float64(rc.Batches), "batch")
	ch <- prometheus.MustNewConstMetric(descStorage, prometheus.CounterValue, float64(rc.Writes), "write")
	ch <- prometheus.MustNewConstMetric(descStorage, prometheus.CounterValue, float64(rc.Deletes), "delete")
	ch <- prometheus.MustNewConstMetric(descFeedHead, prometheus.GaugeValue, float64(c.s.metrics.feedHead.Load()))
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
}
