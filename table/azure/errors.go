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

	"github.com/estuite/estuite/table"
)

// mapError turns an error of the SDK into the contract's errors: an HTTP error response goes
// through statusError; a lost connection or a request timeout becomes a *table.TransientError.
// When ctx itself is done, err is returned as it is: the caller gave up, nothing failed.
func mapError(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		var header http.Header
		if re.RawResponse != nil {
			header = re.RawResponse.Header
		}
		return statusError(re.StatusCode, re.ErrorCode, header, err)
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

// statusError wraps cause, an HTTP error response, in the contract's error for it.
func statusError(status int, code string, header http.Header, cause error) error {
	kind := errorKind(status, code)
	if kind == nil {
		return &table.TransientError{RetryAfter: retryAfter(header), Err: cause}
	}
	return fmt.Errorf("%w: %w", kind, cause)
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
