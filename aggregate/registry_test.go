package aggregate_test

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/aggregate"
)

// Three schemas of one event, and an older name for it.

// CashInV1 is how deposits were first stored, under another name: whole euros.
type CashInV1 struct{ Euros int }

// DepositV1 is schema 1 of "Deposit": whole euros.
type DepositV1 struct{ Amount int }

// DepositV2 is schema 2: cents.
type DepositV2 struct{ Cents int }

// DepositV3 is schema 3, the current one: cents and a currency.
type DepositV3 struct {
	Cents    int
	Currency string
}

func depositRegistry() *aggregate.Registry {
	reg := aggregate.NewRegistry(nil)
	aggregate.RegisterSchema[DepositV3](reg, "Deposit", 3)
	aggregate.Upcast(reg, "Deposit", 2, func(e DepositV2) DepositV3 { return DepositV3{Cents: e.Cents, Currency: "EUR"} })
	aggregate.Upcast(reg, "Deposit", 1, func(e DepositV1) DepositV2 { return DepositV2{Cents: 100 * e.Amount} })
	aggregate.Upcast(reg, "CashIn", 1, func(e CashInV1) DepositV1 { return DepositV1{Amount: e.Euros} })
	return reg
}

// storedDeposits appends one deposit of each stored form to stream, as old code wrote them.
func storedDeposits(t *testing.T, s *estuite.Store, reg *aggregate.Registry, stream string) {
	t.Helper()
	v3, err := reg.Encode(DepositV3{Cents: 4, Currency: "CHF"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Append(context.Background(), stream, []estuite.EventData{
		{Type: "CashIn", Data: []byte(`{"Euros":1}`)},
		{Type: "Deposit", Data: []byte(`{"Amount":2}`)},
		{Type: "Deposit", Data: []byte(`{"Cents":3}`), Metadata: json.RawMessage(`{"eventSchema":2,"by":"old code"}`)},
		v3,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
}

var wantDeposits = []DepositV3{{100, "EUR"}, {200, "EUR"}, {3, "EUR"}, {4, "CHF"}}

func TestEncodeRecordsTheSchemaInMetadataFromSchemaTwo(t *testing.T) {
	reg := depositRegistry()
	aggregate.Register[Opened](reg, "AccountOpened")

	d, err := reg.Encode(DepositV3{Cents: 5, Currency: "EUR"}, json.RawMessage(`{"correlationId":"c"}`))
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(d.Metadata, &meta); err != nil {
		t.Fatal(err)
	}
	if d.Type != "Deposit" || d.Format != estuite.JSON || meta[aggregate.SchemaKey] != 3.0 || meta["correlationId"] != "c" {
		t.Fatalf("Encode of a schema-3 event: type %q, format %v, metadata %s", d.Type, d.Format, d.Metadata)
	}
	if string(d.Data) != `{"Cents":5,"Currency":"EUR"}` {
		t.Fatalf("data %s", d.Data)
	}

	d, err = reg.Encode(Opened{Owner: "ada"}, nil)
	if err != nil || d.Metadata != nil {
		t.Fatalf("Encode of a schema-1 event: metadata %s, %v; want none", d.Metadata, err)
	}
	d, _ = reg.Encode(Opened{Owner: "ada"}, json.RawMessage(`{"eventSchema":7,"a":1}`))
	if string(d.Metadata) != `{"a":1}` {
		t.Fatalf("Encode of a schema-1 event with a stray schema key: metadata %s", d.Metadata)
	}
	if _, err := reg.Encode(DepositV2{}, nil); !errors.Is(err, aggregate.ErrUnregisteredType) {
		t.Fatalf("Encode of an old form: %v, want ErrUnregisteredType", err)
	}
}

func TestDecodeUpcastsEveryOldFormToTheCurrentOne(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	reg := depositRegistry()
	storedDeposits(t, s, reg, "d")
	read, _ := s.Read(ctx, "d", nil)
	var got []DepositV3
	for rec, err := range read.Events {
		if err != nil {
			t.Fatal(err)
		}
		ev, err := reg.Decode(rec)
		if err != nil {
			t.Fatalf("Decode of %s: %v", rec.Type, err)
		}
		if ev.Type != "Deposit" || ev.Schema != 3 || ev.Recorded.Version != rec.Version {
			t.Fatalf("Decode of %s: type %q, schema %d", rec.Type, ev.Type, ev.Schema)
		}
		got = append(got, ev.Value.(DepositV3))
	}
	if !reflect.DeepEqual(got, wantDeposits) {
		t.Fatalf("decoded %v, want %v", got, wantDeposits)
	}
}

func TestRegistryReadUpcastsAStream(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		reg := depositRegistry()
		storedDeposits(t, s, reg, "d")
		read, err := reg.Read(context.Background(), s, "d", nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []DepositV3
		for ev, err := range read.Events {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ev.Value.(DepositV3))
		}
		if read.Version != 4 || !reflect.DeepEqual(got, wantDeposits) {
			t.Fatalf("Read: version %d, events %v; want 4, %v", read.Version, got, wantDeposits)
		}
	})
}

func TestRegistryReadFeedAndHandlerUpcastTheFeed(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	reg := depositRegistry()
	storedDeposits(t, s, reg, "d")
	if _, err := estuite.NewDispatcher(s, nil).Step(ctx); err != nil {
		t.Fatal(err)
	}

	page, err := reg.ReadFeed(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []DepositV3
	for i, ev := range page.Events {
		if ev.Position != int64(i+1) {
			t.Fatalf("event %d at position %d", i, ev.Position)
		}
		got = append(got, ev.Value.(DepositV3))
	}
	if page.Next != 4 || !reflect.DeepEqual(got, wantDeposits) {
		t.Fatalf("ReadFeed: next %d, events %v", page.Next, got)
	}

	raw, _ := s.ReadFeed(ctx, nil)
	got = nil
	h := reg.Handler(func(ctx context.Context, ev aggregate.FeedEvent) error {
		got = append(got, ev.Value.(DepositV3))
		return nil
	})
	for _, e := range raw.Events {
		if err := h(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(got, wantDeposits) {
		t.Fatalf("Handler saw %v", got)
	}
}

func TestRegistryReadFeedStopsBeforeAnUnknownEvent(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	reg := depositRegistry()
	storedDeposits(t, s, reg, "d")
	s.Append(ctx, "d", []estuite.EventData{{Type: "Refund", Data: []byte(`{}`)}}, nil)
	storedDeposits(t, s, reg, "d")
	estuite.NewDispatcher(s, nil).Step(ctx)

	page, err := reg.ReadFeed(ctx, s, nil)
	var unknown *aggregate.UnknownEventTypeError
	if !errors.As(err, &unknown) || unknown.Type != "Refund" {
		t.Fatalf("ReadFeed over an unknown event: %v", err)
	}
	if len(page.Events) != 4 || page.Next != 4 {
		t.Fatalf("ReadFeed over an unknown event: %d events, next %d; want 4 and 4", len(page.Events), page.Next)
	}
	// Filtered to what the registry knows, the feed reads through.
	page, err = reg.ReadFeed(ctx, s, &estuite.FeedOptions{Types: []string{"Deposit", "CashIn"}})
	if err != nil || len(page.Events) != 8 || page.Next != 9 {
		t.Fatalf("filtered ReadFeed: %d events, next %d, %v", len(page.Events), page.Next, err)
	}
}

func TestDecodeOfAnUnknownSchemaNamesTypeAndSchema(t *testing.T) {
	reg := depositRegistry()
	for _, tc := range []struct {
		rec    estuite.RecordedEvent
		schema int
	}{
		{estuite.RecordedEvent{Type: "Deposit", Metadata: json.RawMessage(`{"eventSchema":4}`)}, 4}, // newer code wrote it
		{estuite.RecordedEvent{Type: "CashIn", Metadata: json.RawMessage(`{"eventSchema":2}`)}, 2},
		{estuite.RecordedEvent{Type: "Withdrawal"}, 1},
	} {
		_, err := reg.Decode(tc.rec)
		var unknown *aggregate.UnknownEventTypeError
		if !errors.As(err, &unknown) || unknown.Type != tc.rec.Type || unknown.Schema != tc.schema {
			t.Errorf("Decode of %s %s: %v, want an UnknownEventTypeError for schema %d", tc.rec.Type, tc.rec.Metadata, err, tc.schema)
		}
		if err != nil && !strings.Contains(err.Error(), tc.rec.Type) {
			t.Errorf("error %q does not name %s", err, tc.rec.Type)
		}
	}
}

func TestDecodeOfBadDataOrSchemaIsADecodeError(t *testing.T) {
	reg := depositRegistry()
	for _, rec := range []estuite.RecordedEvent{
		{Type: "Deposit", Data: []byte(`{"Cents":"many"}`), Metadata: json.RawMessage(`{"eventSchema":3}`)},
		{Type: "Deposit", Data: []byte(`{}`), Metadata: json.RawMessage(`{"eventSchema":"three"}`)},
		{Type: "Deposit", Data: []byte(`{}`), Metadata: json.RawMessage(`{"eventSchema":0}`)},
	} {
		_, err := reg.Decode(rec)
		var dec *aggregate.DecodeError
		if !errors.As(err, &dec) || errors.Is(err, aggregate.ErrUnknownEventType) {
			t.Errorf("Decode of %s / %s: %v, want a DecodeError", rec.Data, rec.Metadata, err)
		}
	}
	// Empty data (which the store allows) decodes as the zero value.
	ev, err := reg.Decode(estuite.RecordedEvent{Type: "Deposit", Metadata: json.RawMessage(`{"eventSchema":3}`)})
	if err != nil || ev.Value != (DepositV3{}) {
		t.Fatalf("Decode of empty data: %v, %v", ev.Value, err)
	}
}

type loopA struct{ N int }
type loopB struct{ N int }
type orphanFrom struct{ N int }
type orphan struct{ N int }

func TestUpcastersThatGoNowhereAreErrorsNotHangs(t *testing.T) {
	reg := aggregate.NewRegistry(nil)
	aggregate.Upcast(reg, "a", 1, func(e loopA) loopB { return loopB(e) })
	aggregate.Upcast(reg, "b", 1, func(e loopB) loopA { return loopA(e) })
	aggregate.Upcast(reg, "c", 1, func(e orphanFrom) orphan { return orphan(e) })
	if _, err := reg.Decode(estuite.RecordedEvent{Type: "a", Data: []byte(`{}`)}); err == nil || !strings.Contains(err.Error(), "circle") {
		t.Errorf("circular upcasters: %v", err)
	}
	if _, err := reg.Decode(estuite.RecordedEvent{Type: "c", Data: []byte(`{}`)}); err == nil || !strings.Contains(err.Error(), "neither registered nor upcast") {
		t.Errorf("upcaster to an unregistered type: %v", err)
	}
}

func TestRegistrationMistakesPanic(t *testing.T) {
	for name, f := range map[string]func(r *aggregate.Registry){
		"empty name":     func(r *aggregate.Registry) { aggregate.Register[Opened](r, "") },
		"name twice":     func(r *aggregate.Registry) { aggregate.Register[Deposited](r, "AccountOpened") },
		"Go type twice":  func(r *aggregate.Registry) { aggregate.Register[Opened](r, "Opened2") },
		"interface type": func(r *aggregate.Registry) { aggregate.Register[error](r, "Oops") },
		"schema 0":       func(r *aggregate.Registry) { aggregate.RegisterSchema[Deposited](r, "D", 0) },
		"upcaster at current": func(r *aggregate.Registry) {
			aggregate.Upcast(r, "AccountOpened", 1, func(e DepositV1) Opened { return Opened{} })
		},
		"current below upcaster": func(r *aggregate.Registry) { aggregate.Register[Withdrawn](r, "Deposit") },
		"upcaster twice": func(r *aggregate.Registry) {
			aggregate.Upcast(r, "Deposit", 2, func(e DepositV1) Opened { return Opened{} })
		},
		"upcaster From twice": func(r *aggregate.Registry) {
			aggregate.Upcast(r, "Old", 1, func(e DepositV2) Opened { return Opened{} })
		},
		"nil upcaster": func(r *aggregate.Registry) { aggregate.Upcast[DepositV1, Opened](r, "Old", 1, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			reg := aggregate.NewRegistry(nil)
			aggregate.Register[Opened](reg, "AccountOpened")
			aggregate.Upcast(reg, "Deposit", 2, func(e DepositV2) Opened { return Opened{} })
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f(reg)
		})
	}
}

// gobCodec stores events as binary gob encodings: any Codec works.
type gobCodec struct{}

func (gobCodec) Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	err := gob.NewEncoder(&b).Encode(v)
	return b.Bytes(), err
}
func (gobCodec) Unmarshal(data []byte, v any) error {
	return gob.NewDecoder(bytes.NewReader(data)).Decode(v)
}
func (gobCodec) Format() estuite.DataFormat { return estuite.Binary }

func TestACustomCodecEncodesAndDecodesEvents(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	reg := aggregate.NewRegistry(&aggregate.RegistryOptions{Codec: gobCodec{}})
	aggregate.Register[Opened](reg, "AccountOpened")
	aggregate.Register[Deposited](reg, "MoneyDeposited")
	aggregate.Register[Withdrawn](reg, "MoneyWithdrawn")
	repo := newRepo(s, reg, nil)
	a := repo.New("1")
	a.Open("ada")
	a.Deposit(9)
	if _, err := repo.Save(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	read, _ := s.Read(ctx, "account-1", nil)
	for e, err := range read.Events {
		if err != nil || e.Format != estuite.Binary || json.Valid(e.Data) {
			t.Fatalf("event %d stored as %v %q (%v), want gob binary", e.Version, e.Format, e.Data, err)
		}
	}
	got, err := repo.Load(ctx, "1")
	if err != nil || got.State.Owner != "ada" || got.State.Balance != 9 {
		t.Fatalf("Load through gob: %+v, %v", got.State, err)
	}
}

// till folds deposits in their current form only: it sees no old form.
type till struct {
	aggregate.Base
	Cents map[string]int
}

func (t *till) Apply(event any) {
	e := event.(DepositV3) // an old form here would panic
	if t.Cents == nil {
		t.Cents = make(map[string]int)
	}
	t.Cents[e.Currency] += e.Cents
}

func TestLoadUpcastsTheStoredEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		reg := depositRegistry()
		storedDeposits(t, s, reg, "till-1")
		repo := aggregate.NewRepository(s, reg, func() *till { return &till{} }, &aggregate.Options{StreamPrefix: "till-"})
		got, err := repo.Load(context.Background(), "1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Version() != 4 || !reflect.DeepEqual(got.Cents, map[string]int{"EUR": 303, "CHF": 4}) {
			t.Fatalf("Load: version %d, %v", got.Version(), got.Cents)
		}
	})
}
