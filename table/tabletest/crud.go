package tabletest

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite/table"
)

// invalidKeys are partition and row keys that the contract rejects.
func invalidKeys() map[string]string {
	return map[string]string{
		"empty":              "",
		"slash":              "a/b",
		"backslash":          `a\b`,
		"hash":               "a#b",
		"question mark":      "a?b",
		"NUL":                "a\x00b",
		"tab":                "a\tb",
		"newline":            "a\nb",
		"DEL":                "a\x7fb",
		"C1 control U+0085":  "a\u0085b",
		"C1 control U+009F":  "a\u009fb",
		"513 ASCII chars":    strings.Repeat("k", table.MaxKeyChars+1),
		"513 UTF-16 units":   strings.Repeat("k", table.MaxKeyChars-1) + "😀", // 512 runes, 513 UTF-16 units
		"invalid UTF-8":      "a\xffb",
		"only a control (1)": "\x01",
	}
}

// specialKeys are valid keys with characters that need escaping in URLs, OData filters or JSON.
func specialKeys() []string {
	return []string{
		"it's", "''", "100%", "%", "a%2Fb", "%41", "with space", " lead", "tilde~", "~",
		"a+b", "a&b=c", "semi;colon", "comma,", "quote\"d", "<tag>", "(paren)", "*", "dot.ted",
		":colon", "@at", "$dollar", "[x]{y}", "^|`!", "ümlaut-日本語", "ключ", "emoji😀",
		"A", "a",
	}
}

func (s *suite) testGetMissing(t *testing.T) {
	tbl := s.table(t)
	wantMissing(t, tbl, "p", "r") // empty table
	submit(t, tbl, "p", insertOp("p", "a", props("V", "a")))
	wantMissing(t, tbl, "p", "b")  // another row of an existing partition
	wantMissing(t, tbl, "p", "A")  // keys are case sensitive
	wantMissing(t, tbl, "p", "a ") // and exact
	wantMissing(t, tbl, "q", "a")  // the same row key in another partition
	wantMissing(t, tbl, "pp", "a") // a partition whose key extends the existing one
	get(t, tbl, "p", "a")
}

func (s *suite) testGetInvalidKeys(t *testing.T) {
	tbl := s.table(t)
	for name, key := range invalidKeys() {
		_, err := tbl.Get(t.Context(), key, "r")
		wantIs(t, err, table.ErrInvalid, "Get with partition key "+name)
		_, err = tbl.Get(t.Context(), "p", key)
		wantIs(t, err, table.ErrInvalid, "Get with row key "+name)
	}
}

func (s *suite) testRoundTrip(t *testing.T) {
	tbl := s.table(t)
	ist := time.FixedZone("UTC+05:30", 5*3600+1800)
	p := props(
		"Str", "plain",
		"StrUnicode", "héllo wörld — 日本語 ключ 😀",
		"StrQuotes", `it's "quoted" \ back\slash '' ""`,
		"StrEmpty", "",
		"StrMarkup", "<a href='x'>&amp;</a> %41 %2F + = ? # /",
		"StrWhitespace", " \t line1\nline2\r\n ",
		"StrNumeric", "12345",
		"StrDate", "2024-01-01T00:00:00Z",
		"Bin", []byte{0, 1, 2, 0x7f, 0x80, 0xfe, 0xff},
		"BinEmpty", []byte{},
		"BinText", []byte("not base64 ?"),
		"IntZero", int64(0),
		"IntOne", int64(1),
		"IntNeg", int64(-1),
		"IntMax", int64(math.MaxInt64),
		"IntMin", int64(math.MinInt64),
		"IntBeyondInt32", int64(1)<<40+7,
		"True", true,
		"False", false,
		"Time", time.Date(2024, 2, 29, 13, 14, 15, 123456000, ist),
		"TimeUTC", time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		"TimeEpoch", time.Unix(0, 0),
		"TimeWhole", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		"_underscore1", "u",
	)
	etags := submit(t, tbl, "p", insertOp("p", "r", p))
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", etags[0], p)
	rows := s.rows(t, tbl, "p")
	if len(rows) != 1 {
		t.Fatalf("query returned %d rows, want 1", len(rows))
	}
	wantEntity(t, rows[0], "p", "r", etags[0], p)
}

