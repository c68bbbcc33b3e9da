package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
)

// DefaultTablePrefix starts the table names of a run when Options.TablePrefix is empty.
const DefaultTablePrefix = "bench"

// StallTimeout is how long Run waits for the feed or a projection to move before it gives up on a
// workload.
const StallTimeout = 2 * time.Minute

// Options configure Run. nil means defaults.
type Options struct {
	// TablePrefix starts every table name of the run; each workload adds a short form of its
	// name, so its tables are its own. Letters and digits, starting with a letter. Default
	// DefaultTablePrefix. The tables must be empty (or absent) before the run: use a fresh prefix.
	TablePrefix string
	// Progress, when set, is told what Run is doing: at the start and end of every phase and
	// about four times a second in between. It is called from one goroutine at a time.
	Progress func(Progress)
}

// Progress reports how far a workload's phase has come.
type Progress struct {
	Workload string // the workload's name
	Phase    string // "append", "dispatch", "read", "size", or "done"
	Done     int64  // events (or rehydrations) done so far in the phase
	Total    int64  // events (or rehydrations) the phase will do
}

// Roles holds one figure for each role of a workload.
type Roles[T any] struct {
	// Write is the appenders' share.
	Write T `json:"write"`
	// Dispatch is the dispatcher's share: moving the events into the feed.
	Dispatch T `json:"dispatch"`
	// Read is the readers' share: the rehydrations or the projection.
	Read T `json:"read"`
}

// Latency summarizes the durations of one kind of operation, in milliseconds.
type Latency struct {
	Operation string  `json:"operation"` // "append", "rehydrate" or "append-to-projection"
	Count     int     `json:"count"`
	P50       float64 `json:"p50Ms"`
	P95       float64 `json:"p95Ms"`
	P99       float64 `json:"p99Ms"`
	Max       float64 `json:"maxMs"`
}

// Result is what one workload measured.
type Result struct {
	Workload    Workload `json:"workload"`
	TablePrefix string   `json:"tablePrefix"`

	// Appends, EventsWritten: the appends made and the events they carried.
	Appends       int64 `json:"appends"`
	EventsWritten int64 `json:"eventsWritten"`
	// EventsDispatched is how many events the dispatcher wrote into the feed.
	EventsDispatched int64 `json:"eventsDispatched"`
	// EventsRead is how many events the readers received: the events of the streams
	// rehydrated, or the events the projection handled (after its filter).
	EventsRead int64 `json:"eventsRead"`
	// FeedEventsScanned is how many feed positions a projection went through, matching or not.
	FeedEventsScanned int64 `json:"feedEventsScanned,omitempty"`
	// Rehydrations is how many whole streams were read.
	Rehydrations int64 `json:"rehydrations,omitempty"`
	// Removed is how many event rows a Remove workload's scavenge pass deleted (the rest of
	// EventsRead was erased by forgetting its subjects).
	Removed int64 `json:"removed,omitempty"`

	// Seconds is each phase's wall time. The dispatch phase of a live dispatcher runs from the
	// first append until the feed holds every event.
	Seconds Roles[float64] `json:"seconds"`
	// EventsPerSecond is each phase's events over its wall time.
	EventsPerSecond Roles[float64] `json:"eventsPerSecond"`

	// Requests are the storage transactions of each role, from Store.RequestCounts: each is
	// billed on Azure Table Storage, but Queries (which counts the queries whose pages are
	// QueryPages).
	Requests Roles[estuite.RequestCounts] `json:"requests"`
	// CosmosRU is what the same calls would cost on the Cosmos DB Table API, by the model of
	// the Cosmos* constants.
	CosmosRU Roles[float64] `json:"cosmosRU"`

	// Size is what the workload's two tables hold at the end, by Azure's entity-size formula.
	Size estuite.StorageSize `json:"size"`
	// JSONBytes is the same rows' JSON size, as the Cosmos DB estimate counts them.
	JSONBytes struct {
		Streams int64 `json:"streams"`
		Events  int64 `json:"events"`
	} `json:"jsonBytes"`

	Latency []Latency `json:"latency"`
}

