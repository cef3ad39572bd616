package sever

import "github.com/sever-dev/sever/check"

// An Option configures a primitive at construction.
type Option func(*options)

type options struct {
	log      *check.Log
	tracking bool
	observer *observerHook // WithObserver; nil: nothing reported
}

// WithLog reports contract violations and missed deadlines into l instead of
// panicking or staying silent. A simulated machine passes its own log to
// every primitive it creates.
func WithLog(l *check.Log) Option { return func(o *options) { o.log = l } }

// WithTracking records, for every reference or access taken, its tag and
// the stack that took it, so leaks and stuck severs name their holders. It
// costs an allocation and a stack walk per acquisition; without it the
// acquisition paths allocate nothing.
func WithTracking() Option { return func(o *options) { o.tracking = true } }

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