func (s *suite) testMaxSizes(t *testing.T) {
	tbl := s.table(t)
	bin := make([]byte, table.MaxPropertyBytes)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	p := props(
		"StrASCII", strings.Repeat("x", table.MaxPropertyBytes/2),
		"StrBMP", strings.Repeat("é", table.MaxPropertyBytes/2),
		"StrSurrogates", strings.Repeat("😀", table.MaxPropertyBytes/4),
		"Bin", bin,
	)
	etags := submit(t, tbl, "p", insertOp("p", "r", p))
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", etags[0], p)
	rows := s.rows(t, tbl, "p")
	if len(rows) != 1 {
		t.Fatalf("query returned %d rows, want 1", len(rows))
	}
	wantEntity(t, rows[0], "p", "r", etags[0], p)
}

func (s *suite) testTimePrecision(t *testing.T) {
	tbl := s.table(t)
	want := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("UTC-7", -7*3600))
	submit(t, tbl, "p", insertOp("p", "r", props("T", want)))
	got, ok := get(t, tbl, "p", "r").Properties["T"].(time.Time)
	if !ok {
		t.Fatalf("property T is not a time.Time")
	}
	if got.Location() != time.UTC {
		t.Errorf("time returned in location %q, want UTC", got.Location())
	}
	if d := got.Sub(want); d <= -time.Microsecond || d >= time.Microsecond {
		t.Errorf("time %s returned as %s: off by %v, want under a microsecond", want.UTC().Format(time.RFC3339Nano), got.Format(time.RFC3339Nano), d)
	}
}

func (s *suite) testNoAliasing(t *testing.T) {
	tbl := s.table(t)
	b := []byte{1, 2, 3}
	p := props("B", b, "S", "s")
	want := props("B", []byte{1, 2, 3}, "S", "s")
	submit(t, tbl, "p", insertOp("p", "r", p))
	b[0] = 9
	p["S"] = "changed"
	p["New"] = "new"
	e := get(t, tbl, "p", "r")
	wantEntity(t, e, "p", "r", "", want)
	if got, ok := e.Properties["B"].([]byte); ok && len(got) > 0 {
		got[0] = 8
	}
	e.Properties["S"] = "mutated"
	rows := s.rows(t, tbl, "p")
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e.ETag, want)
	if len(rows) == 1 {
		if got, ok := rows[0].Properties["B"].([]byte); ok && len(got) > 0 {
			got[0] = 7
		}
	}
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e.ETag, want)
}

func (s *suite) testMaxPropertyCount(t *testing.T) {
	tbl := s.table(t)
	p := make(map[string]any)
	for i := range table.MaxProperties {
		p[fmt.Sprintf("P%03d", i)] = int64(i)
	}
	etags := submit(t, tbl, "p", insertOp("p", "max", p))
	wantEntity(t, get(t, tbl, "p", "max"), "p", "max", etags[0], p)

	over := props("Extra", int64(-1))
	for k, v := range p {
		over[k] = v
	}
	err := submitFails(t, tbl, "p", insertOp("p", "over", over))
	wantIs(t, err, table.ErrInvalid, "insert with one property too many")
	wantMissing(t, tbl, "p", "over")
}

// sizedEntity returns an entity of partition p, row r, whose table.EntitySize is size or size-1,
// made of string properties at most MaxPropertyBytes each (their JSON stays small, so that
// Azurite, which limits an entity's JSON to 1 MiB, accepts it).
func sizedEntity(t *testing.T, rk string, size int) table.Entity {
	t.Helper()
	e := entity("p", rk, map[string]any{})
	for i := 0; ; i++ {
		name := "S" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		full := strings.Repeat("x", table.MaxPropertyBytes/2)
		e.Properties[name] = full
		if n := table.EntitySize(e); n <= size {
			continue
		}
		delete(e.Properties, name)
		rest := size - table.EntitySize(e) - (8 + 2*len(name) + 4)
		if rest < 0 {
			t.Fatalf("cannot build an entity of %d bytes", size)
		}
		e.Properties[name] = strings.Repeat("x", rest/2)
		if n := table.EntitySize(e); n != size && n != size-1 {
			t.Fatalf("built an entity of %d bytes, want %d", n, size)
		}
		return e
	}
}

