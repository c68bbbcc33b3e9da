package throttle

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// Partition names one partition of the account: a partition key of one table. Azure serves
// each (table, PartitionKey) pair from one partition server, so two tables' partitions of the
// same key are throttled independently.
type Partition struct {
	Table        string
	PartitionKey string
}

// demand is what one request asks of the buckets, worked out from the request alone (before it
// is forwarded). Every request is one account transaction.
type demand struct {
	// entities are charged to their partitions when the request is admitted: 1 for a point
	// read or a single-entity write, the number of operations per partition for a batch.
	entities map[Partition]int
	// query is set for an entity query (GET on a table, without keys): its entities are charged
	// from the response, to the partitions they come from.
	query bool
	// single is set for a query whose filter pins one partition (PartitionKey eq '...'); that
	// partition must then have tokens for the query to be admitted, and is charged at least one
	// entity even for an empty page. partition.Table is the queried table in any case.
	single    bool
	partition Partition
}

// partitions lists the partitions whose buckets must have tokens for d to be admitted.
func (d *demand) partitions() []Partition {
	ps := make([]Partition, 0, len(d.entities)+1)
	for p := range d.entities {
		ps = append(ps, p)
	}
	if d.single {
		if _, ok := d.entities[d.partition]; !ok {
			ps = append(ps, d.partition)
		}
	}
	return ps
}

// classify works out the demand of r. It reads the body of an insert or a batch (to find the
// partition key and the operations) and leaves r.Body readable again from the start. A request
// it cannot understand is an account transaction with no partition: the service will judge it.
func classify(r *http.Request) (*demand, error) {
	d := &demand{}
	seg := lastSegment(r.URL)
	if seg == "$batch" {
		body, err := readBody(r)
		if err != nil {
			return nil, err
		}
		d.entities = batchEntities(r.Header.Get("Content-Type"), body)
		return d, nil
	}
	if r.URL.Query().Get("comp") != "" || r.URL.Query().Get("restype") != "" {
		return d, nil // table ACL, service properties or stats: account only
	}
	name, inner, ok := parseSegment(seg)
	if !ok || name == "" || strings.EqualFold(name, "Tables") {
		return d, nil // table create, delete, list; or something not understood
	}
	if inner != "" {
		if pk, _, ok := entityKeys(inner); ok {
			// Point read, update, merge, delete, insert-or-replace, insert-or-merge.
			d.entities = map[Partition]int{{Table: name, PartitionKey: pk}: 1}
		}
		return d, nil
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		d.query, d.partition.Table = true, name
		if pk, ok := singlePartition(r.URL.Query().Get("$filter")); ok {
			d.single, d.partition.PartitionKey = true, pk
		}
	case http.MethodPost: // insert: the partition key is in the entity
		body, err := readBody(r)
		if err != nil {
			return nil, err
		}
		if pk, ok := entityPartitionKey(body); ok {
			d.entities = map[Partition]int{{Table: name, PartitionKey: pk}: 1}
		}
	}
	return d, nil
}

// lastSegment is the last segment of u's path, unescaped: "t(PartitionKey='p',RowKey='r')" for
// "/devstoreaccount1/t(PartitionKey='p',RowKey='r')". Azure keys cannot hold '/', so the last
// segment of the escaped path is the whole resource.
func lastSegment(u *url.URL) string {
	p := u.EscapedPath()
	seg := p[strings.LastIndexByte(p, '/')+1:]
	if s, err := url.PathUnescape(seg); err == nil {
		return s
	}
	return seg
}

// readBody reads r's body and puts an unread copy back.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		return nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, nil
}

// parseSegment splits a resource segment into its name and what its parentheses hold: "t"
// gives ("t", ""), "t()" ("t", ""), "t(PartitionKey='p',RowKey='r')" ("t",
// "PartitionKey='p',RowKey='r'"), "Tables('t')" ("Tables", "'t'"). ok is false when a
// parenthesis is left open.
func parseSegment(seg string) (name, inner string, ok bool) {
	i := strings.IndexByte(seg, '(')
	if i < 0 {
		return seg, "", true
	}
	if !strings.HasSuffix(seg, ")") {
		return "", "", false
	}
	return seg[:i], seg[i+1 : len(seg)-1], true
}

// entityKeysRE matches the keys of an entity's URL. The partition key's group is greedy, so a
// quote in a key that the client forgot to double (as aztables v1.4.1 does in batches) is read
// as part of the key rather than as its end.
var entityKeysRE = regexp.MustCompile(`^\s*PartitionKey\s*=\s*'(.*)'\s*,\s*RowKey\s*=\s*'(.*)'\s*$`)

// entityKeys reads the keys in the parentheses of an entity's URL,
// "PartitionKey='p',RowKey='r'", doubled quotes undoubled.
func entityKeys(inner string) (partitionKey, rowKey string, ok bool) {
	m := entityKeysRE.FindStringSubmatch(inner)
	if m == nil {
		return "", "", false
	}
	return strings.ReplaceAll(m[1], "''", "'"), strings.ReplaceAll(m[2], "''", "'"), true
}

// literal reads the OData string literal at the start of s, in single quotes with any quote
// inside doubled, and returns its value (the inner quotes undoubled) and what follows it.
func literal(s string) (value, rest string, ok bool) {
	if !strings.HasPrefix(s, "'") {
		return "", s, false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '\'' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '\'' {
			b.WriteByte('\'')
			i++
			continue
		}
		return b.String(), s[i+1:], true
	}
	return "", s, false
}

