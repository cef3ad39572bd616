package sever

import "sync"

// latch is a one-time broadcast: once closed it stays closed, and the
// channel done returns is closed from then on. The channel is made only
// when someone asks for it, so an object that is severed with nobody
// waiting — most kernfs nodes, most scopes — never allocates or closes
// one. The zero latch is open.
//
//	open ──close──▶ closed
//
// done and close may be called concurrently and repeatedly; close after
// the first does nothing.
type latch struct {
	mu     sync.Mutex
	ch     chan struct{} // nil until done is called
	closed bool
}

// done returns a channel that is closed once l is closed (already closed if
// l is).
func (l *latch) done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ch == nil {
		l.ch = make(chan struct{})
		if l.closed {
			close(l.ch)
		}
	}
	return l.ch
}

// close closes l and the channel done returned, if any.
func (l *latch) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if l.ch != nil {
		close(l.ch)
	}
}
