package bench

import "math"

// Tables holds one figure for each of the store's two tables.
type Tables struct {
	Streams float64 `json:"streams"` // the stream table
	Events  float64 `json:"events"`  // the event table (feed, markers, lease, checkpoints)
}

// Cost is a workload's result in money. Dollar figures per million events divide by the events
// of the phase: written for the write and dispatch phases, received by the readers for the read
// phase (a filtered projection's matches, not the feed positions it went through).
type Cost struct {
	Workload string `json:"workload"`

	// Transactions are the billable Table Storage transactions of each role
	// (RequestCounts.Total).
	Transactions Roles[int64] `json:"transactions"`
	// TransactionsPerEvent are Transactions divided by the phase's events.
	TransactionsPerEvent Roles[float64] `json:"transactionsPerEvent"`

	// AppendPerMillion, DispatchPerMillion and WritePerMillion are the dollars per million
	// events written: for the appends, for the dispatch into the feed, and both together.
	AppendPerMillion   float64 `json:"appendPerMillionEvents"`
	DispatchPerMillion float64 `json:"dispatchPerMillionEvents"`
	WritePerMillion    float64 `json:"writtenAndDispatchedPerMillionEvents"`
	// ReadPerMillion is the dollars per million events received by the readers (0 without a
	// read phase).
	ReadPerMillion float64 `json:"readPerMillionEvents"`
	// RehydrationPerMillion is the dollars per million whole-stream reads (rehydrate only).
	RehydrationPerMillion float64 `json:"rehydrationPerMillion,omitempty"`

	// BytesPerEvent is each table's billable bytes per event written.
	BytesPerEvent Tables `json:"bytesPerEvent"`
	// StorageMonthly is what the tables as measured cost per month.
	StorageMonthly Tables `json:"storageMonthly"`
	// StoragePerMillionMonthly is what keeping a million such events costs per month, by table.
	StoragePerMillionMonthly Tables `json:"storagePerMillionEventsMonthly"`

	// Cosmos is the estimate for the Cosmos DB Table API.
	Cosmos CosmosCost `json:"cosmos"`
	// Floor is what any design on Table Storage must pay for the same work: one batch per
	// append (no feed), one query per 1,000 events read.
	Floor FloorCost `json:"floor"`
	// Streamstone is what a Streamstone-style design pays for the same work: one batch per
	// append to a new stream or to a stream whose header it holds, a header read and a batch
	// for any other; reads as the floor; and no feed, so no projection at all.
	Streamstone FloorCost `json:"streamstone"`
}

// CosmosCost is the Cosmos DB estimate of a workload.
type CosmosCost struct {
	// RUPerEvent are request units per event of each phase.
	RUPerEvent Roles[float64] `json:"ruPerEvent"`
	// WritePerMillion and ReadPerMillion are dollars per million events, as in Cost.
	WritePerMillion float64 `json:"writtenAndDispatchedPerMillionEvents"`
	ReadPerMillion  float64 `json:"readPerMillionEvents"`
	// StoragePerMillionMonthly is what keeping a million such events costs per month, by
	// table, from the rows' JSON size (Cosmos DB's index and system properties excluded).
	StoragePerMillionMonthly Tables `json:"storagePerMillionEventsMonthly"`
}

// FloorCost is a computed comparison: transactions a design needs for the workload's work, and
// their price.
type FloorCost struct {
	WriteTransactions int64   `json:"writeTransactions"`
	ReadTransactions  int64   `json:"readTransactions"`
	WritePerMillion   float64 `json:"writePerMillionEvents"`
	ReadPerMillion    float64 `json:"readPerMillionEvents"`
	// NoFeed is set when the design cannot do the workload's read (a projection over all
	// streams needs a feed).
	NoFeed bool `json:"noFeed,omitempty"`
}

// perMillion is amount per unit, per million units; 0 when there are no units.
func perMillion(amount float64, units int64) float64 {
	if units <= 0 {
		return 0
	}
	return amount / float64(units) * 1e6
}

func per(n, d int64) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / float64(d)
}

