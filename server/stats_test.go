package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/bench"
	"github.com/estuite/estuite/table/mem"
)

// statsServer is a server on a memory store with one dispatcher (not started) that reports its
// steps to the server, as `estuite serve` runs it.
func statsServer(t *testing.T, prices *bench.Prices) (*Server, *estuite.Store, *estuite.Dispatcher) {
	t.Helper()
	store, err := estuite.Open(context.Background(), mem.New(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	var srv *Server
	d := estuite.NewDispatcher(store, &estuite.DispatcherOptions{OnStep: func(st estuite.DispatchStats, err error) { srv.ObserveDispatch(st, err) }})
	srv, err = New(Options{Store: store, Dispatcher: d, ShardDispatchers: []*estuite.Dispatcher{d}, Prices: prices})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); store.Close() })
	return srv, store, d
}

// localRequest is a request to a server on the loopback address, as the Host check wants it
// without a token.
func localRequest(method, target string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.Host = "127.0.0.1"
	return r
}

func getStats(t *testing.T, srv *Server, query string) (int, statsJSON) {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, localRequest("GET", "/admin/stats"+query))
	var out statsJSON
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("GET /admin/stats: %v\n%s", err, rec.Body)
		}
	}
	return rec.Code, out
}

// TestStatsSampleRequestsDispatchAndCost checks that a sample holds the storage requests of its
// interval by kind, the dispatcher's feed head and the events its steps wrote, and that the
// monthly cost is the window's request rate at the price table's price per transaction.
func TestStatsSampleRequestsDispatchAndCost(t *testing.T) {
	prices := bench.DefaultPrices()
	prices.TableStorage.PerTenThousandTransactions = 1 // $0.0001 a request: easy to check
	srv, store, d := statsServer(t, &prices)
	ctx := context.Background()
	start, baseline := srv.stats.last, srv.stats.lastReqs
	for i := range 3 {
		if _, err := store.Append(ctx, "order-1", []estuite.EventData{{Type: "OrderPlaced", Data: []byte(`{"i":1}`)}}, nil); err != nil {
			t.Fatal(i, err)
		}
	}
	step, err := d.Step(ctx) // Step does not call OnStep: report it as Start would
	srv.ObserveDispatch(step, err)
	if err != nil {
		t.Fatal(err)
	}
	spent := store.RequestCounts().Sub(baseline)
	srv.stats.sample(start.Add(StatsInterval))
	code, stats := getStats(t, srv, "")
	if code != http.StatusOK {
		t.Fatalf("GET /admin/stats: %d", code)
	}
	st := stats
	if st.IntervalSeconds != 5 || st.WindowSeconds != 900 || st.Dispatchers != 1 || len(st.Samples) != 1 {
		t.Fatalf("stats %+v; want a 5 s interval, a 900 s window, 1 dispatcher, 1 sample", st)
	}
	smp := st.Samples[0]
	if smp.Seconds != 5 || smp.FeedHead != 3 || smp.Events != 3 || smp.Requests["batch"] < 3 || smp.DispatchErrors != 0 {
		t.Errorf("sample %+v; want 5 s, feed head 3, 3 events dispatched, at least 3 batches (the appends)", smp)
	}
	var inSample int64
	for _, kind := range requestKinds {
		inSample += smp.Requests[kind]
	}
	if want := spent.Total(); inSample != want {
		t.Errorf("the sample counts %d requests; the store made %d", inSample, want)
	}
	if st.Current.Events != 0 || st.Current.Requests["batch"] != 0 {
		t.Errorf("the interval in progress %+v; want nothing dispatched or written yet", st.Current)
	}
	if st.Prices.PerRequest["batch"] != 0.0001 || st.Prices.Currency != "USD" || st.MonthlyCost.Currency != "USD" {
		t.Errorf("prices %+v", st.Prices)
	}
	var total float64
	for _, kind := range requestKinds {
		rate := float64(smp.Requests[kind]) / st.MonthlyCost.Seconds
		if got := st.MonthlyCost.RequestsPerSecond[kind]; got != rate {
			t.Errorf("%s: %v requests a second, want %v", kind, got, rate)
		}
		if got, want := st.MonthlyCost.ByKind[kind], rate*bench.SecondsPerMonth*0.0001; got < want*0.999999 || got > want*1.000001 {
			t.Errorf("%s: $%v a month, want $%v", kind, got, want)
		}
		total += st.MonthlyCost.ByKind[kind]
	}
	if st.MonthlyCost.Total != total || total <= 0 {
		t.Errorf("monthly total $%v; want the sum of the kinds, $%v", st.MonthlyCost.Total, total)
	}
}

