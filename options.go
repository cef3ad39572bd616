package sever

import (
	"time"

	"github.com/sever-dev/sever/check"
)

// An Option configures a primitive at construction.
type Option func(*options)

type options struct {
	log        *check.Log
	tracking   bool
	watchAfter time.Duration
	watch      func(string)
	observer   *observerHook // WithObserver; nil: nothing reported
}

// WithLog reports contract violations and missed deadlines into l instead of
// panicking or staying silent: a misuse that changes nothing (an Exit of a
// Token that is not inside, say) is recorded as check.Misuse and the call
// returns, where without a log it panics. A simulated machine passes its own
// log to every primitive it creates.
func WithLog(l *check.Log) Option { return func(o *options) { o.log = l } }

// WithTracking records, for every reference or access taken, its tag and
// the stack that took it, so leaks and stuck severs name their holders. It
// costs an allocation and a stack walk per acquisition; without it the
// acquisition paths allocate nothing.
func WithTracking() Option { return func(o *options) { o.tracking = true } }

// WithWatchdog makes every Sever of an Active that is still waiting after
// d (5 s if d <= 0) call report once, on the severing goroutine, with a
// line saying which object, how many accesses are still inside and, with
// WithTracking, where each was taken. The Sever goes on waiting. report
// must not block or Sever. Without it a stuck Sever waits silently until
// its context is done.
func WithWatchdog(d time.Duration, report func(line string)) Option {
	if d <= 0 {
		d = 5 * time.Second
	}
	return func(o *options) { o.watchAfter, o.watch = d, report }
}

func buildOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// LogOf returns the check.Log given by WithLog among opts, or nil. Packages
// built on the core (kernfs, device) use it to register their own
// instruments — a Pending per open, a Go per deferred callback — in the
// same log as the primitives they create with the same options.
func LogOf(opts ...Option) *check.Log { return buildOptions(opts).log }
