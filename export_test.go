package estuite

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