func (s *suite) testEntityMaxSize(t *testing.T) {
	tbl := s.table(t)
	e := sizedEntity(t, "max", table.MaxEntityBytes)
	etags := submit(t, tbl, "p", table.Op{Kind: table.Insert, Entity: e})
	wantEntity(t, get(t, tbl, "p", "max"), "p", "max", etags[0], e.Properties)
}

func (s *suite) testEntityTooLarge(t *testing.T) {
	tbl := s.table(t)
	e := sizedEntity(t, "over", table.MaxEntityBytes+2)
	if n := table.EntitySize(e); n <= table.MaxEntityBytes {
		t.Fatalf("built an entity of %d bytes, want more than %d", n, table.MaxEntityBytes)
	}
	err := submitFails(t, tbl, "p", insertOp("p", "small", props("A", "a")), table.Op{Kind: table.Insert, Entity: e})
	wantIs(t, err, table.ErrInvalid, "insert of an entity over MaxEntityBytes")
	err = submitFails(t, tbl, "p", table.Op{Kind: table.Upsert, Entity: e})
	wantIs(t, err, table.ErrInvalid, "upsert of an entity over MaxEntityBytes")
	// Seventeen binary properties of 64 KiB: far over the limit.
	big := map[string]any{}
	for i := range 17 {
		big[fmt.Sprintf("B%02d", i)] = make([]byte, table.MaxPropertyBytes)
	}
	err = submitFails(t, tbl, "p", insertOp("p", "big", big))
	wantIs(t, err, table.ErrInvalid, "insert of 17 binary properties of 64 KiB")
	s.wantEmpty(t, tbl, "p")
}

func (s *suite) testPropertyTooLarge(t *testing.T) {
	tbl := s.table(t)
	cases := map[string]any{
		"binary of 64 KiB + 1":                make([]byte, table.MaxPropertyBytes+1),
		"ASCII string of 32 Ki + 1 chars":     strings.Repeat("x", table.MaxPropertyBytes/2+1),
		"BMP string of 32 Ki + 1 chars":       strings.Repeat("é", table.MaxPropertyBytes/2+1),
		"string of 16 Ki + 1 surrogate pairs": strings.Repeat("😀", table.MaxPropertyBytes/4+1),
	}
	submit(t, tbl, "p", insertOp("p", "exists", props("A", "a")))
	before := s.rows(t, tbl, "p")
	for name, v := range cases {
		err := submitFails(t, tbl, "p", insertOp("p", "r", props("Big", v)))
		wantIs(t, err, table.ErrInvalid, "insert with a "+name)
		err = submitFails(t, tbl, "p", mergeOp("p", "exists", "*", props("Big", v)))
		wantIs(t, err, table.ErrInvalid, "merge with a "+name)
	}
	sameRows(t, before, s.rows(t, tbl, "p"))
}

func (s *suite) testUnsupportedTypes(t *testing.T) {
	tbl := s.table(t)
	str := "s"
	cases := map[string]any{
		"int":           1,
		"int32":         int32(1),
		"uint64":        uint64(1),
		"float64":       1.5,
		"float32":       float32(1.5),
		"nil":           nil,
		"time.Duration": time.Second,
		"*string":       &str,
		"*time.Time":    &time.Time{},
		"[]string":      []string{"a"},
		"map":           map[string]any{"a": "b"},
		"struct":        struct{}{},
	}
	submit(t, tbl, "p", insertOp("p", "exists", props("A", "a")))
	before := s.rows(t, tbl, "p")
	for name, v := range cases {
		err := submitFails(t, tbl, "p", insertOp("p", "r", props("Good", "g", "Bad", v)))
		wantIs(t, err, table.ErrInvalid, "insert with a property of type "+name)
		err = submitFails(t, tbl, "p", upsertOp("p", "exists", props("Bad", v)))
		wantIs(t, err, table.ErrInvalid, "upsert with a property of type "+name)
		err = submitFails(t, tbl, "p", mergeOp("p", "exists", "*", props("Bad", v)))
		wantIs(t, err, table.ErrInvalid, "merge with a property of type "+name)
	}
	sameRows(t, before, s.rows(t, tbl, "p"))
}