// Run runs the workloads one after another against backend and returns what each measured. It
// does not close backend. Every workload writes the tables TablePrefix+key+"streams" and
// "…events" (key: the workload's name in letters and digits), and leaves them behind: on Azure,
// delete them after the run.
//
// Each workload opens its own stores on backend — one for the appenders, one for the dispatcher,
// one for the readers, one to measure the tables' size at the end — so that each role's
// transactions are counted apart, exactly.
func Run(ctx context.Context, backend table.Backend, workloads []Workload, opts *Options) ([]Result, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.TablePrefix == "" {
		o.TablePrefix = DefaultTablePrefix
	}
	for _, w := range workloads {
		if err := w.validate(); err != nil {
			return nil, err
		}
		if err := table.ValidateTableName(o.TablePrefix + w.key() + "streams"); err != nil {
			return nil, fmt.Errorf("bench: table prefix %q for workload %s: %w", o.TablePrefix, w.Name, err)
		}
	}
	var results []Result
	for _, w := range workloads {
		r := &runner{ctx: ctx, backend: backend, w: w, prefix: o.TablePrefix + w.key(), progress: o.Progress}
		res, err := r.run()
		if err != nil {
			return results, fmt.Errorf("bench: workload %s: %w", w.Name, err)
		}
		results = append(results, res)
	}
	return results, nil
}

// runner runs one workload.
type runner struct {
	ctx      context.Context
	backend  table.Backend
	w        Workload
	prefix   string
	progress func(Progress)
	stores   []*estuite.Store

	latMu     sync.Mutex
	latencies map[string][]time.Duration
}

func (r *runner) open() (*estuite.Store, *meter, error) {
	m := &meter{}
	s, err := estuite.Open(r.ctx, meteredBackend{b: r.backend, m: m}, &estuite.Options{TablePrefix: r.prefix})
	if err != nil {
		return nil, nil, err
	}
	r.stores = append(r.stores, s)
	return s, m, nil
}

func (r *runner) record(op string, d time.Duration) {
	r.latMu.Lock()
	r.latencies[op] = append(r.latencies[op], d)
	r.latMu.Unlock()
}

// phase reports progress of a phase until the returned function is called.
func (r *runner) phase(name string, total int64, done *atomic.Int64) (end func()) {
	if r.progress == nil {
		return func() {}
	}
	r.progress(Progress{Workload: r.w.Name, Phase: name, Done: done.Load(), Total: total})
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				r.progress(Progress{Workload: r.w.Name, Phase: name, Done: done.Load(), Total: total})
				return
			case <-t.C:
				r.progress(Progress{Workload: r.w.Name, Phase: name, Done: done.Load(), Total: total})
			}
		}
	}()
	return func() {
		close(stop)
		<-stopped
	}
}

