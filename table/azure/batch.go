package azure

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"

	"github.com/estuite/estuite/table"
)

// An entity group transaction answers with a multipart/mixed body holding one part, a
// multipart/mixed changeset, whose parts are the HTTP responses of the operations:
//
//	--batchresponse_B
//	Content-Type: multipart/mixed; boundary=changesetresponse_C
//
//	--changesetresponse_C
//	Content-Type: application/http
//	Content-Transfer-Encoding: binary
//
//	HTTP/1.1 204 No Content
//	ETag: W/"datetime'2024-01-01T00%3A00%3A00.0000000Z'"
//
//	--changesetresponse_C--
//	--batchresponse_B--
//
// On success there is one response per operation, in order. On failure the status of the whole
// request is still 202 and the changeset holds the failing operation's error response, whose
// message starts with the operation's index: {"odata.error":{"code":"EntityAlreadyExists",
// "message":{"lang":"en-US","value":"1:The specified entity already exists.\n..."}}}.

// batchResponses returns the operations' responses of an entity group transaction's body.
// Bodies of the responses are read into memory, so they stay readable.
func batchResponses(body []byte) ([]*http.Response, error) {
	changeset, err := firstPart(body)
	if err != nil {
		return nil, fmt.Errorf("azure: reading batch response: %w", err)
	}
	boundary := boundaryOf(changeset)
	mr := multipart.NewReader(bytes.NewReader(changeset), boundary)
	var responses []*http.Response
	for {
		part, err := mr.NextPart()
		if err == io.EOF || (err != nil && len(responses) > 0 && errors.Is(err, io.ErrUnexpectedEOF)) {
			return responses, nil
		}
		if err != nil {
			return nil, fmt.Errorf("azure: reading batch changeset response: %w", err)
		}
		data, err := io.ReadAll(part)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("azure: reading batch changeset response: %w", err)
		}
		// Azurite writes a stray line before the status line of some errors: skip to "HTTP/".
		if i := bytes.Index(data, []byte("HTTP/")); i > 0 {
			data = data[i:]
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
		if err != nil {
			return nil, fmt.Errorf("azure: reading batch operation response: %w", err)
		}
		respBody, err := io.ReadAll(resp.Body)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("azure: reading batch operation response: %w", err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(respBody))
		responses = append(responses, resp)
	}
}

// firstPart returns the content of the first part of a multipart body: the changeset. Cosmos DB
// may end the body without the closing boundary, which is tolerated.
func firstPart(body []byte) ([]byte, error) {
	mr := multipart.NewReader(bytes.NewReader(body), boundaryOf(body))
	part, err := mr.NextPart()
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(part)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return data, nil
}

// boundaryOf returns the multipart boundary that a body's first line opens ("--boundary"),
// else the one a Content-Type header at the start of the body names. The first line is more
// reliable than the headers: services differ in how they write them.
func boundaryOf(data []byte) string {
	data = bytes.TrimLeft(data, "\r\n")
	line, _, _ := bytes.Cut(data, []byte("\n"))
	line = bytes.TrimRight(line, "\r \t")
	if b, ok := bytes.CutPrefix(line, []byte("--")); ok {
		return string(b)
	}
	// "Content-Type: multipart/mixed; boundary=..." before a blank line
	for _, l := range strings.Split(string(data), "\n") {
		name, value, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok {
			break
		}
		if strings.EqualFold(name, "Content-Type") {
			if _, params, err := mime.ParseMediaType(strings.TrimSpace(value)); err == nil {
				return params["boundary"]
			}
		}
	}
	return ""
}

// batchOutcome reads the body of an accepted entity group transaction (status 202): the new
// ETags when every operation answered with success, the contract's error when an operation's
// error response says the batch was refused, and an unknown outcome (table.UnknownOutcome)
// otherwise — a body that cannot be decoded, one cut short before every operation answered, a
// success without an ETag. Such a batch may have been applied: it is never reported as failed.
func batchOutcome(body []byte, ops []table.Op) ([]string, error) {
	responses, err := batchResponses(body)
	if err != nil {
		return nil, table.UnknownOutcome(err)
	}
	for _, resp := range responses {
		if resp.StatusCode >= 400 {
			return nil, operationFailure(resp, len(ops))
		}
	}
	etags, err := batchETags(responses, ops)
	if err != nil {
		return nil, table.UnknownOutcome(err)
	}
	return etags, nil
}

// batchETags returns the ETags of a successful batch's operations, in op order ("" for deletes),
// or an error when the responses do not give them all.
func batchETags(responses []*http.Response, ops []table.Op) ([]string, error) {
	if len(responses) != len(ops) {
		return nil, fmt.Errorf("azure: batch response holds %d operation responses for %d operations", len(responses), len(ops))
	}
	etags := make([]string, len(ops))
	for i, resp := range responses {
		if resp.StatusCode >= 300 {
			return nil, fmt.Errorf("azure: batch operation %d answered %s", i, resp.Status)
		}
		if ops[i].Kind == table.Delete {
			continue
		}
		if etags[i] = resp.Header.Get("ETag"); etags[i] == "" {
			return nil, fmt.Errorf("azure: batch operation %d answered without an ETag", i)
		}
	}
	return etags, nil
}

// operationFailure turns the error response of a batch's failed operation into the contract's
// error: a *table.BatchError naming the operation, or, for a passing reason (throttling, server
// error), what statusError makes of it for a write. The index comes from the "N:" prefix of the
// error message; when it is missing, it is 0 for a batch of one operation and -1 otherwise
// (unknown).
func operationFailure(resp *http.Response, nops int) error {
	data, _ := io.ReadAll(resp.Body)
	code, message := errorDetails(data)
	index := -1
	if n, _, ok := strings.Cut(message, ":"); ok {
		if i, err := strconv.Atoi(n); err == nil && i >= 0 && i < nops {
			index = i
		}
	}
	if index < 0 && nops == 1 {
		index = 0
	}
	kind := errorKind(resp.StatusCode, code)
	if kind == nil {
		return statusError(resp.StatusCode, code, resp.Header,
			fmt.Errorf("azure: batch operation failed: %s %s: %s", resp.Status, code, message), true)
	}
	if code == "" {
		code = strconv.Itoa(resp.StatusCode)
	}
	return &table.BatchError{Index: index, Code: code, Err: kind}
}

// errorDetails returns the code and message of an error body, in JSON
// ({"odata.error":{"code":..,"message":{"value":..}}}) or XML (<error><code/><message/></error>).
func errorDetails(data []byte) (code, message string) {
	var j struct {
		Error struct {
			Code    string `json:"code"`
			Message struct {
				Value string `json:"value"`
			} `json:"message"`
		} `json:"odata.error"`
	}
	if json.Unmarshal(data, &j) == nil && j.Error.Code != "" {
		return j.Error.Code, j.Error.Message.Value
	}
	var x struct {
		Code    string `xml:"code"`
		Message string `xml:"message"`
	}
	if xml.Unmarshal(data, &x) == nil && x.Code != "" {
		return x.Code, x.Message
	}
	return "", strings.TrimSpace(string(data))
}