func (s *suite) testBadPropertyNames(t *testing.T) {
	tbl := s.table(t)
	bad := []string{"", "1abc", "a-b", "a b", "a.b", "é", "a$", "PartitionKey", "RowKey", "Timestamp", "ETag",
		strings.Repeat("n", table.MaxPropertyNameChars+1)}
	for _, name := range bad {
		err := submitFails(t, tbl, "p", insertOp("p", "r", props("Good", "g", name, "v")))
		wantIs(t, err, table.ErrInvalid, "insert with the property name "+show(name))
	}
	s.wantEmpty(t, tbl, "p")
	good := props("_", "u", "a1", "b", "A_b_9", "c", strings.Repeat("n", table.MaxPropertyNameChars), "long")
	etags := submit(t, tbl, "p", insertOp("p", "r", good))
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", etags[0], good)
}

func (s *suite) testSpecialKeys(t *testing.T) {
	tbl := s.table(t)
	keys := specialKeys()
	// Every key as partition key and row key, through every kind of call.
	for _, k := range keys {
		p := props("K", k)
		e1 := submit(t, tbl, k, insertOp(k, k, p))[0]
		wantEntity(t, get(t, tbl, k, k), k, k, e1, p)
		rows := s.rows(t, tbl, k)
		if len(rows) != 1 {
			t.Fatalf("partition %q: query returned %q, want one row", k, rowKeys(rows))
		}
		wantEntity(t, rows[0], k, k, e1, p)
		e2 := submit(t, tbl, k, replaceOp(k, k, e1, props("K", k, "N", int64(2))))[0]
		e3 := submit(t, tbl, k, mergeOp(k, k, e2, props("M", true)))[0]
		wantEntity(t, get(t, tbl, k, k), k, k, e3, props("K", k, "N", int64(2), "M", true))
		submit(t, tbl, k, deleteOp(k, k, e3))
		wantMissing(t, tbl, k, k)
	}
	// Every key as a row key of one partition, and as a query bound.
	const pk = "keys"
	var ops []table.Op
	for _, k := range keys {
		ops = append(ops, insertOp(pk, k, props("K", k)))
	}
	submit(t, tbl, pk, ops...)
	sorted := slices.Sorted(slices.Values(keys))
	if got := rowKeys(s.rows(t, tbl, pk)); !slices.Equal(got, sorted) {
		t.Fatalf("query returned the row keys\n%q\nwant\n%q", got, sorted)
	}
	for i, k := range sorted {
		if got := rowKeys(s.query(t, tbl, table.Query{PartitionKey: pk, From: k})); !slices.Equal(got, sorted[i:]) {
			t.Errorf("query from %q returned %q, want %q", k, got, sorted[i:])
		}
		if got := rowKeys(s.query(t, tbl, table.Query{PartitionKey: pk, To: k})); !slices.Equal(got, sorted[:i]) {
			t.Errorf("query to %q returned %q, want %q", k, got, sorted[:i])
		}
	}
}

func (s *suite) testMaxKeys(t *testing.T) {
	tbl := s.table(t)
	keys := []string{
		strings.Repeat("k", table.MaxKeyChars),
		strings.Repeat("k", table.MaxKeyChars-2) + "😀", // 511 runes, 512 UTF-16 units
		strings.Repeat("é", table.MaxKeyChars),         // 1 KiB as UTF-8 and as UTF-16
	}
	for _, k := range keys {
		p := props("N", int64(len(k)))
		e1 := submit(t, tbl, k, insertOp(k, k, p))[0]
		wantEntity(t, get(t, tbl, k, k), k, k, e1, p)
		rows := s.rows(t, tbl, k)
		if len(rows) != 1 {
			t.Fatalf("query of a partition key of %d bytes returned %d rows, want 1", len(k), len(rows))
		}
		wantEntity(t, rows[0], k, k, e1, p)
		e2 := submit(t, tbl, k, replaceOp(k, k, e1, props("N", int64(0))))[0]
		submit(t, tbl, k, deleteOp(k, k, e2))
		wantMissing(t, tbl, k, k)
	}
}

