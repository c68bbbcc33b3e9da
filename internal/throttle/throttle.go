// Package throttle is a reverse proxy that imposes Azure Table Storage's scalability targets —
// scaled down as a benchmark chooses — on a table service that has none, such as Azurite. Put it
// between a client and Azurite and the client meets what it would meet on Azure under load:
// requests over a target are refused with 503 ServerBusy, the answer Azure gives, which the SDK
// and Estuite's table/azure backend report as a transient refusal, worth a retry.
//
// # Model
//
// Azure publishes two targets for tables: about 2,000 entities per second for one partition (one
// partition key of one table) and 20,000 transactions per second for the storage account
// (AzureTargets). The proxy keeps a token bucket for the account and one per partition, each
// refilled continuously at its rate up to its burst (Limits). Each request costs:
//
//   - one account transaction, whatever it is; an entity group transaction ($batch) is one;
//   - a point read, insert, update, merge, delete or upsert: one entity of its partition;
//   - an entity group transaction: one entity per operation, of the partition each operation
//     names (in its URL, or in the entity of an insert) — found by parsing the multipart body;
//   - a query: the entities of the page the service returns, each of the partition it carries,
//     counted from the JSON response's "value" array; a query whose filter pins one partition
//     (PartitionKey eq '...' and no "or") costs at least one entity of that partition, even for
//     an empty page, and one answered in another format costs exactly one;
//   - a table create, delete or list, or a table ACL or service request: the transaction only.
//
// A request is admitted when the account bucket and the bucket of every partition it names
// (known before it is forwarded: a query across partitions names none) hold at least one
// token; its cost is then taken, and a bucket may go into debt — a batch of 100 operations
// admitted with one token left leaves the partition 99 entities short, and its next requests are
// refused until the refill pays that back. Charging the entities a query returns after the fact
// works the same way. Over a span of T seconds a bucket admits at most its burst plus T times its
// rate, plus what the last request admitted took beyond the tokens left. A refused request costs
// nothing and is not forwarded.
//
// Azure spreads a hot partition over more servers as its load persists, and its targets are
// targets rather than hard limits; the proxy models the targets only, as fixed limits. It knows
// nothing of bandwidth (ingress and egress targets) or entity sizes (the targets assume 1 KiB
// entities).
//
// # Answer
//
// A refused request gets what Azure's Table service sends (see writeServerBusy): status 503, the
// header x-ms-error-code: ServerBusy, and an OData error body — JSON
// ({"odata.error":{"code":"ServerBusy",...}}) when the request accepts JSON, as the SDK's do,
// XML otherwise — with the message "The server is busy." for a partition and "Operations per
// second is over the account limit." for the account. Azure sends no Retry-After with it, and
// neither does the proxy. Azure may also report a throttled batch inside a 202 answer, as the
// failure of its first operation; the proxy always refuses the whole request.
//
// # Forwarding
//
// Admitted requests go to the target unchanged: method, path (the account name included, as in
// Azurite's http://127.0.0.1:10002/devstoreaccount1), query, headers and body; only the
// connection's host changes. Shared Key authorization signs the account and the path, not the
// host and port, so signatures made for the proxy's endpoint stay valid at the target.
package throttle

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// AzureTargets are Azure Table Storage's published scalability targets for a standard storage
// account: 2,000 entities per second per partition and 20,000 transactions per second per
// account (both assuming 1 KiB entities). Benchmarks on one machine use a fraction of them.
var AzureTargets = Limits{PartitionEntitiesPerSecond: 2000, AccountTransactionsPerSecond: 20000}

// Limits are the rates a Proxy imposes. A zero rate imposes no limit of that kind.
type Limits struct {
	// PartitionEntitiesPerSecond is the rate of entities one partition (a partition key of one
	// table) serves: read, written or deleted.
	PartitionEntitiesPerSecond float64
	// AccountTransactionsPerSecond is the rate of requests the account serves, over all tables
	// and partitions; an entity group transaction counts as one.
	AccountTransactionsPerSecond float64
	// PartitionBurst is how many entities a partition's bucket holds: how far a partition that
	// was idle may run ahead of its rate. Zero means one second's worth
	// (PartitionEntitiesPerSecond). Azure absorbs short spikes rather than refusing the first
	// request over the rate, and documents no burst size; one second's worth lets a client start
	// at full speed while keeping any one-second window within twice the rate, and a few seconds'
	// run within a fraction of it.
	PartitionBurst float64
	// AccountBurst is how many transactions the account's bucket holds; zero means one second's
	// worth (AccountTransactionsPerSecond), for the same reasons.
	AccountBurst float64
}

// Stats are what a Proxy has done since it was made.
type Stats struct {
	// Requests is every request received; Forwarded those passed to the target; Throttled
	// those answered with ServerBusy (Requests = Forwarded + Throttled, less any request whose
	// body could not be read).
	Requests, Forwarded, Throttled int64
	// AccountThrottled counts the requests of Throttled refused by the account's bucket.
	AccountThrottled int64
	// PartitionThrottled counts the requests refused by each partition's bucket (the account's
	// bucket having had tokens). A batch is counted under each partition that refused it.
	PartitionThrottled map[Partition]int64
	// Entities counts the entities charged to each partition: those of admitted requests, and
	// those queries returned.
	Entities map[Partition]int64
}

// Proxy is an http.Handler that forwards table service requests to a target and refuses, with
// 503 ServerBusy, those over its Limits. Make one with New; it is safe for concurrent use.
type Proxy struct {
	limits  Limits
	reverse *httputil.ReverseProxy
	now     func() time.Time // the clock the buckets refill by; tests replace it

	mu         sync.Mutex
	account    *bucket // nil: no account limit
	partitions map[Partition]*bucket
	stats      Stats
}

