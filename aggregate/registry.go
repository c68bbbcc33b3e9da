package aggregate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"

	"github.com/estuite/estuite"
)

// SchemaKey is the metadata key under which an event records its schema version: an integer
// from 2 on, as in {"eventSchema":3}. An event without it has schema 1, so events written before
// their type had a second schema (or by code that knows nothing of schemas) need no rewrite. The
// type name stays the same across schemas: feed filters by type keep working as a type evolves.
const SchemaKey = "eventSchema"

// A Registry maps event type names to Go types and back, encodes and decodes events with its
// codec, and upcasts old forms of events to the current ones.
//
// Each type name has one current form: a Go type at a schema version (Register,
// RegisterSchema). Saving an event of that Go type stores the name, the codec's encoding and the
// schema. Older forms — an older schema, or a name no longer used — are upcast (Upcast): decoded
// into the Go type they had and turned, step by step, into the current form, on every read path
// (Repository.Load, Registry.Read, Registry.ReadFeed, Registry.Handler, Registry.Decode).
//
// Register event types before use, typically at start-up. A Registry is safe for concurrent
// use.
type Registry struct {
	codec Codec

	mu        sync.RWMutex
	current   map[string]*currentForm // by type name
	byGoType  map[reflect.Type]*currentForm
	upcasters map[form]*upcaster
	fromTypes map[reflect.Type]*upcaster // by the Go type an upcaster takes
}

// form is an event type name at a schema version.
type form struct {
	name   string
	schema int
}

type currentForm struct {
	form
	goType reflect.Type
	decode func(Codec, []byte) (any, error)
}

type upcaster struct {
	form
	from   reflect.Type
	decode func(Codec, []byte) (any, error)
	apply  func(any) any
}

// RegistryOptions configure a Registry. nil means defaults.
type RegistryOptions struct {
	// Codec encodes and decodes events and snapshot states. Default JSON.
	Codec Codec
}

// NewRegistry returns an empty registry. opts may be nil.
func NewRegistry(opts *RegistryOptions) *Registry {
	var o RegistryOptions
	if opts != nil {
		o = *opts
	}
	if o.Codec == nil {
		o.Codec = JSON
	}
	return &Registry{
		codec:     o.Codec,
		current:   make(map[string]*currentForm),
		byGoType:  make(map[reflect.Type]*currentForm),
		upcasters: make(map[form]*upcaster),
		fromTypes: make(map[reflect.Type]*upcaster),
	}
}

// Codec returns the registry's codec.
func (r *Registry) Codec() Codec { return r.codec }

// Register makes Go type E the current form of the events named name, at schema 1. Events are
// decoded as values of E (register a pointer type to get pointers).
//
// Register panics when name is empty, when name or E is already registered, or when E is an
// interface type: these are programming errors, found at start-up.
func Register[E any](r *Registry, name string) { RegisterSchema[E](r, name, 1) }

// RegisterSchema makes Go type E the current form of the events named name, at schema version
// schema (1 or more). Events saved from E record the schema in their metadata (see SchemaKey);
// stored events of older schemas need an upcaster each (Upcast). It panics as Register does, and
// when schema is below 1 or an upcaster of name is registered for schema or later.
func RegisterSchema[E any](r *Registry, name string, schema int) {
	t := reflect.TypeFor[E]()
	checkForm("RegisterSchema", name, schema, t)
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.current[name]; ok {
		panic(fmt.Sprintf("aggregate: event type %q is already registered (Go type %v)", name, c.goType))
	}
	if c, ok := r.byGoType[t]; ok {
		panic(fmt.Sprintf("aggregate: Go type %v is already registered as event type %q", t, c.name))
	}
	for f := range r.upcasters {
		if f.name == name && f.schema >= schema {
			panic(fmt.Sprintf("aggregate: event type %q has an upcaster for schema %d, so its current schema must be later than %d", name, f.schema, schema))
		}
	}
	c := &currentForm{form: form{name, schema}, goType: t, decode: decodeAs[E]}
	r.current[name] = c
	r.byGoType[t] = c
}

