package estuite

import (
	"context"

	"github.com/estuite/estuite/table"
)

// SetFeedPageSize makes feed pages hold n positions until the returned function restores the
// default: simulations and tests use small pages so that every schedule crosses pages. Only a
// store created under one page size can be read under it.
func SetFeedPageSize(n int64) (restore func()) {
	old := feedPageSize
	feedPageSize = n
	return func() { feedPageSize = old }
}

// ForgetHeads empties the store's head cache, as in a process that has not met the streams yet.
func (s *Store) ForgetHeads() {
	s.heads.mu.Lock()
	clear(s.heads.heads)
	s.heads.mu.Unlock()
}

// WaitStored waits until the announcement's marker write has ended, and returns its error.
func (an *Announcement) WaitStored() error {
	<-an.stored
	return an.err
}

// AnnounceAndWait is Announce with the marker written on the caller's goroutine (with ctx)
// before it returns: the simulation's actors make their storage calls one at a time.
func (s *Store) AnnounceAndWait(ctx context.Context, stream, commitID string) (*Announcement, error) {
	an, err := s.newAnnouncement(stream, commitID)
	if err != nil {
		return nil, err
	}
	an.write(ctx)
	return an, nil
}

// WithdrawAndWait is Withdraw with the marker's delete made on the caller's goroutine, with ctx.
func (an *Announcement) WithdrawAndWait(ctx context.Context) {
	if an.withdraw() {
		an.delete(ctx)
	}
}

// Backend returns the store's backend, for tests that look at the raw tables.
func (s *Store) Backend() table.Backend { return s.backend }

// StreamTable returns the store's stream table, for tests that look at raw rows.
func (s *Store) StreamTable() table.Table { return s.streams.t }
