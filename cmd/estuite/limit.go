package main

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxConnections is how many connections `estuite serve` holds open at once by default.
const DefaultMaxConnections = 1024

// limitListener is a net.Listener that holds at most cap(slots) connections open at once. When
// that many are open, Accept waits until one closes: further connections stay in the kernel's
// listen queue (their clients see a slow connect, not an error), and no work is spent on them.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	log      *slog.Logger
	lastWarn atomic.Int64 // UnixNano of the last "cap reached" warning
}

// warnEvery is the least time between two warnings that the connection cap is reached.
const warnEvery = time.Minute

func newLimitListener(ln net.Listener, max int, log *slog.Logger) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, max), done: make(chan struct{}), log: log}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		if now := time.Now().UnixNano(); l.log != nil && now-l.lastWarn.Load() >= int64(warnEvery) {
			l.lastWarn.Store(now)
			l.log.Warn("connection limit reached: new connections wait until one closes (see --max-connections)", "max_connections", cap(l.slots))
		}
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

// Close closes the listener, and ends an Accept that waits for a slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn is a connection that gives its slot back when it is closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
