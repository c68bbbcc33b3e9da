package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/verifyjson"
	"github.com/google/uuid"
)

// Verification over HTTP: POST /admin/verify starts Store.Verify in the background, GET
// /admin/verify/{id} tells how far it is and, once done, what it found; DELETE cancels it. One
// runs at a time; the last few finished jobs are kept in memory, each with its report's lists cut
// to verifyjson.MaxListItems entries (docs/http-api.md).

// MaxVerifyJobs is how many verification jobs, the running one included, the server keeps in
// memory; the oldest finished one is forgotten when a new one starts.
const MaxVerifyJobs = 8

// codeVerifyRunning answers a POST /admin/verify while a verification runs;
// codeVerifyNotFound a job ID the server does not know (or no longer does).
const (
	codeVerifyRunning  = "verify_running"
	codeVerifyNotFound = "verify_not_found"
)

// maxVerifyBodyBytes bounds a POST /admin/verify body, which may only be empty or {}.
const maxVerifyBodyBytes = 1 << 10

// verifyJobs are the server's verification jobs. The zero value is ready to use.
type verifyJobs struct {
	mu      sync.Mutex
	jobs    []*verifyJob // oldest first, at most MaxVerifyJobs
	running *verifyJob   // nil when none runs
	closed  bool         // Server.Close was called: no new job starts
}

// verifyJob is one verification: a fixed amount of state while it runs, and its report, its lists
// cut, once done.
type verifyJob struct {
	id      string
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{} // closed when the job has ended

	mu       sync.Mutex
	state    string
	progress estuite.VerifyProgress
	feedHead int64 // the feed head (all shards) when the job started
	feedRows int64 // rows read when the walk left its first feed phase; -1 before
	finished time.Time
	report   *verifyjson.Report
	err      string
}

// fraction estimates how much of the walk is done, from 0 to 1: the first half is the feed walk
// (feed positions walked / the feed head when the job started), the second half the stream table
// and what follows (rows read since the feed walk / the same feed head, since every event has
// about one row in the stream table as in the feed). Below 1 until the job ends; 0 while the feed
// head is 0.
func (j *verifyJob) fraction() float64 {
	switch {
	case j.state != verifyjson.StateRunning:
		return 1
	case j.feedHead <= 0:
		return 0
	}
	head := float64(j.feedHead)
	f := 0.5 * min(1, float64(j.progress.FeedPositions)/head)
	if j.feedRows >= 0 {
		f = 0.5 + 0.5*min(1, float64(j.progress.Rows-j.feedRows)/head)
	}
	return min(f, 0.99)
}

// view is the job as the API shows it.
func (j *verifyJob) view() verifyjson.Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	v := verifyjson.Job{ID: j.id, State: j.state, Started: formatTime(j.started), Finished: optionalTime(j.finished), Report: j.report,
		Progress: verifyjson.Progress{Phase: j.progress.Phase, Rows: j.progress.Rows, Streams: j.progress.Streams,
			FeedPositions: j.progress.FeedPositions, FeedHead: j.feedHead, Fraction: j.fraction()}}
	if j.err != "" {
		msg := j.err
		v.Error = &msg
	}
	return v
}

// start starts a verification of store, unless one runs (it is returned, with false) or the
// server is closed (nil, false).
func (v *verifyJobs) start(store *estuite.Store, log *slog.Logger) (*verifyJob, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, false
	}
	if v.running != nil {
		return v.running, false
	}
	ctx, cancel := context.WithCancel(context.Background())
	j := &verifyJob{id: uuid.NewString(), started: time.Now(), cancel: cancel, done: make(chan struct{}),
		state: verifyjson.StateRunning, feedRows: -1}
	if len(v.jobs) == MaxVerifyJobs {
		v.jobs = append(v.jobs[:0], v.jobs[1:]...)
	}
	v.jobs = append(v.jobs, j)
	v.running = j
	go v.run(ctx, j, store, log)
	return j, true
}

