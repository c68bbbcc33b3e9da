package table

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// ValidateKey checks a partition or row key: not empty, valid UTF-8, at most MaxKeyChars UTF-16
// code units, and free of '/', '\', '#', '?' and control characters (U+0000–U+001F,
// U+007F–U+009F), which Azure Table Storage forbids in keys.
func ValidateKey(what, key string) error {
	if key == "" {
		return Invalidf("%s is empty", what)
	}
	if !utf8.ValidString(key) {
		return Invalidf("%s is not valid UTF-8", what)
	}
	if n := utf16Len(key); n > MaxKeyChars {
		return Invalidf("%s is %d UTF-16 code units long, more than %d", what, n, MaxKeyChars)
	}
	for _, r := range key {
		if r == '/' || r == '\\' || r == '#' || r == '?' || IsControl(r) {
			return Invalidf("%s %q contains the forbidden character %q", what, key, r)
		}
	}
	return nil
}

// ValidateBound checks a query bound (Query.From or Query.To): valid UTF-8 without control
// characters. Unlike a key, a bound may contain any other character and may be empty.
func ValidateBound(what, bound string) error {
	if !utf8.ValidString(bound) {
		return Invalidf("%s is not valid UTF-8", what)
	}
	for _, r := range bound {
		if IsControl(r) {
			return Invalidf("%s contains the control character %q", what, r)
		}
	}
	return nil
}

// IsControl reports whether r is a control character in Azure's sense: U+0000–U+001F or
// U+007F–U+009F.
func IsControl(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f)
}

// utf16LenValid is utf16Len(s) and utf8.ValidString(s), in one pass.
func utf16LenValid(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			n++
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return 0, false
		}
		n += utf16.RuneLen(r)
		i += size
	}
	return n, true
}

func utf16Len(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			for _, r := range s[i:] {
				n += utf16.RuneLen(r)
			}
			return n
		}
		n++ // an ASCII byte is one UTF-16 unit
	}
	return n
}

// ValidateQuery checks a query's partition key, bounds and limit.
func ValidateQuery(q Query) error {
	if err := ValidateKey("partition key", q.PartitionKey); err != nil {
		return err
	}
	if err := ValidateBound("query lower bound", q.From); err != nil {
		return err
	}
	if err := ValidateBound("query upper bound", q.To); err != nil {
		return err
	}
	if q.Limit < 0 {
		return Invalidf("query limit %d is negative", q.Limit)
	}
	return nil
}

// ValidateScan checks a scan's partition bounds and limit. The bounds are checked like query
// bounds (ValidateBound): they may be empty and may hold characters that keys may not.
func ValidateScan(q ScanQuery) error {
	if err := ValidateBound("scan lower partition bound", q.FromPartition); err != nil {
		return err
	}
	if err := ValidateBound("scan upper partition bound", q.ToPartition); err != nil {
		return err
	}
	if q.Limit < 0 {
		return Invalidf("scan limit %d is negative", q.Limit)
	}
	return nil
}

// PageLimit returns the number of rows a query page may hold: q.Limit capped at MaxPageSize.
func PageLimit(q Query) int {
	return pageLimit(q.Limit)
}

// ScanPageLimit returns the number of rows a scan page may hold: q.Limit capped at MaxPageSize.
func ScanPageLimit(q ScanQuery) int {
	return pageLimit(q.Limit)
}

func pageLimit(limit int) int {
	if limit <= 0 || limit > MaxPageSize {
		return MaxPageSize
	}
	return limit
}

// ValidateBatch checks a batch against every rule of Table.Submit that can be checked without
// reading the table: the op count, one partition, one op per row, valid keys and properties,
// entity and batch sizes. A violation wraps ErrInvalid; when one op is at fault, it is a
// *BatchError with that op's index.
func ValidateBatch(partitionKey string, ops []Op) error {
	if len(ops) == 0 {
		return Invalidf("empty batch")
	}
	if len(ops) > MaxBatchOps {
		return Invalidf("batch has %d operations, more than %d", len(ops), MaxBatchOps)
	}
	if err := ValidateKey("partition key", partitionKey); err != nil {
		return err
	}
	seen := make(map[string]bool, len(ops))
	for i, op := range ops {
		if err := validateOp(partitionKey, op); err != nil {
			return &BatchError{Index: i, Code: "InvalidInput", Err: err}
		}
		if seen[op.Entity.RowKey] {
			return &BatchError{Index: i, Code: "InvalidDuplicateRow",
				Err: Invalidf("row key %q appears twice in one batch", op.Entity.RowKey)}
		}
		seen[op.Entity.RowKey] = true
	}
	if n := BatchSize(ops); n > MaxBatchBytes {
		return Invalidf("batch payload is %d bytes, more than %d", n, MaxBatchBytes)
	}
	return nil
}