func (s *suite) testInvalidKeys(t *testing.T) {
	tbl := s.table(t)
	for name, key := range invalidKeys() {
		err := submitFails(t, tbl, "p", insertOp("p", "ok", props("A", "a")), insertOp("p", key, props("A", "a")))
		wantIs(t, err, table.ErrInvalid, "insert with row key "+name)
		err = submitFails(t, tbl, "p", upsertOp("p", key, props("A", "a")))
		wantIs(t, err, table.ErrInvalid, "upsert with row key "+name)
		err = submitFails(t, tbl, "p", deleteOp("p", key, "*"))
		wantIs(t, err, table.ErrInvalid, "delete with row key "+name)
		err = submitFails(t, tbl, key, insertOp(key, "r", props("A", "a")))
		wantIs(t, err, table.ErrInvalid, "insert with partition key "+name)
		_, err = tbl.Query(t.Context(), table.Query{PartitionKey: key})
		wantIs(t, err, table.ErrInvalid, "query of partition key "+name)
	}
	s.wantEmpty(t, tbl, "p")
}

func (s *suite) testInsertCreates(t *testing.T) {
	tbl := s.table(t)
	p := props("A", "a")
	etags := submit(t, tbl, "p", insertOp("p", "r", p))
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", etags[0], p)
}

func (s *suite) testInsertExisting(t *testing.T) {
	tbl := s.table(t)
	old := props("V", "old")
	submit(t, tbl, "p", insertOp("p", "b", old))
	before := s.rows(t, tbl, "p")

	err := submitFails(t, tbl, "p", insertOp("p", "b", props("V", "new")))
	wantBatchError(t, err, 0, table.ErrAlreadyExists)
	err = submitFails(t, tbl, "p",
		insertOp("p", "a", props("V", "a")),
		insertOp("p", "b", props("V", "new")),
		insertOp("p", "c", props("V", "c")))
	wantBatchError(t, err, 1, table.ErrAlreadyExists)
	wantMissing(t, tbl, "p", "a")
	wantMissing(t, tbl, "p", "c")
	sameRows(t, before, s.rows(t, tbl, "p"))
}

func (s *suite) testInsertAfterDelete(t *testing.T) {
	tbl := s.table(t)
	e1 := submit(t, tbl, "p", insertOp("p", "r", props("V", "first")))[0]
	submit(t, tbl, "p", deleteOp("p", "r", e1))
	p := props("W", "second")
	e2 := submit(t, tbl, "p", insertOp("p", "r", p))[0]
	if e2 == e1 {
		t.Fatalf("re-inserted row has the ETag %q of the deleted one", e2)
	}
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e2, p)
	err := submitFails(t, tbl, "p", replaceOp("p", "r", e1, props("V", "stale")))
	wantBatchError(t, err, 0, table.ErrPreconditionFailed)
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e2, p)
}

func (s *suite) testReplaceRightETag(t *testing.T) {
	tbl := s.table(t)
	e1 := submit(t, tbl, "p", insertOp("p", "r", props("A", "a", "B", int64(1))))[0]
	p := props("C", true)
	e2 := submit(t, tbl, "p", replaceOp("p", "r", e1, p))[0]
	if e2 == e1 {
		t.Errorf("replace kept the ETag %q", e1)
	}
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e2, p)
}

func (s *suite) testReplaceWrongETag(t *testing.T) {
	tbl := s.table(t)
	e1 := submit(t, tbl, "p", insertOp("p", "r", props("V", int64(1))))[0]
	p := props("V", int64(2))
	e2 := submit(t, tbl, "p", replaceOp("p", "r", e1, p))[0]
	err := submitFails(t, tbl, "p", replaceOp("p", "r", e1, props("V", int64(3))))
	wantBatchError(t, err, 0, table.ErrPreconditionFailed)
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e2, p)
}

func (s *suite) testReplaceMissing(t *testing.T) {
	tbl := s.table(t)
	for _, ifMatch := range []string{table.AnyETag, ""} {
		err := submitFails(t, tbl, "p", replaceOp("p", "r", ifMatch, props("V", "v")))
		wantBatchError(t, err, 0, table.ErrNotFound)
	}
	// The ETag of a deleted row.
	e1 := submit(t, tbl, "p", insertOp("p", "r", props("V", "v")))[0]
	submit(t, tbl, "p", deleteOp("p", "r", e1))
	err := submitFails(t, tbl, "p", replaceOp("p", "r", e1, props("V", "v")))
	wantBatchError(t, err, 0, table.ErrNotFound)
	s.wantEmpty(t, tbl, "p")
}