// singlePartition reports the partition key a query filter pins: exactly one
// "PartitionKey eq '...'" comparison and no "or" or "not" that could widen it. Comparisons of
// other properties and row key ranges may be and-ed to it; parentheses are ignored.
func singlePartition(filter string) (string, bool) {
	toks, ok := filterTokens(filter)
	if !ok {
		return "", false
	}
	pk, found := "", 0
	for i, t := range toks {
		if !t.literal && (t.text == "or" || t.text == "not") {
			return "", false
		}
		if !t.literal && t.text == "PartitionKey" && i+2 < len(toks) &&
			!toks[i+1].literal && toks[i+1].text == "eq" && toks[i+2].literal {
			pk, found = toks[i+2].text, found+1
		}
	}
	if found != 1 {
		return "", false
	}
	return pk, true
}

// token is a word of an OData filter, or the value of a string literal.
type token struct {
	text    string
	literal bool
}

// filterTokens splits an OData filter into words and string literals, dropping parentheses.
func filterTokens(f string) ([]token, bool) {
	var toks []token
	for f != "" {
		switch c := f[0]; {
		case c == ' ' || c == '(' || c == ')':
			f = f[1:]
		case c == '\'':
			v, rest, ok := literal(f)
			if !ok {
				return nil, false
			}
			toks = append(toks, token{text: v, literal: true})
			f = rest
		default:
			n := strings.IndexAny(f, " ()'")
			if n < 0 {
				n = len(f)
			}
			toks = append(toks, token{text: f[:n]})
			f = f[n:]
		}
	}
	return toks, true
}

// entityPartitionKey reads the PartitionKey of an entity's JSON.
func entityPartitionKey(body []byte) (string, bool) {
	var e struct{ PartitionKey *string }
	if json.Unmarshal(body, &e) != nil || e.PartitionKey == nil {
		return "", false
	}
	return *e.PartitionKey, true
}

// batchEntities counts the operations of an entity group transaction by partition. The body is
// what the SDK sends (and the Table service documents): a multipart/mixed batch whose one part
// is a multipart/mixed changeset of application/http requests, each "METHOD URL HTTP/1.1",
// headers and, for an insert, update or merge, the entity. The partition is read from the
// operation's URL, or from the entity of an insert. Nil when the body does not parse; the batch
// is then an account transaction only, and the service will refuse it.
func batchEntities(contentType string, body []byte) map[Partition]int {
	parts, err := multipartParts(contentType, bytes.NewReader(body))
	if err != nil {
		return nil
	}
	counts := map[Partition]int{}
	for _, part := range parts {
		if part.mediaType != "multipart/mixed" {
			continue
		}
		ops, err := multipartParts(part.contentType, bytes.NewReader(part.body))
		if err != nil {
			return nil
		}
		for _, op := range ops {
			p, err := operationPartition(op.body)
			if err != nil {
				return nil
			}
			counts[p]++
		}
	}
	if len(counts) == 0 {
		return nil
	}
	return counts
}

// part is one part of a multipart body.
type part struct {
	contentType, mediaType string
	body                   []byte
}

// multipartParts reads the parts of a multipart body of the given Content-Type.
func multipartParts(contentType string, body io.Reader) ([]part, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || !strings.HasPrefix(mt, "multipart/") || params["boundary"] == "" {
		return nil, errors.New("not multipart")
	}
	mr := multipart.NewReader(body, params["boundary"])
	var parts []part
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return parts, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, err
		}
		ct := p.Header.Get("Content-Type")
		pmt, _, _ := mime.ParseMediaType(ct)
		parts = append(parts, part{contentType: ct, mediaType: pmt, body: b})
	}
}

// operationPartition reads the partition of one application/http operation of a changeset.
func operationPartition(op []byte) (Partition, error) {
	// An operation without a body may end right after its last header, without the blank line.
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(op), strings.NewReader("\r\n")))
	req, err := http.ReadRequest(br)
	if err != nil {
		return Partition{}, err
	}
	name, inner, ok := parseSegment(lastSegment(req.URL))
	if !ok || name == "" {
		return Partition{}, errors.New("operation names no table")
	}
	if pk, _, ok := entityKeys(inner); ok {
		return Partition{Table: name, PartitionKey: pk}, nil
	}
	// The SDK writes no Content-Length into the operation, so ReadRequest leaves the entity in
	// br: read both.
	body, _ := io.ReadAll(req.Body)
	rest, _ := io.ReadAll(br)
	if pk, ok := entityPartitionKey(append(body, rest...)); ok {
		return Partition{Table: name, PartitionKey: pk}, nil
	}
	return Partition{}, errors.New("operation names no partition")
}

// queryEntities counts the entities of a JSON query response ({"value": [...]}) by the
// partition key they carry. Entities without a PartitionKey (a $select that left it out) count
// under "". ok is false when the body is not such JSON.
func queryEntities(body []byte) (counts map[string]int, ok bool) {
	var page struct {
		Value *[]struct{ PartitionKey string }
	}
	if json.Unmarshal(body, &page) != nil || page.Value == nil {
		return nil, false
	}
	counts = map[string]int{}
	for _, e := range *page.Value {
		counts[e.PartitionKey]++
	}
	return counts, true
}