func (r *runner) run() (res Result, err error) {
	w := r.w
	r.latencies = make(map[string][]time.Duration)
	defer func() {
		for _, s := range r.stores {
			s.Close()
		}
	}()
	writer, wm, err := r.open()
	if err != nil {
		return res, err
	}
	dispatcher, dm, err := r.open()
	if err != nil {
		return res, err
	}
	reader, rm, err := r.open()
	if err != nil {
		return res, err
	}
	// What opening cost (reading the store's feed shard count) is not the workload's.
	openCounts := Roles[estuite.RequestCounts]{Write: writer.RequestCounts(), Dispatch: dispatcher.RequestCounts(), Read: reader.RequestCounts()}
	openRU := Roles[float64]{Write: wm.snapshot(), Dispatch: dm.snapshot(), Read: rm.snapshot()}
	res.Workload, res.TablePrefix = w, r.prefix
	total := w.Events()

	// A live dispatcher and a live projection start before the appends.
	var feedHead atomic.Int64
	var live *estuite.Dispatcher
	if w.LiveDispatch {
		live = estuite.NewDispatcher(dispatcher, &estuite.DispatcherOptions{OnStep: func(st estuite.DispatchStats, err error) {
			if err == nil {
				storeMax(&feedHead, st.FeedHead)
			}
		}})
		if err := live.Start(r.ctx); err != nil {
			return res, err
		}
		defer live.Stop()
	}
	var starts sync.Map // "stream/version" → time.Time the append began
	var handled atomic.Int64
	var sub *estuite.Subscription
	caughtUp := make(chan struct{}) // closed once the live projection has caught up with every event
	var caughtOnce sync.Once
	if w.Read == FollowLive {
		sub, err = reader.Subscribe(r.ctx, estuite.SubscriptionOptions{Name: "bench-" + w.key(), CaughtUp: func(p int64) {
			if p >= total {
				caughtOnce.Do(func() { close(caughtUp) })
			}
		}, Handler: func(_ context.Context, ev estuite.FeedEvent) error {
			if t, ok := starts.Load(ev.Stream + "/" + strconv.FormatInt(ev.Version, 10)); ok {
				r.record("append-to-projection", time.Since(t.(time.Time)))
			}
			handled.Add(1)
			return nil
		}})
		if err != nil {
			return res, err
		}
		defer sub.Stop()
	}

	// Write.
	start := time.Now()
	if err := r.write(writer, &starts); err != nil {
		return res, err
	}
	res.Seconds.Write = time.Since(start).Seconds()
	res.Appends, res.EventsWritten = int64(w.Commits), total

	// Dispatch.
	if live != nil {
		end := r.phase("dispatch", total, &feedHead)
		err := waitFor(r.ctx, &feedHead, total, func() error {
			select {
			case <-live.Done():
				return errors.New("the dispatcher stopped")
			default:
				return nil
			}
		})
		end()
		if err != nil {
			return res, fmt.Errorf("waiting for the feed: %w", err)
		}
		res.Seconds.Dispatch = time.Since(start).Seconds()
		if err := live.Stop(); err != nil {
			return res, err
		}
		res.EventsDispatched = feedHead.Load()
	} else {
		dstart := time.Now()
		n, err := r.drain(dispatcher)
		if err != nil {
			return res, err
		}
		res.Seconds.Dispatch = time.Since(dstart).Seconds()
		res.EventsDispatched = n
	}

	// Read.
	switch w.Read {
	case FollowLive:
		end := r.phase("read", total, &handled)
		err := waitFor(r.ctx, &handled, total, func() error {
			select {
			case <-sub.Done():
				return fmt.Errorf("the projection stopped: %v", sub.Err())
			default:
				return nil
			}
		})
		end()
		if err != nil {
			return res, fmt.Errorf("waiting for the projection: %w", err)
		}
		res.Seconds.Read = time.Since(start).Seconds()
		// Stop only once caught up: the checkpoint is saved then, and no write is in flight
		// when the subscription is cancelled.
		select {
		case <-caughtUp:
		case <-sub.Done():
			return res, fmt.Errorf("the projection stopped: %v", sub.Err())
		case <-time.After(StallTimeout):
			return res, fmt.Errorf("the projection did not report catching up within %v", StallTimeout)
		}
		if err := sub.Stop(); err != nil {
			return res, err
		}
		res.EventsRead, res.FeedEventsScanned = handled.Load(), handled.Load()
	case Rehydrate:
		rstart := time.Now()
		if err := r.rehydrate(reader, &res); err != nil {
			return res, err
		}
		res.Seconds.Read = time.Since(rstart).Seconds()
	case Project:
		rstart := time.Now()
		if err := r.project(reader, &res); err != nil {
			return res, err
		}
		res.Seconds.Read = time.Since(rstart).Seconds()
	case Remove:
		rstart := time.Now()
		if err := r.remove(reader, &res); err != nil {
			return res, err
		}
		res.Seconds.Read = time.Since(rstart).Seconds()
	}

	// Counts first: measuring the size makes requests of its own, on a store of its own.
	res.Requests = Roles[estuite.RequestCounts]{Write: writer.RequestCounts().Sub(openCounts.Write), Dispatch: dispatcher.RequestCounts().Sub(openCounts.Dispatch),
		Read: reader.RequestCounts().Sub(openCounts.Read)}
	res.CosmosRU = Roles[float64]{Write: wm.snapshot() - openRU.Write, Dispatch: dm.snapshot() - openRU.Dispatch, Read: rm.snapshot() - openRU.Read}
	sizer, sm, err := r.open()
	if err != nil {
		return res, err
	}
	var zero atomic.Int64
	end := r.phase("size", 0, &zero)
	res.Size, err = sizer.Size(r.ctx)
	end()
	if err != nil {
		return res, err
	}
	sm.mu.Lock()
	res.JSONBytes.Streams, res.JSONBytes.Events = sm.jsonBytes[r.prefix+"streams"], sm.jsonBytes[r.prefix+"events"]
	sm.mu.Unlock()

	rate := func(n int64, s float64) float64 {
		if s <= 0 {
			return 0
		}
		return float64(n) / s
	}
	res.EventsPerSecond = Roles[float64]{Write: rate(res.EventsWritten, res.Seconds.Write),
		Dispatch: rate(res.EventsDispatched, res.Seconds.Dispatch), Read: rate(res.EventsRead, res.Seconds.Read)}
	for _, op := range []string{"append", "rehydrate", "append-to-projection"} {
		if ds := r.latencies[op]; len(ds) > 0 {
			res.Latency = append(res.Latency, summarize(op, ds))
		}
	}
	if r.progress != nil {
		r.progress(Progress{Workload: w.Name, Phase: "done", Done: total, Total: total})
	}
	return res, nil
}

// streamName is the name of the workload's stream number i.
func (r *runner) streamName(i int) string { return fmt.Sprintf("%s-%06d", r.w.key(), i) }

