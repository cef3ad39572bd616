package blockq

import "context"

// Admitted returns the number of requests admitted and not yet completed:
// queued, waiting to be queued on a full queue, or with the driver.
func Admitted(q *Queue) int { return int(q.usage.Load() & countMask) }

// Dying reports whether Kill has begun.
func Dying(q *Queue) bool {
	select {
	case <-q.dying:
		return true
	default:
		return false
	}
}

// KillWithoutDrain is the bug this package exists to prevent, kept for the
// checker to catch: an unplug that refuses new submissions and returns at
// once, leaving the driver call in flight running and the requests already
// queued to be dispatched to the driver afterwards. The real drain runs
// later on a goroutine accounted to the log, so nothing leaks.
func (q *Queue) KillWithoutDrain() {
	q.refuse()
	q.killed.Store(true) // "Kill has returned"
	q.log.Go(q.obj+" late drain", func() {
		ctx := context.Background()
		_ = q.drain(ctx) // queued requests still reach the driver: it was not severed
		_ = q.stopWorkers(ctx)
		_ = q.s.Sever(ctx)
	})
}
