package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/verifyjson"
)

// Verification job states (VerifyJob.State).
const (
	VerifyRunning  = verifyjson.StateRunning
	VerifyDone     = verifyjson.StateDone
	VerifyFailed   = verifyjson.StateFailed
	VerifyCanceled = verifyjson.StateCanceled
)

// MaxVerifyListItems is the most entries of each of a report's lists that the server sends.
const MaxVerifyListItems = verifyjson.MaxListItems

// VerifyCounts are the full lengths of a verification report's lists (the server sends at most
// 1,000 entries of each).
type VerifyCounts = verifyjson.Counts

// VerifyProgress is how far a verification is: estuite.VerifyProgress, the feed head when it
// started, and an estimate from 0 to 1 of the fraction done (docs/http-api.md says how it is
// computed).
type VerifyProgress struct {
	estuite.VerifyProgress
	FeedHead int64
	Fraction float64
}

// VerifyJob is a verification running, or run, on the server in the background.
type VerifyJob struct {
	ID    string
	State string // VerifyRunning, VerifyDone, VerifyFailed or VerifyCanceled
	// Started is when it started; Finished when it ended (zero while it runs).
	Started, Finished time.Time
	// Progress is how far it was when the server answered.
	Progress VerifyProgress
	// Report is what it found, once done (nil otherwise). Its lists hold at most 1,000 entries
	// each: Truncated says whether any was cut, Counts how long each is.
	Report    *estuite.VerifyReport
	Counts    VerifyCounts
	Truncated bool
	// Error says why it failed (State VerifyFailed).
	Error string
}

// jobFrom returns the job the wire form w stands for.
func jobFrom(w verifyjson.Job) (VerifyJob, error) {
	j := VerifyJob{ID: w.ID, State: w.State, Progress: VerifyProgress{
		VerifyProgress: estuite.VerifyProgress{Phase: w.Progress.Phase, Rows: w.Progress.Rows, Streams: w.Progress.Streams,
			FeedPositions: w.Progress.FeedPositions},
		FeedHead: w.Progress.FeedHead, Fraction: w.Progress.Fraction}}
	var err error
	if j.Started, err = parseTime(w.Started); err != nil {
		return j, fmt.Errorf("client: verification %s: its start: %w", w.ID, err)
	}
	if j.Finished, err = optionalTime(w.Finished); err != nil {
		return j, fmt.Errorf("client: verification %s: its end: %w", w.ID, err)
	}
	if w.Report != nil {
		j.Report, j.Counts, j.Truncated = w.Report.ToReport(), w.Report.Counts, w.Report.Truncated
	}
	if w.Error != nil {
		j.Error = *w.Error
	}
	return j, nil
}

// StartVerify starts a verification of the whole store in the background (POST /admin/verify).
// While one runs, the answer is an *Error with Code CodeVerifyRunning whose ID names it.
func (c *Client) StartVerify(ctx context.Context) (VerifyJob, error) {
	var out verifyjson.Job
	if _, _, err := c.call(ctx, request{method: http.MethodPost, path: "/admin/verify", body: struct{}{}}, &out); err != nil {
		return VerifyJob{}, err
	}
	return VerifyJob{ID: out.ID, State: out.State}, nil
}

// VerifyStatus returns a verification job (GET /admin/verify/{id}); id "" means the latest one
// (GET /admin/verify). An ID the server does not know is an *Error with Code CodeVerifyNotFound.
func (c *Client) VerifyStatus(ctx context.Context, id string) (VerifyJob, error) {
	path := "/admin/verify"
	if id != "" {
		path += "/" + PathSegment(id)
	}
	var out verifyjson.Job
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: path}, &out); err != nil {
		return VerifyJob{}, err
	}
	return jobFrom(out)
}

// CancelVerify cancels a running verification (DELETE /admin/verify/{id}) and returns once it has
// stopped; a finished one is left as it is.
func (c *Client) CancelVerify(ctx context.Context, id string) error {
	_, _, err := c.call(ctx, request{method: http.MethodDelete, path: "/admin/verify/" + PathSegment(id)}, nil)
	return err
}

// DefaultVerifyPoll is how often Verify asks how far the verification is, when not told.
const DefaultVerifyPoll = 500 * time.Millisecond

// Verify starts a verification, polls it every poll (0: DefaultVerifyPoll) — calling progress,
// when not nil, with each answer while it runs — and returns the finished job. A job that failed
// or was canceled on the server is an error; so is ctx ending, after which Verify cancels the job
// on the server (best effort).
func (c *Client) Verify(ctx context.Context, poll time.Duration, progress func(VerifyJob)) (VerifyJob, error) {
	if poll <= 0 {
		poll = DefaultVerifyPoll
	}
	started, err := c.StartVerify(ctx)
	if err != nil {
		return VerifyJob{}, err
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = c.CancelVerify(cctx, started.ID)
			cancel()
			return VerifyJob{}, ctx.Err()
		case <-t.C:
		}
		job, err := c.VerifyStatus(ctx, started.ID)
		if err != nil {
			if ctx.Err() != nil {
				continue // canceled while asking: cancel the job above
			}
			return job, err
		}
		switch job.State {
		case VerifyRunning:
			if progress != nil {
				progress(job)
			}
		case VerifyDone:
			return job, nil
		case VerifyFailed:
			return job, fmt.Errorf("estuite: the verification failed on the server: %s", job.Error)
		default:
			return job, errors.New("estuite: the verification was canceled on the server")
		}
	}
}