// subject is the data subject the events of stream i name, in a Remove workload.
func (r *runner) subject(i int) string { return fmt.Sprintf("%s-person-%06d", r.w.key(), i) }

// remove is a Remove workload's removal phase: deletes, retention and forgetting, then one
// scavenge pass, on store s (its requests are the "read" role's).
func (r *runner) remove(s *estuite.Store, res *Result) error {
	w := r.w
	perStream := w.Events() / int64(w.Streams)
	var done atomic.Int64
	end := r.phase("remove", int64(w.Streams), &done)
	defer end()
	var removed int64
	for i := 0; i < w.Streams; i++ {
		name := r.streamName(i)
		t := time.Now()
		switch i % 4 {
		case 0, 2:
			if _, err := s.Delete(r.ctx, name, nil); err != nil {
				return fmt.Errorf("delete %s: %w", name, err)
			}
			r.record("delete", time.Since(t))
		case 1:
			keep := int64(w.CommitSize)
			if _, err := s.SetMetadata(r.ctx, name, estuite.StreamMetadata{MaxCount: &keep}, estuite.AnyMetadataVersion); err != nil {
				return fmt.Errorf("set metadata of %s: %w", name, err)
			}
			r.record("set-metadata", time.Since(t))
		case 3:
			if err := s.Forget(r.ctx, r.subject(i)); err != nil {
				return fmt.Errorf("forget %s: %w", r.subject(i), err)
			}
			r.record("forget", time.Since(t))
			removed += perStream // erased, not removed: the rows stay, their contents unreadable
		}
		done.Add(1)
	}
	t := time.Now()
	st, err := s.Scavenge(r.ctx)
	if err != nil {
		return fmt.Errorf("scavenge: %w", err)
	}
	r.record("scavenge", time.Since(t))
	if st.Waiting != 0 {
		return fmt.Errorf("scavenge left %d events not in the feed, after the dispatch phase", st.Waiting)
	}
	res.EventsRead = removed + int64(st.Removed)
	res.Removed = int64(st.Removed)
	return nil
}

// write makes the workload's appends: writer k owns the streams i with i mod Writers = k and
// appends to them with the exact expected version.
func (r *runner) write(s *estuite.Store, starts *sync.Map) error {
	w := r.w
	var done atomic.Int64
	end := r.phase("append", w.Events(), &done)
	defer end()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	errs := make([]error, w.Writers)
	var wg sync.WaitGroup
	for k := range w.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			versions := make(map[int]int64)
			for i := 0; i < w.Commits; i++ {
				stream := i % w.Streams
				if stream%w.Writers != k {
					continue
				}
				name := r.streamName(stream)
				v := versions[stream]
				events := makeEvents(i, w.CommitSize)
				if w.Read == Remove && stream%4 == 3 {
					for j := range events {
						events[j].Subject = r.subject(stream)
					}
				}
				t := time.Now()
				if starts != nil && w.Read == FollowLive {
					for j := range events {
						starts.Store(name+"/"+strconv.FormatInt(v+1+int64(j), 10), t)
					}
				}
				opts := &estuite.AppendOptions{Expected: estuite.Exactly(v)}
				if w.saves(v, int64(len(events))) {
					opts.Snapshot = &estuite.Snapshot{Schema: 1, Data: make([]byte, SnapshotBytes)}
				}
				if _, err := s.Append(ctx, name, events, opts); err != nil {
					errs[k] = fmt.Errorf("append to %s: %w", name, err)
					cancel()
					return
				}
				r.record("append", time.Since(t))
				versions[stream] = v + int64(len(events))
				done.Add(int64(len(events)))
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// drain runs dispatch steps until no stream is dirty, and returns the events dispatched.
func (r *runner) drain(s *estuite.Store) (int64, error) {
	var done atomic.Int64
	end := r.phase("dispatch", r.w.Events(), &done)
	defer end()
	d := estuite.NewDispatcher(s, nil)
	for {
		st, err := d.Step(r.ctx)
		if err != nil {
			return done.Load(), err
		}
		done.Add(int64(st.Events))
		if st.Streams == 0 {
			return done.Load(), nil
		}
	}
}

// rehydrate reads whole streams (or their snapshots and the events after them), Rehydrations of
// them, the streams in turn.
func (r *runner) rehydrate(s *estuite.Store, res *Result) error {
	w := r.w
	var done, events atomic.Int64
	end := r.phase("read", int64(w.Rehydrations), &done)
	defer end()
	var next atomic.Int64
	errs := make([]error, max(1, w.Readers))
	var wg sync.WaitGroup
	for k := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(w.Rehydrations) {
					return
				}
				name := r.streamName(int(i % int64(w.Streams)))
				t := time.Now()
				var opts *estuite.ReadOptions
				if w.SnapshotEvery > 0 {
					opts = &estuite.ReadOptions{WithSnapshot: true, SnapshotSchema: 1}
				}
				read, err := s.Read(r.ctx, name, opts)
				if err != nil {
					errs[k] = fmt.Errorf("read %s: %w", name, err)
					return
				}
				n := int64(0)
				for _, err := range read.Events {
					if err != nil {
						errs[k] = fmt.Errorf("read %s: %w", name, err)
						return
					}
					n++
				}
				r.record("rehydrate", time.Since(t))
				events.Add(n)
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	res.Rehydrations, res.EventsRead = done.Load(), events.Load()
	return errors.Join(errs...)
}

// project runs one durable subscription from the start of the feed until it has caught up with
// every event dispatched.
func (r *runner) project(s *estuite.Store, res *Result) error {
	w := r.w
	total := res.EventsDispatched
	var position, handled atomic.Int64
	end := r.phase("read", total, &position)
	defer end()
	caughtUp := make(chan struct{})
	var once sync.Once
	o := estuite.SubscriptionOptions{
		Name: "bench-" + w.key(),
		Handler: func(context.Context, estuite.FeedEvent) error {
			handled.Add(1)
			return nil
		},
		CaughtUp: func(p int64) {
			position.Store(p)
			if p >= total {
				once.Do(func() { close(caughtUp) })
			}
		},
	}
	if w.Filtered {
		o.Types = []string{eventTypes[0]}
	}
	sub, err := s.Subscribe(r.ctx, o)
	if err != nil {
		return err
	}
	defer sub.Stop()
	stall := time.NewTimer(StallTimeout)
	defer stall.Stop()
	last := int64(-1)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-caughtUp:
			if err := sub.Stop(); err != nil {
				return err
			}
			res.EventsRead, res.FeedEventsScanned = handled.Load(), sub.Position()
			return nil
		case <-sub.Done():
			return fmt.Errorf("the projection stopped: %v", sub.Err())
		case <-r.ctx.Done():
			return r.ctx.Err()
		case <-stall.C:
			return fmt.Errorf("the projection made no progress for %v (at position %d of %d)", StallTimeout, sub.Position(), total)
		case <-tick.C:
			if p := sub.Position(); p != last {
				last = p
				position.Store(p)
				stall.Reset(StallTimeout)
			}
		}
	}
}