func validateOp(partitionKey string, op Op) error {
	if op.Kind < Insert || op.Kind > Delete {
		return Invalidf("unknown operation kind %d", int(op.Kind))
	}
	if op.Entity.PartitionKey != partitionKey {
		return Invalidf("entity partition key %q differs from the batch's %q", op.Entity.PartitionKey, partitionKey)
	}
	if err := ValidateKey("row key", op.Entity.RowKey); err != nil {
		return err
	}
	if op.Kind == Delete {
		return nil
	}
	return ValidateProperties(op.Entity)
}

// ValidateProperties checks an entity's properties: names, count, value types and sizes, and the
// entity's total size.
func ValidateProperties(e Entity) error {
	if len(e.Properties) > MaxProperties {
		return Invalidf("entity has %d properties, more than %d", len(e.Properties), MaxProperties)
	}
	// EntitySize, summed on the way: each string is read once, for its validity and its UTF-16
	// length together.
	size := 4 + 2*(utf16Len(e.PartitionKey)+utf16Len(e.RowKey))
	for name, v := range e.Properties {
		if !validPropertyName(name) {
			return Invalidf("property name %q is not allowed", name)
		}
		size += 8 + 2*len(name)
		switch v := v.(type) {
		case string:
			units, ok := utf16LenValid(v)
			if !ok {
				return Invalidf("property %s is not valid UTF-8", name)
			}
			if n := 2 * units; n > MaxPropertyBytes {
				return Invalidf("property %s is %d bytes as UTF-16, more than %d", name, n, MaxPropertyBytes)
			}
			size += 4 + 2*units
		case []byte:
			if len(v) > MaxPropertyBytes {
				return Invalidf("property %s is %d bytes, more than %d", name, len(v), MaxPropertyBytes)
			}
			size += 4 + len(v)
		case bool:
			size++
		case int64, time.Time:
			size += 8
		default:
			return Invalidf("property %s has the unsupported type %T", name, v)
		}
	}
	if size > MaxEntityBytes {
		return Invalidf("entity is %d bytes, more than %d", size, MaxEntityBytes)
	}
	return nil
}

func validPropertyName(name string) bool {
	if name == "" || len(name) > MaxPropertyNameChars {
		return false
	}
	switch name {
	case "PartitionKey", "RowKey", "Timestamp", "ETag":
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// EntitySize is an entity's size by Azure Table Storage's formula: 4 bytes, plus 2 bytes per
// UTF-16 code unit of the keys, plus for each property 8 bytes, 2 bytes per character of its name
// and its value's size (string: 4 + 2 per UTF-16 code unit; binary: 4 + length; int64 and
// time: 8; bool: 1). It must not exceed MaxEntityBytes.
func EntitySize(e Entity) int {
	n := 4 + 2*(utf16Len(e.PartitionKey)+utf16Len(e.RowKey))
	for name, v := range e.Properties {
		n += 8 + 2*len(name) + valueSize(v)
	}
	return n
}

func valueSize(v any) int {
	switch v := v.(type) {
	case string:
		return 4 + 2*utf16Len(v)
	case []byte:
		return 4 + len(v)
	case bool:
		return 1
	default:
		return 8
	}
}

// BatchOpOverhead is what BatchSize counts for one operation besides its entity's JSON: the
// multipart headers and request line of an entity group transaction, with room to spare.
const BatchOpOverhead = 1024

// BatchSize is the size of a batch as the contract measures it: for each op BatchOpOverhead,
// three bytes per byte of its keys (they may appear percent-encoded in the request URL) and the
// length of the entity's JSON as EncodeJSON writes it (deletes: their keys only). It bounds the
// payload of the entity group transaction that Azure limits to 4 MiB.
func BatchSize(ops []Op) int {
	n := 0
	for _, op := range ops {
		n += BatchOpOverhead + 3*(len(op.Entity.PartitionKey)+len(op.Entity.RowKey))
		if op.Kind != Delete {
			n += JSONSize(op.Entity)
		}
	}
	return n
}

// JSONSize is len(EncodeJSON(e)), computed without building the encoding.
func JSONSize(e Entity) int {
	n := len(`{"PartitionKey":,"RowKey":}`) + jsonStringLen(e.PartitionKey) + jsonStringLen(e.RowKey)
	for name, v := range e.Properties {
		nameLen := jsonStringLen(name)
		n += 1 + nameLen + 1 // ,"name":
		switch v := v.(type) {
		case string:
			n += jsonStringLen(v)
		case []byte:
			n += 2 + base64.StdEncoding.EncodedLen(len(v)) + odataTypeLen(nameLen, "Edm.Binary")
		case int64:
			n += 2 + int64Len(v) + odataTypeLen(nameLen, "Edm.Int64")
		case bool:
			n += len("false")
			if v {
				n -= 1
			}
		case time.Time:
			n += 2 + timeLen(v) + odataTypeLen(nameLen, "Edm.DateTime")
		}
	}
	return n
}

// odataTypeLen is the length of `,"name@odata.type":"typ"`, given the length of name as a JSON
// string (quotes included): "@odata.type" and the type names hold nothing to escape.
func odataTypeLen(nameLen int, typ string) int {
	return 1 + nameLen + len("@odata.type") + 1 + 2 + len(typ)
}

// int64Len is len(strconv.FormatInt(v, 10)), without the string.
func int64Len(v int64) int {
	n := 1
	u := uint64(v)
	if v < 0 {
		n++
		u = uint64(-v) // -MinInt64 wraps to itself, which is right as a uint64
	}
	for u >= 10 {
		u /= 10
		n++
	}
	return n
}

// timeLen is len(formatTime(t)): TimeLayout's length for years 0 to 9999, where the layout is
// fixed-width.
func timeLen(t time.Time) int {
	if y := t.UTC().Year(); y >= 0 && y <= 9999 {
		return len(TimeLayout)
	}
	return len(formatTime(t))
}

// jsonExtra is, for each ASCII byte, how many bytes writeJSONString writes for it beyond one.
var jsonExtra = func() (t [utf8.RuneSelf]uint8) {
	for c := range utf8.RuneSelf {
		switch {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			t[c] = 1
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			t[c] = uint8(len(`\u0000`) - 1)
		}
	}
	return t
}()

// jsonStringLen is the length of s as writeJSONString writes it.
func jsonStringLen(s string) int {
	n := 2 + len(s)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			n += int(jsonExtra[c])
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			n += len(`\ufffd`) - size
		}
		i += size
	}
	return n
}