// Cost prices a result. Every dollar figure is a count from the result times a price of p.
func (r Result) Cost(p Prices) Cost {
	tx := p.PerTransaction()
	c := Cost{Workload: r.Workload.Name}
	c.Transactions = Roles[int64]{Write: r.Requests.Write.Total(), Dispatch: r.Requests.Dispatch.Total(), Read: r.Requests.Read.Total()}
	c.TransactionsPerEvent = Roles[float64]{Write: per(c.Transactions.Write, r.EventsWritten),
		Dispatch: per(c.Transactions.Dispatch, r.EventsWritten), Read: per(c.Transactions.Read, r.EventsRead)}
	c.AppendPerMillion = perMillion(float64(c.Transactions.Write)*tx, r.EventsWritten)
	c.DispatchPerMillion = perMillion(float64(c.Transactions.Dispatch)*tx, r.EventsWritten)
	c.WritePerMillion = perMillion(float64(c.Transactions.Write+c.Transactions.Dispatch)*tx, r.EventsWritten)
	c.ReadPerMillion = perMillion(float64(c.Transactions.Read)*tx, r.EventsRead)
	if r.Rehydrations > 0 {
		c.RehydrationPerMillion = perMillion(float64(c.Transactions.Read)*tx, r.Rehydrations)
	}

	gbMonth := p.TableStorage.PerGBMonth / GB
	c.BytesPerEvent = Tables{Streams: per(r.Size.Streams.Bytes, r.EventsWritten), Events: per(r.Size.Events.Bytes, r.EventsWritten)}
	c.StorageMonthly = Tables{Streams: float64(r.Size.Streams.Bytes) * gbMonth, Events: float64(r.Size.Events.Bytes) * gbMonth}
	c.StoragePerMillionMonthly = Tables{Streams: perMillion(c.StorageMonthly.Streams, r.EventsWritten),
		Events: perMillion(c.StorageMonthly.Events, r.EventsWritten)}

	ru := p.PerRU()
	c.Cosmos.RUPerEvent = Roles[float64]{Write: r.CosmosRU.Write / max(1, float64(r.EventsWritten)),
		Dispatch: r.CosmosRU.Dispatch / max(1, float64(r.EventsWritten)), Read: r.CosmosRU.Read / max(1, float64(r.EventsRead))}
	c.Cosmos.WritePerMillion = perMillion((r.CosmosRU.Write+r.CosmosRU.Dispatch)*ru, r.EventsWritten)
	c.Cosmos.ReadPerMillion = perMillion(r.CosmosRU.Read*ru, r.EventsRead)
	cgb := p.Cosmos.PerGBMonth / GB
	c.Cosmos.StoragePerMillionMonthly = Tables{Streams: perMillion(float64(r.JSONBytes.Streams)*cgb, r.EventsWritten),
		Events: perMillion(float64(r.JSONBytes.Events)*cgb, r.EventsWritten)}

	// The floor: one batch per append; one query per 1,000 events read (with a snapshot: the
	// snapshot and the events after it in one range query).
	floorRead := int64(0)
	switch r.Workload.Read {
	case Rehydrate:
		length := r.Workload.ReadPerRehydration()
		floorRead = r.Rehydrations * int64(math.Ceil(float64(max(length, 1))/1000))
	case Project, FollowLive:
		floorRead = int64(math.Ceil(float64(r.FeedEventsScanned) / 1000))
	case Remove:
		// A batch of 100 row deletes in each table per 100 events removed, one write per subject
		// forgotten: what removal costs at least on Table Storage.
		floorRead = 2*int64(math.Ceil(float64(r.Removed)/100)) + int64(r.Workload.Streams/4)
	}
	c.Floor = FloorCost{WriteTransactions: r.Appends, ReadTransactions: floorRead}
	c.Floor.WritePerMillion = perMillion(float64(c.Floor.WriteTransactions)*tx, r.EventsWritten)
	c.Floor.ReadPerMillion = perMillion(float64(c.Floor.ReadTransactions)*tx, r.EventsRead)
	// Streamstone: every append here goes to a new stream or to one whose header the writer
	// holds from its previous append, so it needs no header read; reads as the floor; no feed.
	c.Streamstone = c.Floor
	if r.Workload.Read == Project || r.Workload.Read == FollowLive {
		c.Streamstone.ReadTransactions, c.Streamstone.ReadPerMillion, c.Streamstone.NoFeed = 0, 0, true
	}
	return c
}
