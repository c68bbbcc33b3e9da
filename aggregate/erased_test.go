package aggregate_test

import (
	"context"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/aggregate"
	"github.com/estuite/estuite/table/mem"
)

type renamedV1 struct{ Name string }
type renamedV2 struct{ FullName string }

// An event whose subject was forgotten has no data and no metadata left: it decodes as the zero
// value of its type's current form, with Erased set — also when its stored name reaches the
// current form only through an upcaster — and an aggregate loads over it.
func TestErasedEventsDecodeAsZeroValues(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil))
	reg := accountRegistry()
	aggregate.RegisterSchema[renamedV2](reg, "PersonRenamed", 2)
	aggregate.Upcast(reg, "PersonNamed", 1, func(v renamedV1) renamedV2 { return renamedV2{FullName: v.Name} })

	opened, err := reg.Encode(Opened{Owner: "Ann"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opened.Subject = "person-1"
	old := estuite.EventData{Type: "PersonNamed", Data: []byte(`{"Name":"Ann"}`), Subject: "person-1"}
	deposit, err := reg.Encode(Deposited{Amount: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "account-1", []estuite.EventData{opened, old, deposit}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "account-2", []estuite.EventData{opened, deposit}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget(ctx, "person-1"); err != nil {
		t.Fatal(err)
	}
	r, err := s.Read(ctx, "account-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []aggregate.Event
	for e, err := range r.Events {
		if err != nil {
			t.Fatal(err)
		}
		ev, err := reg.Decode(e)
		if err != nil {
			t.Fatalf("decoding version %d (erased %v): %v", e.Version, e.Erased, err)
		}
		got = append(got, ev)
	}
	if len(got) != 3 || !got[0].Erased || !got[1].Erased || got[2].Erased {
		t.Fatalf("decoded %d events, erased %v %v %v", len(got), got[0].Erased, got[1].Erased, got[2].Erased)
	}
	if v, ok := got[0].Value.(Opened); !ok || v != (Opened{}) {
		t.Fatalf("erased AccountOpened decoded as %#v", got[0].Value)
	}
	if v, ok := got[1].Value.(renamedV2); !ok || v != (renamedV2{}) || got[1].Type != "PersonRenamed" {
		t.Fatalf("erased PersonNamed decoded as %#v (%s)", got[1].Value, got[1].Type)
	}
	if v, ok := got[2].Value.(Deposited); !ok || v.Amount != 5 {
		t.Fatalf("the deposit decoded as %#v", got[2].Value)
	}
	// An aggregate loads over its erased events.
	repo := newRepo(s, reg, nil)
	a, err := repo.Load(ctx, "2")
	if err != nil || a.Version() != 2 || a.State.Balance != 5 {
		t.Fatalf("Load over an erased event: version %d, state %+v, %v", a.Version(), a.State, err)
	}
}
