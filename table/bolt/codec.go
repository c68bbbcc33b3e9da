package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// FormatVersion is the version of the on-disk format this package reads and writes: the first
// byte of every row value and the value of the "format" key of the meta bucket.
//
// # On-disk format, version 1
//
// The file is one bbolt database. It holds these top-level buckets:
//
//   - "_meta": the file's own bookkeeping. Key "format" holds one byte, FormatVersion. Key
//     "etag" holds the ETag counter: an 8-byte big-endian uint64, the number of the last ETag
//     handed out (absent means 0). Table names cannot start with '_', so this bucket cannot
//     clash with a table.
//   - one bucket per table, named by the table name as given to OpenTable.
//
// In a table's bucket, a row's key is its partition key, one 0x00 byte, then its row key (both
// UTF-8). Keys cannot contain control characters, so bbolt's byte order of these keys is
// partition-then-row-key order, and the rows of one partition are the keys that start with
// partitionKey+"\x00".
//
// A row's value is, with uvarint and varint as in encoding/binary (varint being zig-zag):
//
//	value    = version etag count property*
//	version  = byte 0x01
//	etag     = uvarint length, then that many bytes (the ETag string, e.g. W/"42")
//	count    = uvarint, the number of properties
//	property = uvarint name length, name bytes, tag byte, payload
//
// Properties are written sorted by name, each name at most once. Tags and payloads:
//
//	0x01 string    uvarint length, UTF-8 bytes
//	0x02 []byte    uvarint length, bytes
//	0x03 int64     varint
//	0x04 bool      false, no payload
//	0x05 bool      true, no payload
//	0x06 time.Time varint seconds since 1970-01-01T00:00:00Z, then uvarint nanoseconds (< 1e9);
//	               read back in UTC
//
// A value with trailing bytes, an unknown version or tag, or truncated fields is corrupt.
const FormatVersion = 1

// Property tags of the row encoding.
const (
	tagString = 0x01
	tagBinary = 0x02
	tagInt64  = 0x03
	tagFalse  = 0x04
	tagTrue   = 0x05
	tagTime   = 0x06
)

// errCorrupt is wrapped by every decoding error.
var errCorrupt = errors.New("bolt: corrupt row value")

// encodeRow returns the encoding of a row's ETag and properties, times to the nanosecond. It
// fails only on a property of a type the contract does not allow.
func encodeRow(etag string, props map[string]any) ([]byte, error) {
	return encodeRowTimes(etag, props, false)
}

// encodeRowTimes is encodeRow with times truncated to the microsecond when micro is set: what a
// write stores (table.CloneProperties truncates so for the other backends).
func encodeRowTimes(etag string, props map[string]any, micro bool) ([]byte, error) {
	n := 1 + binary.MaxVarintLen64 + len(etag) + binary.MaxVarintLen64
	for name, v := range props {
		n += binary.MaxVarintLen64 + len(name) + 1 + 2*binary.MaxVarintLen64
		switch v := v.(type) {
		case string:
			n += len(v)
		case []byte:
			n += len(v)
		}
	}
	buf := make([]byte, 0, n)
	buf = append(buf, FormatVersion)
	buf = appendString(buf, etag)
	buf = binary.AppendUvarint(buf, uint64(len(props)))
	var nameBuf [16]string // rows have a dozen properties or fewer: no allocation for the names
	names := nameBuf[:0]
	for name := range props {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		buf = appendString(buf, name)
		switch v := props[name].(type) {
		case string:
			buf = append(buf, tagString)
			buf = appendString(buf, v)
		case []byte:
			buf = append(buf, tagBinary)
			buf = binary.AppendUvarint(buf, uint64(len(v)))
			buf = append(buf, v...)
		case int64:
			buf = append(buf, tagInt64)
			buf = binary.AppendVarint(buf, v)
		case bool:
			if v {
				buf = append(buf, tagTrue)
			} else {
				buf = append(buf, tagFalse)
			}
		case time.Time:
			if micro {
				v = v.Truncate(time.Microsecond) // as table.CloneProperties would have
			}
			buf = append(buf, tagTime)
			buf = binary.AppendVarint(buf, v.Unix())
			buf = binary.AppendUvarint(buf, uint64(v.Nanosecond()))
		default:
			return nil, fmt.Errorf("bolt: property %s has the unsupported type %T", name, v)
		}
	}
	return buf, nil
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// decodeRow decodes a row value written by encodeRow. The result shares no memory with data,
// which may be bbolt's memory map.
func decodeRow(data []byte) (etag string, props map[string]any, err error) {
	d := decoder{buf: data}
	if v := d.byte(); d.err == nil && v != FormatVersion {
		return "", nil, fmt.Errorf("%w: unknown format version %d", errCorrupt, v)
	}
	etag = string(d.bytes())
	count := d.uvarint()
	if count > uint64(len(d.buf)) { // every property takes at least two bytes
		d.fail("property count %d exceeds the value", count)
	}
	if d.err != nil {
		return "", nil, d.err
	}
	props = make(map[string]any, count)
	for range count {
		name := string(d.bytes())
		if _, dup := props[name]; dup && d.err == nil {
			d.fail("property %q appears twice", name)
		}
		switch tag := d.byte(); tag {
		case tagString:
			props[name] = string(d.bytes())
		case tagBinary:
			props[name] = append([]byte{}, d.bytes()...)
		case tagInt64:
			props[name] = d.varint()
		case tagFalse:
			props[name] = false
		case tagTrue:
			props[name] = true
		case tagTime:
			sec, nsec := d.varint(), d.uvarint()
			if nsec >= 1e9 {
				d.fail("nanoseconds %d out of range", nsec)
			}
			props[name] = time.Unix(sec, int64(nsec)).UTC()
		default:
			d.fail("unknown property tag %d", tag)
		}
		if d.err != nil {
			return "", nil, d.err
		}
	}
	if len(d.buf) != 0 {
		return "", nil, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.buf))
	}
	return etag, props, nil
}

// decoder reads a row value; the first error sticks and turns later reads into no-ops.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) == 0 {
		d.fail("truncated")
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// bytes reads a uvarint length and that many bytes, returned as a subslice of the input.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.fail("length %d exceeds the value", n)
		return nil
	}
	b := d.buf[:n]
	d.buf = d.buf[n:]
	return b
}