// waitFor waits until n reaches target, failing when check fails, ctx ends or n stops moving
// for StallTimeout.
func waitFor(ctx context.Context, n *atomic.Int64, target int64, check func() error) error {
	last, since := n.Load(), time.Now()
	for {
		cur := n.Load()
		if cur >= target {
			return nil
		}
		if err := check(); err != nil {
			return err
		}
		if cur != last {
			last, since = cur, time.Now()
		} else if time.Since(since) > StallTimeout {
			return fmt.Errorf("stuck at %d of %d for %v", cur, target, StallTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func storeMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// summarize computes the percentiles of ds (nearest rank).
func summarize(op string, ds []time.Duration) Latency {
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pct := func(p float64) float64 {
		i := int(p*float64(len(ds)) + 0.999999)
		return ms(ds[min(max(i-1, 0), len(ds)-1)])
	}
	return Latency{Operation: op, Count: len(ds), P50: pct(0.50), P95: pct(0.95), P99: pct(0.99), Max: ms(ds[len(ds)-1])}
}

// eventTypes are the types the workloads' events cycle through.
var eventTypes = [EventTypes]string{"OrderPlaced", "OrderLineAdded", "OrderLineRemoved", "PaymentAuthorized",
	"PaymentCaptured", "ShipmentPrepared", "ShipmentDispatched", "ShipmentDelivered", "InvoiceIssued", "OrderClosed"}

// makeEvents returns commit number c's events: about 200 bytes of JSON data and 60 of metadata
// each, as a typical domain event.
func makeEvents(c, n int) []estuite.EventData {
	events := make([]estuite.EventData, n)
	for i := range events {
		events[i] = estuite.EventData{
			Type: eventTypes[(c*n+i)%EventTypes],
			Data: fmt.Appendf(nil, `{"order":"o-%07d","line":%d,"sku":"SKU-%06d","quantity":3,"price":"12.50","currency":"EUR","note":"deliver to the back door, ring twice"}`,
				c, i, (c*31+i)%1000000),
			Metadata: []byte(`{"correlationId":"6f1c1f3e-5c5d-4a9e-9d55-0d6f1f0b7a11"}`),
		}
	}
	return events
}