func (s *suite) testReplaceAnyETag(t *testing.T) {
	tbl := s.table(t)
	e := submit(t, tbl, "p", insertOp("p", "r", props("V", int64(0))))[0]
	for i, ifMatch := range []string{table.AnyETag, ""} {
		p := props("V", int64(i+1))
		e2 := submit(t, tbl, "p", replaceOp("p", "r", ifMatch, p))[0]
		if e2 == e {
			t.Errorf("replace kept the ETag %q", e)
		}
		e = e2
		wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e, p)
	}
}

func (s *suite) testMergeKeeps(t *testing.T) {
	tbl := s.table(t)
	e1 := submit(t, tbl, "p", insertOp("p", "r", props("A", "a", "B", int64(1), "C", true)))[0]
	e2 := submit(t, tbl, "p", mergeOp("p", "r", e1, props("B", int64(2), "D", []byte("d"))))[0]
	if e2 == e1 {
		t.Errorf("merge kept the ETag %q", e1)
	}
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e2, props("A", "a", "B", int64(2), "C", true, "D", []byte("d")))
	e3 := submit(t, tbl, "p", mergeOp("p", "r", "", props("A", "a2")))[0]
	e4 := submit(t, tbl, "p", mergeOp("p", "r", table.AnyETag, props("C", false)))[0]
	if e3 == e2 || e4 == e3 {
		t.Errorf("merge kept the ETag: %q, %q, %q", e2, e3, e4)
	}
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e4, props("A", "a2", "B", int64(2), "C", false, "D", []byte("d")))
}

func (s *suite) testMergeWrongETag(t *testing.T) {
	tbl := s.table(t)
	e1 := submit(t, tbl, "p", insertOp("p", "r", props("V", int64(1))))[0]
	p := props("V", int64(2))
	e2 := submit(t, tbl, "p", replaceOp("p", "r", e1, p))[0]
	err := submitFails(t, tbl, "p", mergeOp("p", "r", e1, props("W", int64(3))))
	wantBatchError(t, err, 0, table.ErrPreconditionFailed)
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e2, p)
}

func (s *suite) testMergeMissing(t *testing.T) {
	tbl := s.table(t)
	for _, ifMatch := range []string{table.AnyETag, ""} {
		err := submitFails(t, tbl, "p", mergeOp("p", "r", ifMatch, props("V", "v")))
		wantBatchError(t, err, 0, table.ErrNotFound)
	}
	e1 := submit(t, tbl, "p", insertOp("p", "r", props("V", "v")))[0]
	submit(t, tbl, "p", deleteOp("p", "r", e1))
	err := submitFails(t, tbl, "p", mergeOp("p", "r", e1, props("V", "v")))
	wantBatchError(t, err, 0, table.ErrNotFound)
	s.wantEmpty(t, tbl, "p")
}

func (s *suite) testUpsert(t *testing.T) {
	tbl := s.table(t)
	p1 := props("A", int64(1), "B", "b")
	e1 := submit(t, tbl, "p", upsertOp("p", "r", p1))[0]
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e1, p1)
	p2 := props("C", int64(2))
	e2 := submit(t, tbl, "p", upsertOp("p", "r", p2))[0]
	if e2 == e1 {
		t.Errorf("upsert kept the ETag %q", e1)
	}
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e2, p2) // a replace: A and B are gone
}

func (s *suite) testDeleteRightETag(t *testing.T) {
	tbl := s.table(t)
	e1 := submit(t, tbl, "p", insertOp("p", "r", props("V", "v")), insertOp("p", "s", props("V", "v")))
	submit(t, tbl, "p", deleteOp("p", "r", e1[0]))
	wantMissing(t, tbl, "p", "r")
	submit(t, tbl, "p", deleteOp("p", "s", ""))
	wantMissing(t, tbl, "p", "s")
	s.wantEmpty(t, tbl, "p")
}

func (s *suite) testDeleteWrongETag(t *testing.T) {
	tbl := s.table(t)
	e1 := submit(t, tbl, "p", insertOp("p", "r", props("V", int64(1))))[0]
	p := props("V", int64(2))
	e2 := submit(t, tbl, "p", replaceOp("p", "r", e1, p))[0]
	err := submitFails(t, tbl, "p", deleteOp("p", "r", e1))
	wantBatchError(t, err, 0, table.ErrPreconditionFailed)
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", e2, p)
}