// Upcast registers f to turn events stored as name at schema (1 for events recording none) into
// a newer form. They are decoded with the codec into a From, and f's result is either the
// current form of some type name (a Go type given to Register or RegisterSchema) or the From of
// another upcaster, which runs next: a v1 → v2 → v3 chain is two upcasters, func(V1) V2 and
// func(V2) V3, with V3 registered. An upcaster may change the name too (return the current
// type of another name).
//
// f must not fail: an event that was stored is a fact. Upcast panics when name is empty,
// schema is below 1, f is nil, From is an interface type, an upcaster for name and schema or one
// taking From exists, or name's current form is registered at schema or earlier.
func Upcast[From, To any](r *Registry, name string, schema int, f func(From) To) {
	t := reflect.TypeFor[From]()
	checkForm("Upcast", name, schema, t)
	if f == nil {
		panic("aggregate: Upcast with a nil function")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := form{name, schema}
	if _, ok := r.upcasters[k]; ok {
		panic(fmt.Sprintf("aggregate: event type %q, schema %d, already has an upcaster", name, schema))
	}
	if u, ok := r.fromTypes[t]; ok {
		panic(fmt.Sprintf("aggregate: Go type %v is already upcast from event type %q, schema %d", t, u.name, u.schema))
	}
	if c, ok := r.current[name]; ok && c.schema <= schema {
		panic(fmt.Sprintf("aggregate: event type %q is current at schema %d: an upcaster for schema %d would never run", name, c.schema, schema))
	}
	u := &upcaster{form: k, from: t, decode: decodeAs[From], apply: func(v any) any { return f(v.(From)) }}
	r.upcasters[k] = u
	r.fromTypes[t] = u
}

func checkForm(fn, name string, schema int, t reflect.Type) {
	switch {
	case name == "":
		panic(fmt.Sprintf("aggregate: %s with an empty event type name", fn))
	case schema < 1:
		panic(fmt.Sprintf("aggregate: %s of %q with schema %d: schemas start at 1", fn, name, schema))
	case t.Kind() == reflect.Interface:
		panic(fmt.Sprintf("aggregate: %s of %q with interface type %v: events decode into concrete types", fn, name, t))
	}
}

// decodeAs decodes data into an E. Empty data (which the store allows) is E's zero value.
func decodeAs[E any](c Codec, data []byte) (any, error) {
	var v E
	if len(data) > 0 {
		if err := c.Unmarshal(data, &v); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// PersonalData is implemented by an event that holds personal data of a data subject:
// Encode sets its estuite.EventData.Subject to DataSubject(), so that the store seals the event
// under the subject's key and Store.Forget erases it (see estuite.EventData.Subject; an empty
// result names no subject). A Repository also names the subjects of the events a snapshot's
// state was folded from on the snapshot (see SnapshotPolicy).
//
//	func (e Registered) DataSubject() string { return e.UserID }
type PersonalData interface {
	DataSubject() string
}

// Encode turns an event value into the event data to append: its registered type name, its
// encoding by the codec, and metadata — the given metadata (empty or a JSON object) with the
// event's schema recorded under SchemaKey when it is 2 or more — and, for a PersonalData event,
// its subject. An event whose Go type is not the current form of a type name is an
// *UnregisteredTypeError.
func (r *Registry) Encode(event any, metadata json.RawMessage) (estuite.EventData, error) {
	r.mu.RLock()
	c, ok := r.byGoType[reflect.TypeOf(event)]
	r.mu.RUnlock()
	if !ok {
		return estuite.EventData{}, &UnregisteredTypeError{GoType: reflect.TypeOf(event)}
	}
	data, err := r.codec.Marshal(event)
	if err != nil {
		return estuite.EventData{}, fmt.Errorf("aggregate: encoding %q: %w", c.name, err)
	}
	meta, err := withSchema(metadata, c.schema)
	if err != nil {
		return estuite.EventData{}, err
	}
	d := estuite.EventData{Type: c.name, Data: data, Format: r.codec.Format(), Metadata: meta}
	if p, ok := event.(PersonalData); ok {
		d.Subject = p.DataSubject()
	}
	return d, nil
}

var schemaKeyJSON = []byte(`"` + SchemaKey + `"`)

// withSchema returns metadata recording schema: unchanged for schema 1 when metadata does not
// mention SchemaKey, otherwise with the key set (or removed, for schema 1).
func withSchema(metadata json.RawMessage, schema int) (json.RawMessage, error) {
	if schema == 1 && !bytes.Contains(metadata, schemaKeyJSON) {
		return metadata, nil
	}
	m := make(map[string]json.RawMessage)
	if len(metadata) > 0 {
		if err := json.Unmarshal(metadata, &m); err != nil || m == nil {
			return nil, fmt.Errorf("aggregate: metadata must be a JSON object: %s", metadata)
		}
	}
	if schema == 1 {
		delete(m, SchemaKey)
		if len(m) == 0 {
			return nil, nil
		}
	} else {
		m[SchemaKey] = json.RawMessage(fmt.Sprint(schema))
	}
	return json.Marshal(m)
}

// schemaOf returns the schema an event's metadata records: 1 when it records none.
func schemaOf(metadata json.RawMessage) (int, error) {
	if !bytes.Contains(metadata, schemaKeyJSON) {
		return 1, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(metadata, &m); err != nil {
		return 0, fmt.Errorf("reading metadata: %w", err)
	}
	raw, ok := m[SchemaKey]
	if !ok {
		return 1, nil
	}
	var schema int
	if err := json.Unmarshal(raw, &schema); err != nil || schema < 1 {
		return 0, fmt.Errorf("metadata %s is %s, not a schema version (an integer from 1)", SchemaKey, raw)
	}
	return schema, nil
}

// Event is a stored event decoded through a registry.
type Event struct {
	// Value is the event in its current form: a value of the Go type registered for Type.
	Value any
	// Type and Schema name Value's current form. When the event was upcast they differ from
	// what is stored (Recorded.Type, and the schema in Recorded.Metadata).
	Type   string
	Schema int
	// Recorded is the event as the store returned it.
	Recorded estuite.RecordedEvent
	// Erased is true for an event whose subject was forgotten (estuite.Store.Forget): Value is
	// then the zero value of the current form (a new zero value for a pointer type), which an
	// aggregate's Apply should treat as "something happened here whose details are erased".
	Erased bool
}

// Decode decodes a stored event (a FeedEvent's RecordedEvent too) into its current form,
// upcasting it as registered. An unknown type name or schema is a *DecodeError wrapping an
// *UnknownEventTypeError (errors.As finds either); a codec failure is a *DecodeError too.
func (r *Registry) Decode(e estuite.RecordedEvent) (Event, error) {
	if e.Erased {
		// Its subject was forgotten: no data and no metadata (so no schema) are left. It
		// decodes as the zero value of its type's current form (upcast from the oldest form its
		// name has, when the name is no longer current), with Erased set.
		v, f, err := r.erased(e.Type)
		if err != nil {
			return Event{}, &DecodeError{Stream: e.Stream, Version: e.Version, Type: e.Type, Schema: 0, Err: err}
		}
		return Event{Value: v, Type: f.name, Schema: f.schema, Recorded: e, Erased: true}, nil
	}
	schema, err := schemaOf(e.Metadata)
	if err != nil {
		return Event{}, &DecodeError{Stream: e.Stream, Version: e.Version, Type: e.Type, Schema: 0, Err: err}
	}
	v, f, err := r.decode(form{e.Type, schema}, e.Data)
	if err != nil {
		return Event{}, &DecodeError{Stream: e.Stream, Version: e.Version, Type: e.Type, Schema: schema, Err: err}
	}
	return Event{Value: v, Type: f.name, Schema: f.schema, Recorded: e}, nil
}

// erased returns the value an erased event of type name decodes to: the zero value of its
// current form, or of the oldest form the name has, upcast.
func (r *Registry) erased(name string) (any, form, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if c, ok := r.current[name]; ok {
		return zeroOf(c.goType), c.form, nil
	}
	var u *upcaster
	for f, x := range r.upcasters {
		if f.name == name && (u == nil || f.schema < u.schema) {
			u = x
		}
	}
	if u == nil {
		return nil, form{name, 0}, &UnknownEventTypeError{Type: name, Schema: 0}
	}
	return r.upcastLocked(u, zeroOf(u.from))
}

// zeroOf is the zero value of t, or a pointer to a new zero value when t is a pointer type.
func zeroOf(t reflect.Type) any {
	if t.Kind() == reflect.Pointer {
		return reflect.New(t.Elem()).Interface()
	}
	return reflect.Zero(t).Interface()
}

// decode decodes data stored as form f and upcasts it to a current form.
func (r *Registry) decode(f form, data []byte) (any, form, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if c, ok := r.current[f.name]; ok && c.schema == f.schema {
		v, err := c.decode(r.codec, data)
		return v, f, err
	}
	u, ok := r.upcasters[f]
	if !ok {
		return nil, f, &UnknownEventTypeError{Type: f.name, Schema: f.schema}
	}
	v, err := u.decode(r.codec, data)
	if err != nil {
		return nil, f, err
	}
	return r.upcastLocked(u, v)
}

// upcastLocked runs upcaster u on v, then the upcasters after it, up to a current form. The
// caller holds r.mu.
func (r *Registry) upcastLocked(u *upcaster, v any) (any, form, error) {
	f := u.form
	// Every step runs a different upcaster (each takes its own Go type), so a chain is at most as
	// long as there are upcasters; a longer one has come back to where it was.
	for range len(r.upcasters) {
		v = u.apply(v)
		t := reflect.TypeOf(v)
		if c, ok := r.byGoType[t]; ok {
			return v, c.form, nil
		}
		next, ok := r.fromTypes[t]
		if !ok {
			return nil, f, fmt.Errorf("the upcaster of %q, schema %d, returns a %v, which is neither registered nor upcast", u.name, u.schema, t)
		}
		u = next
	}
	return nil, f, fmt.Errorf("the upcasters from %q, schema %d, go round in a circle", f.name, f.schema)
}
