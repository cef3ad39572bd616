package blockq

import "context"

// Driver is the provider side of a Queue: the code that performs requests.
// It is the only callback a Queue makes.
type Driver interface {
	// QueueRq performs rq and returns its result, which becomes the result
	// of the Submit that carried rq.
	//
	// When and how many times: once for each submitted request that
	// reaches the driver, never more. A request that is failed before
	// dispatch — by Kill (ErrNoDevice) or because its submitter's ctx was
	// done while it was queued — never reaches QueueRq.
	//
	// On which goroutine: on one of the queue's worker goroutines, never
	// the submitter's. Up to the queue's depth of calls run at once, each
	// for a different request.
	//
	// What may already be gone: the submitter's ctx may be done (the
	// driver should honour ctx and return early with ctx.Err()); the queue
	// may be frozen or dying, but a call that has begun always runs to its
	// end, and Kill waits for it. No call begins once Kill has begun
	// severing the driver, and none runs after Kill has returned: from
	// then on the driver may free its state and its code may go.
	//
	// What it may touch: rq's fields, including the bytes of rq.Data, and
	// the driver's own state, until it returns. It must not keep rq or
	// rq.Data, or hand them to other goroutines that outlive the call. It
	// must not call Freeze or Kill on its own queue: both wait for this
	// call and would deadlock until their ctx is done (to unplug itself,
	// a driver starts Kill on another goroutine). Submit to its own queue
	// may deadlock once the queue is full.
	//
	// May it block: yes, as long as it must — a call that blocks holds up
	// Freeze and Kill, so it should honour ctx. It must not call
	// runtime.Goexit (t.FailNow in a test): the request would never
	// complete. A panic is recovered: the request fails with an error
	// wrapping sever.ErrIO, check.DriverFault is recorded in the queue's
	// log, and the queue keeps working.
	QueueRq(ctx context.Context, rq *Request) error
}

// DriverFunc adapts a function to a Driver. Its contract is
// Driver.QueueRq's.
type DriverFunc func(ctx context.Context, rq *Request) error

// QueueRq calls f(ctx, rq).
func (f DriverFunc) QueueRq(ctx context.Context, rq *Request) error { return f(ctx, rq) }