// New returns a proxy that forwards to the table service at target, of which only the scheme and
// host are used: the path of each request is forwarded as it came (Azurite's requests start
// with the account name, /devstoreaccount1/...). The buckets start full.
func New(target *url.URL, l Limits) *Proxy {
	if l.PartitionBurst == 0 {
		l.PartitionBurst = l.PartitionEntitiesPerSecond
	}
	if l.AccountBurst == 0 {
		l.AccountBurst = l.AccountTransactionsPerSecond
	}
	// A bucket admits a request when it holds a whole token: it must be able to hold one.
	l.PartitionBurst, l.AccountBurst = max(l.PartitionBurst, 1), max(l.AccountBurst, 1)
	p := &Proxy{limits: l, now: time.Now, partitions: map[Partition]*bucket{}}
	p.stats.PartitionThrottled = map[Partition]int64{}
	p.stats.Entities = map[Partition]int64{}
	scheme, host := target.Scheme, target.Host
	p.reverse = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = scheme, host
			pr.Out.Host = host
		},
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		},
		ModifyResponse: p.chargeQuery,
	}
	return p
}

type demandKey struct{}

// ServeHTTP forwards r to the target, or answers 503 ServerBusy when a bucket it draws on is
// empty.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.stats.Requests++
	p.mu.Unlock()
	d, err := classify(r)
	if err != nil {
		http.Error(w, "throttle: reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if refusedBy, account := p.admit(d); refusedBy != nil || account {
		writeServerBusy(w, r, account)
		return
	}
	p.reverse.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), demandKey{}, d)))
}

// admit takes d's cost from the buckets when they all hold a token. Otherwise it takes nothing
// and reports why: account when the account's bucket is empty, else the partitions whose
// buckets are.
func (p *Proxy) admit(d *demand) (refusedBy []Partition, account bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.account == nil && p.limits.AccountTransactionsPerSecond > 0 {
		p.account = newBucket(p.limits.AccountTransactionsPerSecond, p.limits.AccountBurst, now)
	}
	if p.account != nil && !p.account.has(now) {
		p.stats.Throttled++
		p.stats.AccountThrottled++
		return nil, true
	}
	for _, part := range d.partitions() {
		if b := p.bucket(part, now); b != nil && !b.has(now) {
			refusedBy = append(refusedBy, part)
		}
	}
	if refusedBy != nil {
		p.stats.Throttled++
		for _, part := range refusedBy {
			p.stats.PartitionThrottled[part]++
		}
		return refusedBy, false
	}
	p.stats.Forwarded++
	if p.account != nil {
		p.account.take(1)
	}
	for part, n := range d.entities {
		p.chargeLocked(part, n, now)
	}
	return nil, false
}

// bucket returns part's bucket, made full on first use; nil when partitions are not limited.
func (p *Proxy) bucket(part Partition, now time.Time) *bucket {
	if p.limits.PartitionEntitiesPerSecond <= 0 {
		return nil
	}
	b := p.partitions[part]
	if b == nil {
		b = newBucket(p.limits.PartitionEntitiesPerSecond, p.limits.PartitionBurst, now)
		p.partitions[part] = b
	}
	return b
}

// chargeLocked takes n entities from part's bucket and counts them. p.mu is held.
func (p *Proxy) chargeLocked(part Partition, n int, now time.Time) {
	if b := p.bucket(part, now); b != nil {
		b.refill(now)
		b.take(float64(n))
	}
	p.stats.Entities[part] += int64(n)
}

// chargeQuery charges the entities of a successful query's page to their partitions: it reads
// the body (and puts it back) to count them.
func (p *Proxy) chargeQuery(resp *http.Response) error {
	d, _ := resp.Request.Context().Value(demandKey{}).(*demand)
	if d == nil || !d.query || resp.StatusCode != http.StatusOK {
		return nil
	}
	table := d.partition.Table
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	counts, ok := queryEntities(body)
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if d.single {
		// Entities of other partitions cannot match the filter; an empty page still cost the
		// partition a look, and a page not in JSON is counted as one.
		n := counts[d.partition.PartitionKey] + counts[""]
		if !ok || n == 0 {
			n = 1
		}
		p.chargeLocked(d.partition, n, now)
		return nil
	}
	for pk, n := range counts {
		if pk == "" {
			continue // a $select without PartitionKey: the account paid the transaction
		}
		p.chargeLocked(Partition{Table: table, PartitionKey: pk}, n, now)
	}
	return nil
}

// Stats returns a copy of the proxy's counts.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.PartitionThrottled = make(map[Partition]int64, len(p.stats.PartitionThrottled))
	for k, v := range p.stats.PartitionThrottled {
		s.PartitionThrottled[k] = v
	}
	s.Entities = make(map[Partition]int64, len(p.stats.Entities))
	for k, v := range p.stats.Entities {
		s.Entities[k] = v
	}
	return s
}

// bucket is a token bucket: tokens refill at rate per second up to burst, and may go below zero
// (a debt) when a cost is taken that exceeds what is left.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

// newBucket returns a full bucket.
func newBucket(rate, burst float64, now time.Time) *bucket {
	return &bucket{rate: rate, burst: burst, tokens: burst, last: now}
}

// refill adds the tokens earned since the last refill.
func (b *bucket) refill(now time.Time) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(b.burst, b.tokens+dt*b.rate)
		b.last = now
	}
}

// has refills b and reports whether it holds at least one token.
func (b *bucket) has(now time.Time) bool {
	b.refill(now)
	return b.tokens >= 1
}

// take removes n tokens, possibly leaving a debt.
func (b *bucket) take(n float64) { b.tokens -= n }