// TestStatsKeepFifteenMinutesAndDispatchErrors checks that the samples stop at the window and
// that failed dispatch steps are counted and listed, a repeated error once.
func TestStatsKeepFifteenMinutesAndDispatchErrors(t *testing.T) {
	srv, _, _ := statsServer(t, nil)
	start := srv.stats.last
	for i := range 200 {
		if i == 190 {
			srv.ObserveDispatch(estuite.DispatchStats{}, errors.New("storage unavailable"))
			srv.ObserveDispatch(estuite.DispatchStats{}, errors.New("storage unavailable"))
		}
		srv.stats.sample(start.Add(time.Duration(i+1) * StatsInterval))
	}
	_, st := getStats(t, srv, "")
	if len(st.Samples) != 180 {
		t.Fatalf("%d samples; want 180 (15 minutes of 5 s)", len(st.Samples))
	}
	if got, want := st.Samples[0].Time, formatTime(start.Add(21*StatsInterval)); got != want {
		t.Errorf("oldest sample at %s; want %s", got, want)
	}
	if st.Samples[170].DispatchErrors != 2 || len(st.Errors) != 1 || st.Errors[0].Error != "storage unavailable" {
		t.Errorf("errors: sample %+v, list %+v; want 2 failed steps in one sample, listed once", st.Samples[170], st.Errors)
	}
	if st.Prices.Date != bench.DefaultPrices().Date {
		t.Errorf("prices of %q; want the shipped table's", st.Prices.Date)
	}
}

// TestStatsRefuseBadInput checks that a query parameter is a 400 and another method a 405.
func TestStatsRefuseBadInput(t *testing.T) {
	srv, _, _ := statsServer(t, nil)
	if code, _ := getStats(t, srv, "?window=5m"); code != http.StatusBadRequest {
		t.Errorf("GET /admin/stats?window=5m: %d, want 400", code)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, localRequest("POST", "/admin/stats"))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /admin/stats: %d, Allow %q; want 405", rec.Code, rec.Header().Get("Allow"))
	}
}

// TestStatsSamplerStopsOnClose checks that Close ends the sampling goroutine.
func TestStatsSamplerStopsOnClose(t *testing.T) {
	store, err := estuite.Open(context.Background(), mem.New(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv, err := New(Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.stats.run(srv.closing); close(done) }()
	srv.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the sampler still runs after Close")
	}
}

// TestStatsCountEveryShardsSteps checks that the steps of other shards' dispatchers, reported
// through ObserveShardStep, add their events and backlog to those of ObserveDispatch.
func TestStatsCountEveryShardsSteps(t *testing.T) {
	srv, _, _ := statsServer(t, nil)
	start := srv.stats.last
	srv.ObserveDispatch(estuite.DispatchStats{Shard: 0, Lags: []time.Duration{time.Millisecond}, Backlog: 3}, nil)
	srv.ObserveShardStep(estuite.DispatchStats{Shard: 1, Lags: []time.Duration{2 * time.Millisecond, time.Millisecond}, Backlog: 4}, nil)
	srv.ObserveShardStep(estuite.DispatchStats{Shard: 1}, errors.New("shard 1 failed"))
	srv.stats.sample(start.Add(StatsInterval))
	srv.ObserveShardStep(estuite.DispatchStats{Shard: 1, Backlog: 0}, nil)
	_, st := getStats(t, srv, "")
	smp := st.Samples[0]
	if smp.Events != 3 || smp.MaxLagSeconds != 0.002 || smp.Backlog != 7 || smp.DispatchErrors != 1 {
		t.Errorf("sample %+v; want 3 events, 2 ms, a backlog of 3 + 4, 1 error", smp)
	}
	if st.Current.Backlog != 3 || st.Current.Events != 0 || len(st.Errors) != 1 || st.Errors[0].Shard != 1 {
		t.Errorf("now %+v, errors %+v; want shard 1's backlog gone, shard 0's 3 left, shard 1's error listed", st.Current, st.Errors)
	}
}
