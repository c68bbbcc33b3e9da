package azure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/estuite/estuite/table"
)

// This file is the one place that decides what an answer of the service — or its absence —
// means for the contract: mapError for reads and table operations, submitOutcome for batches.
// A batch that may have reached the service and whose answer was not had in full, or not
// understood, is an unknown outcome (table.UnknownOutcome): never a definite failure.

// mapError turns an error of the SDK into the contract's errors: an HTTP error response goes
// through statusError; a lost connection or a request timeout becomes a *table.TransientError.
// When ctx itself is done, err is returned as it is: the caller gave up, nothing failed.
func mapError(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	if re, ok := responseError(err); ok {
		return statusError(re.StatusCode, re.ErrorCode, responseHeader(re), err, false)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &table.TransientError{Err: err}
	}
	return err
}

// errorKind maps an HTTP error status and the service's error code to the contract's
// sentinel error, or to nil when the failure is transient (worth a retry). It is the one place
// that decides what a status means; failed batch operations go through it too.
func errorKind(status int, code string) error {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500,
		status == http.StatusConflict && code == "TableBeingDeleted":
		return nil
	case status == http.StatusNotFound:
		return table.ErrNotFound
	case status == http.StatusConflict: // EntityAlreadyExists, TableAlreadyExists
		return table.ErrAlreadyExists
	case status == http.StatusPreconditionFailed:
		return table.ErrPreconditionFailed
	default: // 400, 403, 413 and the rest: the request itself is wrong
		return table.ErrInvalid
	}
}

// statusError wraps cause, an HTTP error response, in the contract's error for it. For a write
// (write set), a transient status that does not say the service turned the request away is an
// unknown outcome: the write may have been applied before the service failed.
func statusError(status int, code string, header http.Header, cause error, write bool) error {
	kind := errorKind(status, code)
	if kind != nil {
		return fmt.Errorf("%w: %w", kind, cause)
	}
	if write && !refused(status, code) {
		te := table.UnknownOutcome(cause)
		te.RetryAfter = retryAfter(header)
		return te
	}
	return &table.TransientError{RetryAfter: retryAfter(header), Err: cause}
}

// refused reports whether a transient status says the service turned the request away without
// doing any of it: throttling (429; 503 ServerBusy on Azure Storage) or a table being deleted.
// Any other server error — 500 InternalError or OperationTimedOut, 502, 504, Cosmos DB's 408 and
// 503 — may have come after the write took effect.
func refused(status int, code string) bool {
	return status == http.StatusTooManyRequests ||
		status == http.StatusServiceUnavailable && code == "ServerBusy" ||
		status == http.StatusConflict && code == "TableBeingDeleted"
}

// submitOutcome judges the answer to one entity group transaction: err is what the SDK returned,
// ex what the request went through. The service's own answer, when it arrived whole, decides —
// the SDK's opinion of a 202 body is not trusted, its parser being laxer in places and stricter
// in others than batchOutcome:
//
//   - nothing sent (the request could not be built): the SDK's error, mapped as mapError does;
//   - sent, but no complete answer (a connection refused, reset or closed, a try timeout, a body
//     cut short while it was read): an unknown outcome, since the transport cannot say reliably
//     whether the request reached the service;
//   - 202 Accepted: batchOutcome reads the body — the ETags, the refused operation, or an
//     unknown outcome when the body does not say which;
//   - another error status: statusError, where only a refusal the service spelled out is
//     definite.
//
// When ctx is done, err is returned as it is: the caller gave up (and the outcome is unknown).
func submitOutcome(ctx context.Context, err error, ex *exchange, ops []table.Op) ([]string, error) {
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, err
	case !ex.sent:
		if err == nil {
			return nil, table.UnknownOutcome(errors.New("azure: batch answered without being sent"))
		}
		return nil, mapError(ctx, err)
	case ex.response == nil:
		if err == nil {
			err = errors.New("no response recorded")
		}
		return nil, table.UnknownOutcome(fmt.Errorf("azure: batch sent, answer not received in full: %w", err))
	case ex.response.StatusCode == http.StatusAccepted:
		body, perr := runtime.Payload(ex.response)
		if perr != nil {
			return nil, table.UnknownOutcome(fmt.Errorf("azure: reading batch response: %w", perr))
		}
		return batchOutcome(body, ops)
	case err == nil: // another success status (204): no operation responses to read
		return nil, table.UnknownOutcome(fmt.Errorf("azure: batch answered %s without operation responses", ex.response.Status))
	}
	if re, ok := responseError(err); ok {
		return nil, statusError(re.StatusCode, re.ErrorCode, responseHeader(re), err, true)
	}
	return nil, table.UnknownOutcome(fmt.Errorf("azure: batch answered %s: %w", ex.response.Status, err))
}

// responseError returns the HTTP error response inside err, if any.
func responseError(err error) (*azcore.ResponseError, bool) {
	var re *azcore.ResponseError
	return re, errors.As(err, &re)
}

// responseHeader returns the headers of an error response, or nil.
func responseHeader(re *azcore.ResponseError) http.Header {
	if re.RawResponse == nil {
		return nil
	}
	return re.RawResponse.Header
}

// exchange records what became of one batch request in the SDK's pipeline, as exchangePolicy
// sees it just before the transport: whether the request was handed on towards the network, and
// the response when it arrived in full (the SDK's body download succeeded).
type exchange struct {
	sent     bool
	response *http.Response
}

type exchangeKey struct{}

// withExchange makes exchangePolicy record the requests made with ctx into ex.
func withExchange(ctx context.Context, ex *exchange) context.Context {
	return context.WithValue(ctx, exchangeKey{}, ex)
}

// exchangePolicy fills in the exchange of requests marked by withExchange. It runs per try,
// below the retry policy and above the body download, so a response it sees without an error
// has its body in memory.
type exchangePolicy struct{}

// Do implements policy.Policy.
func (exchangePolicy) Do(req *policy.Request) (*http.Response, error) {
	ex, _ := req.Raw().Context().Value(exchangeKey{}).(*exchange)
	if ex == nil {
		return req.Next()
	}
	ex.sent, ex.response = true, nil
	resp, err := req.Next()
	if err == nil {
		ex.response = resp
	}
	return resp, err
}

// retryAfter reads the delay a response asks for: x-ms-retry-after-ms or retry-after-ms in
// milliseconds (Cosmos DB), or Retry-After in seconds or as an HTTP date. It returns 0 when there
// is none.
func retryAfter(h http.Header) time.Duration {
	if h == nil {
		return 0
	}
	for _, name := range []string{"x-ms-retry-after-ms", "retry-after-ms"} {
		if ms, err := strconv.ParseFloat(h.Get(name), 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("Retry-After")
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}
