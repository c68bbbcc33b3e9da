package estuite

import (
	"sync"
	"sync/atomic"
)

// dirtySignal records which dirty-marker shards this process wrote to since the dispatcher last
// looked, and wakes the dispatcher.
type dirtySignal struct {
	shards atomic.Uint64 // bit i: shard i
	wake   chan struct{} // capacity 1
}

func (d *dirtySignal) init() { d.wake = make(chan struct{}, 1) }

func (d *dirtySignal) mark(shard int) {
	d.shards.Or(1 << shard)
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// take returns the shards marked since the last take, and clears them.
func (d *dirtySignal) take() []int {
	bits := d.shards.Swap(0)
	var out []int
	for i := 0; i < dirtyShards; i++ {
		if bits&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// headWatch publishes the highest feed position this process knows of, and lets waiters block
// until it moves.
type headWatch struct {
	mu      sync.Mutex
	head    int64
	changed chan struct{} // closed and replaced on every advance
}

func (w *headWatch) init() { w.changed = make(chan struct{}) }

// publish raises the known head to pos and wakes every waiter.
func (w *headWatch) publish(pos int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pos <= w.head {
		return
	}
	w.head = pos
	close(w.changed)
	w.changed = make(chan struct{})
}

// current returns the known head and a channel closed when it next advances.
func (w *headWatch) current() (int64, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.head, w.changed
}