func (s *suite) testDeleteMissing(t *testing.T) {
	tbl := s.table(t)
	for _, ifMatch := range []string{table.AnyETag, ""} {
		err := submitFails(t, tbl, "p", deleteOp("p", "r", ifMatch))
		wantBatchError(t, err, 0, table.ErrNotFound)
	}
	e1 := submit(t, tbl, "p", insertOp("p", "r", props("V", "v")))[0]
	submit(t, tbl, "p", deleteOp("p", "r", e1))
	err := submitFails(t, tbl, "p", deleteOp("p", "r", e1))
	wantBatchError(t, err, 0, table.ErrNotFound)
}

func (s *suite) testETagChanges(t *testing.T) {
	tbl := s.table(t)
	p := props("V", "same")
	var etags []string
	check := func(what string, etag string, want map[string]any) {
		t.Helper()
		if slices.Contains(etags, etag) {
			t.Errorf("%s returned the ETag %q again; earlier ETags %q", what, etag, etags)
		}
		etags = append(etags, etag)
		wantEntity(t, get(t, tbl, "p", "r"), "p", "r", etag, want)
		rows := s.rows(t, tbl, "p")
		if len(rows) != 1 {
			t.Fatalf("query returned %d rows, want 1", len(rows))
		}
		wantEntity(t, rows[0], "p", "r", etag, want)
	}
	check("insert", submit(t, tbl, "p", insertOp("p", "r", p))[0], p)
	check("replace with the same properties", submit(t, tbl, "p", replaceOp("p", "r", etags[0], p))[0], p)
	check("merge with the same properties", submit(t, tbl, "p", mergeOp("p", "r", etags[1], p))[0], p)
	check("upsert with the same properties", submit(t, tbl, "p", upsertOp("p", "r", p))[0], p)
	p2 := props("V", "same", "W", int64(1))
	check("merge", submit(t, tbl, "p", mergeOp("p", "r", "*", props("W", int64(1))))[0], p2)
	// Every earlier ETag is stale now.
	for _, stale := range etags[:len(etags)-1] {
		err := submitFails(t, tbl, "p", replaceOp("p", "r", stale, p))
		wantBatchError(t, err, 0, table.ErrPreconditionFailed)
	}
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", etags[len(etags)-1], p2)
}

func (s *suite) testBatchETags(t *testing.T) {
	tbl := s.table(t)
	old := submit(t, tbl, "p",
		insertOp("p", "a", props("V", "a")),
		insertOp("p", "b", props("V", "b")),
		insertOp("p", "c", props("V", "c")),
		insertOp("p", "d", props("V", "d")))
	ops := []table.Op{
		insertOp("p", "n", props("V", "n")),
		replaceOp("p", "a", old[0], props("V", "a2")),
		mergeOp("p", "b", old[1], props("W", "b2")),
		upsertOp("p", "c", props("V", "c2")),
		deleteOp("p", "d", old[3]),
		upsertOp("p", "m", props("V", "m")),
	}
	etags := submit(t, tbl, "p", ops...)
	want := map[string]map[string]any{
		"n": props("V", "n"),
		"a": props("V", "a2"),
		"b": props("V", "b", "W", "b2"),
		"c": props("V", "c2"),
		"m": props("V", "m"),
	}
	for i, op := range ops {
		rk := op.Entity.RowKey
		if op.Kind == table.Delete {
			wantMissing(t, tbl, "p", rk)
			continue
		}
		if slices.Contains(old, etags[i]) {
			t.Errorf("op %d (%v %q) returned the old ETag %q", i, op.Kind, rk, etags[i])
		}
		wantEntity(t, get(t, tbl, "p", rk), "p", rk, etags[i], want[rk])
	}
	rows := s.rows(t, tbl, "p")
	if got := rowKeys(rows); !slices.Equal(got, []string{"a", "b", "c", "m", "n"}) {
		t.Fatalf("query returned %q, want [a b c m n]", got)
	}
	for _, e := range rows {
		i := slices.IndexFunc(ops, func(op table.Op) bool { return op.Entity.RowKey == e.RowKey })
		wantEntity(t, e, "p", e.RowKey, etags[i], want[e.RowKey])
	}
}