// run runs job j to its end.
func (v *verifyJobs) run(ctx context.Context, j *verifyJob, store *estuite.Store, log *slog.Logger) {
	defer close(j.done)
	defer j.cancel()
	var head int64
	for shard := range store.FeedShards() {
		h, err := store.FeedHeadOf(ctx, shard)
		if err != nil {
			head = 0 // no estimate: the fraction stays 0 until the end
			break
		}
		head += h
	}
	j.mu.Lock()
	j.feedHead = head
	j.mu.Unlock()
	report, err := store.Verify(ctx, &estuite.VerifyOptions{Progress: func(p estuite.VerifyProgress) {
		j.mu.Lock()
		if j.feedRows < 0 && p.Phase != "" && p.Phase != "feed" {
			j.feedRows = j.progress.Rows
		}
		j.progress = p
		j.mu.Unlock()
	}})
	var wire *verifyjson.Report
	if err == nil {
		wire = verifyjson.FromReport(report) // the lists cut: the full report goes now
	}
	j.mu.Lock()
	j.finished = time.Now()
	switch {
	case err == nil:
		j.state, j.report = verifyjson.StateDone, wire
	case ctx.Err() != nil:
		j.state = verifyjson.StateCanceled
	default:
		j.state, j.err = verifyjson.StateFailed, toAPIError(err).Message
		log.Error("verification failed", "id", j.id, "err", err)
	}
	j.mu.Unlock()
	v.mu.Lock()
	if v.running == j {
		v.running = nil
	}
	v.mu.Unlock()
}

// find returns the job of that ID, or the latest job for "", or nil.
func (v *verifyJobs) find(id string) *verifyJob {
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := len(v.jobs) - 1; i >= 0; i-- {
		if id == "" || v.jobs[i].id == id {
			return v.jobs[i]
		}
	}
	return nil
}

// close cancels the running job, waits for it to end, and lets no other start.
func (v *verifyJobs) close() {
	v.mu.Lock()
	v.closed = true
	j := v.running
	v.mu.Unlock()
	if j != nil {
		j.cancel()
		<-j.done
	}
}

// handleVerifyStart serves POST /admin/verify.
func (s *Server) handleVerifyStart(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	if r.ContentLength != 0 { // a body, or one of unknown length: JSON, and nothing but {}
		if !s.jsonBody(w, r) {
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxVerifyBodyBytes))
		if err != nil {
			s.fail(w, r, requestError(r, err))
			return
		}
		if b := bytes.Trim(body, " \t\r\n"); len(b) > 0 && !isEmptyObject(b) {
			s.fail(w, r, badRequest("the body must be empty or {}: a verification takes no options"))
			return
		}
	}
	j, started := s.verify.start(s.store, s.log)
	switch {
	case j == nil:
		s.fail(w, r, &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: "the server is shutting down"})
	case !started:
		s.fail(w, r, &apiError{Status: http.StatusConflict, Code: codeVerifyRunning,
			Message: "a verification is running already: see GET /admin/verify/" + j.id, ID: j.id})
	default:
		w.Header().Set("Location", "/admin/verify/"+j.id)
		writeJSON(w, http.StatusAccepted, map[string]string{"id": j.id, "state": verifyjson.StateRunning})
	}
}

// isEmptyObject reports whether b is {} with JSON whitespace inside at most.
func isEmptyObject(b []byte) bool {
	return len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}' && len(bytes.Trim(b[1:len(b)-1], " \t\r\n")) == 0
}

// verifyJobOf returns the job the request names (the latest without an {id}), or answers 400 or
// 404 and returns nil.
func (s *Server) verifyJobOf(w http.ResponseWriter, r *http.Request) *verifyJob {
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return nil
	}
	id := r.PathValue("id")
	if id != "" {
		if u, err := uuid.Parse(id); err != nil || u.String() != id {
			s.fail(w, r, badRequest("%q is not a verification ID: those are lowercase UUIDs, as POST /admin/verify answers", id))
			return nil
		}
	}
	j := s.verify.find(id)
	if j == nil {
		msg := "no verification with ID " + id + " (the server keeps its last " + strconv.Itoa(MaxVerifyJobs) + ", in memory)"
		if id == "" {
			msg = "no verification has run on this server since it started"
		}
		s.fail(w, r, &apiError{Status: http.StatusNotFound, Code: codeVerifyNotFound, Message: msg})
	}
	return j
}

// handleVerifyJob serves GET /admin/verify/{id} and GET /admin/verify (the latest job).
func (s *Server) handleVerifyJob(w http.ResponseWriter, r *http.Request) {
	if j := s.verifyJobOf(w, r); j != nil {
		writeJSON(w, http.StatusOK, j.view())
	}
}

// handleVerifyCancel serves DELETE /admin/verify/{id}: it cancels the job if it runs, and waits
// until it has stopped.
func (s *Server) handleVerifyCancel(w http.ResponseWriter, r *http.Request) {
	j := s.verifyJobOf(w, r)
	if j == nil {
		return
	}
	j.cancel()
	select {
	case <-j.done:
	case <-r.Context().Done():
		s.fail(w, r, requestError(r, r.Context().Err()))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
