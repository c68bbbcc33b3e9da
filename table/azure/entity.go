package azure

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/estuite/estuite/table"
)

// decodeEntity reads an entity in Azure's JSON form (minimal metadata): keys, properties with
// their "name@odata.type" annotations, and "odata.*" members, of which only odata.etag is used
// (when etag is empty). Timestamp is dropped.
func decodeEntity(data []byte, etag string) (table.Entity, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return table.Entity{}, fmt.Errorf("azure: decoding entity: %w", err)
	}
	e := table.Entity{ETag: etag, Properties: make(map[string]any, len(raw))}
	e.PartitionKey, _ = raw["PartitionKey"].(string)
	e.RowKey, _ = raw["RowKey"].(string)
	if e.ETag == "" {
		e.ETag, _ = raw["odata.etag"].(string)
	}
	for name, v := range raw {
		switch {
		case name == "PartitionKey", name == "RowKey", name == "Timestamp",
			strings.HasPrefix(name, "odata."), strings.Contains(name, "@odata."), v == nil:
			continue
		}
		typ, _ := raw[name+"@odata.type"].(string)
		value, err := decodeValue(v, typ)
		if err != nil {
			return table.Entity{}, fmt.Errorf("%w: azure: property %s of row %q/%q: %v",
				table.ErrInvalid, name, e.PartitionKey, e.RowKey, err)
		}
		e.Properties[name] = value
	}
	return e, nil
}

// decodeValue converts one JSON property value, given its OData type annotation ("" when the
// JSON type speaks for itself), to a contract value.
func decodeValue(v any, typ string) (any, error) {
	switch typ {
	case "Edm.Int64":
		s, _ := v.(string)
		return strconv.ParseInt(s, 10, 64)
	case "Edm.Binary":
		s, _ := v.(string)
		return base64.StdEncoding.DecodeString(s)
	case "Edm.DateTime":
		s, _ := v.(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		return t.UTC(), err
	case "Edm.Guid", "Edm.String":
		if s, ok := v.(string); ok {
			return s, nil
		}
	case "Edm.Double", "Edm.Int32", "":
		switch v := v.(type) {
		case string: // a plain string, or a Double written as "NaN", "Infinity", "-Infinity"
			if typ == "" {
				return v, nil
			}
		case bool:
			if typ == "" {
				return v, nil
			}
		case json.Number:
			return integral(v)
		}
	}
	return nil, fmt.Errorf("unsupported value %v of type %q", v, typ)
}

// integral returns n as int64 if it is a whole number that int64 holds exactly.
func integral(n json.Number) (int64, error) {
	if i, err := n.Int64(); err == nil {
		return i, nil
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, fmt.Errorf("the number %s is not an integer that int64 holds (the contract has no floating point)", n)
	}
	return int64(f), nil
}