// TimeLayout is how times are written in Azure's JSON: UTC with seven fractional digits.
const TimeLayout = "2006-01-02T15:04:05.0000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// EncodeJSON writes an entity in the JSON form Azure Table Storage accepts (OData minimal
// metadata): keys and properties as members, with "name@odata.type" annotations for binary,
// Int64 and DateTime values.
func EncodeJSON(e Entity) []byte {
	var buf bytes.Buffer
	buf.Grow(JSONSize(e))
	buf.WriteString(`{"PartitionKey":`)
	writeJSONString(&buf, e.PartitionKey)
	buf.WriteString(`,"RowKey":`)
	writeJSONString(&buf, e.RowKey)
	for name, v := range e.Properties {
		buf.WriteByte(',')
		writeJSONString(&buf, name)
		buf.WriteByte(':')
		typ := ""
		switch v := v.(type) {
		case string:
			writeJSONString(&buf, v)
		case []byte:
			buf.WriteByte('"')
			buf.WriteString(base64.StdEncoding.EncodeToString(v))
			buf.WriteByte('"')
			typ = "Edm.Binary"
		case int64:
			buf.WriteByte('"')
			buf.WriteString(strconv.FormatInt(v, 10))
			buf.WriteByte('"')
			typ = "Edm.Int64"
		case bool:
			buf.WriteString(strconv.FormatBool(v))
		case time.Time:
			buf.WriteByte('"')
			buf.WriteString(formatTime(v))
			buf.WriteByte('"')
			typ = "Edm.DateTime"
		}
		if typ != "" {
			buf.WriteByte(',')
			writeJSONString(&buf, name+"@odata.type")
			buf.WriteByte(':')
			writeJSONString(&buf, typ)
		}
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

// writeJSONString writes s as a JSON string, escaped exactly as encoding/json escapes it (with
// HTML escaping, as the Azure SDK re-encodes every entity that way), so that JSONSize also
// measures what the SDK sends.
func writeJSONString(buf *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	buf.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				buf.WriteString(`\ufffd`)
			case r == '\u2028':
				buf.WriteString(`\u2028`)
			case r == '\u2029':
				buf.WriteString(`\u2029`)
			default:
				buf.WriteString(s[i : i+size])
			}
			i += size
			continue
		}
		switch c {
		case '"', '\\':
			buf.WriteByte('\\')
			buf.WriteByte(c)
		case '\n':
			buf.WriteString(`\n`)
		case '\r':
			buf.WriteString(`\r`)
		case '\t':
			buf.WriteString(`\t`)
		default:
			if c < 0x20 || c == '<' || c == '>' || c == '&' {
				buf.WriteString(`\u00`)
				buf.WriteByte(hex[c>>4])
				buf.WriteByte(hex[c&0xf])
			} else {
				buf.WriteByte(c)
			}
		}
		i++
	}
	buf.WriteByte('"')
}
