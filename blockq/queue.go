// Package blockq is a block request queue that can freeze, drain and kill
// itself, so that a block driver can unregister at once and its code can go
// (seed 004's request queue that drains and kills itself: DESIGN.md,
// "Seed 004", §2-1).
package blockq

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// Queue carries requests from submitters to a Driver, the role of the
// kernel's request_queue with blk-mq's freeze and dying states. Submit is
// synchronous: it queues the request, a worker goroutine owned by the queue
// calls the driver's QueueRq, and Submit returns the driver's error.
//
//	// submitter
//	err := q.Submit(ctx, &blockq.Request{Op: blockq.OpRead, Sector: 8, Data: buf})
//
//	// driver, on unplug
//	q.Kill(ctx) // the driver is never called again
//	free(hw)
//
// States, as in the code:
//
//	          Freeze ┌──────────┐ last Unfreeze
//	live ◀──────────▶│  frozen  │
//	  │              └──────────┘
//	  │ Kill              │ Kill
//	  ▼                   ▼
//	dying ──driver drained, queued requests failed, workers gone──▶ dead
//
// In live, Submit admits requests. In frozen, Submit waits (honouring its
// ctx) and requests already admitted run to completion; Freeze returns
// once none is left. Freeze nests: the queue is live again after as many
// Unfreeze calls as there were Freezes. From the first Kill on the queue
// is dying: Submit fails at once with an error wrapping sever.ErrNoDevice,
// submitters waiting on a freeze wake with the same error, driver calls in
// flight run to their end, and requests queued but not yet given to the
// driver complete with ErrNoDevice. When the last worker has exited the
// queue is dead and Kill returns. Freeze still works on a dying or dead
// queue (it waits for the same drain), and Unfreeze never revives one.
//
// A driver whose code belongs to an unloadable module says so with
// OwnedBy: every driver call then pins that owner for the call (and is
// refused once it is unloading), and unloading the owner kills the queue
// first — so no driver call starts after the unload has begun and none is
// still running when it returns.
//
// Admission is q_usage_counter-style: one word holds the gate flags and
// the number of admitted requests, so a submitter is admitted by a single
// atomic add that also reads the gate, and the last request to complete
// while the gate is closed wakes the freezer or killer. Driver calls are
// made through a sever.Scope — the protocol's one Call: enter, pin the
// driver's owner, recover a panic, exit — severed by Kill; that is where
// "no driver call after Kill returns" comes from. Cost on top of a plain
// channel queue: two atomic adds on the shared word, the scope's enter and
// exit (and an owner pin, with an owner), and one uncontended
// compare-and-swap on the Request; nothing is allocated when a Request is
// reused.
//
// Every error the queue makes names it ("blockq: ram0: no such device")
// and satisfies errors.Is with its errno (or with the context's error);
// the driver's own errors reach the submitter unchanged. Every Queue must
// be killed: its workers run until Kill.
type Queue struct {
	name   string
	obj    string // "blockq: " + name, the object in errors and violations
	driver Driver
	log    *check.Log
	gone   error // what Submit returns once dying

	// usage is the gate and the admission count: flagFrozen and flagDying
	// in the high bits, the number of requests admitted and not yet
	// completed in the low bits (plus, for an instant, submitters that are
	// about to find the gate closed and back out).
	usage atomic.Int64

	reqs    chan *Request // admitted requests; closed once dying and empty
	s       *sever.Scope  // every driver call goes through it; severed by Kill
	site    string        // "blockq: <name>: QueueRq"
	unhook  func()        // takes Kill off the owner's unload hooks
	killed  atomic.Bool   // Kill has returned: the driver must never run again
	running atomic.Int32  // workers not yet exited
	stopped chan struct{} // closed by the last worker to exit
	dying   chan struct{} // closed when Kill begins

	mu         sync.Mutex
	depth      int           // Freeze nesting
	isDying    bool          // Kill has begun; dying is closed
	thaw       chan struct{} // while frozen and not dying: closed when the gate reopens or Kill begins
	idle       chan struct{} // while the gate is closed: closed once no request is admitted; nil while open
	idleClosed bool
	stopOnce   sync.Once
	finishing  sync.Once // a Kill past its deadline hands the rest to a goroutine
}

const (
	flagFrozen int64 = 1 << 62 // gate closed by Freeze
	flagDying  int64 = 1 << 61 // gate closed by Kill, for ever
	gateClosed       = flagFrozen | flagDying
	countMask  int64 = 1<<61 - 1
)

// New returns a live queue named name (the name appears in errors and
// violations) that hands its requests to d, and starts its worker
// goroutines. depth bounds the queue: at most depth driver calls run at once
// (the queue owns depth workers) and at most depth more requests wait
// queued; further submitters block in Submit until there is room. depth 0
// means GOMAXPROCS; New panics if d is nil or depth is negative.
//
// With sever.WithLog the queue reports into the log: a driver called after
// Kill returned (check.CallbackAfterSever), a driver panic
// (check.DriverFault), a Kill past its deadline (check.SeverTimeout), and its
// workers are accounted for (check.GoroutineLeft at Quiesce if the queue was
// never killed). Without a log a driver panic is reported only through the
// failed request, and a driver called after Kill panics the process. With
// sever.WithTracking a Kill past its deadline names the requests in flight.
//
// If d came from OwnedBy, the queue joins its owner's unload: the owner's
// Unload kills the queue before the owner goes. A queue whose owner is not
// live is dying from the start.
func New(name string, d Driver, depth int, opts ...sever.Option) *Queue {
	log := sever.LogOf(opts...)
	depth = depthOrDefault(depth)
	if d == nil {
		panic(fmt.Sprintf("blockq: New(%q) with a nil Driver", name))
	}
	if depth < 1 {
		panic(fmt.Sprintf("blockq: New(%q) with depth %d; want at least 1", name, depth))
	}
	obj := "blockq: " + name
	q := &Queue{
		name:    name,
		obj:     obj,
		driver:  d,
		log:     log,
		gone:    &sever.ObjectError{Object: obj, Err: sever.ErrNoDevice},
		reqs:    make(chan *Request, depth),
		site:    obj + ": QueueRq",
		stopped: make(chan struct{}),
		dying:   make(chan struct{}),
	}
	var owner *sever.Owner
	if od, ok := d.(interface{ Owner() *sever.Owner }); ok {
		owner = od.Owner()
	}
	q.s = sever.NewScope(obj, owner, opts...)
	q.running.Store(int32(depth))
	for range depth {
		q.log.Go(obj+" worker", q.worker)
	}
	if owner != nil {
		unhook, err := owner.OnUnload(obj, q.Kill)
		if err != nil {
			_ = q.Kill(context.Background()) // nothing was submitted: it returns at once
			return q
		}
		q.mu.Lock()
		q.unhook = unhook
		q.mu.Unlock()
	}
	return q
}

// OwnedBy returns d as a driver whose code is o's (a module's): a Queue
// made with it pins o for every driver call and is killed by o's Unload
// before o goes. The returned Driver's QueueRq is d's.
func OwnedBy(o *sever.Owner, d Driver) Driver { return ownedDriver{o: o, d: d} }

type ownedDriver struct {
	o *sever.Owner
	d Driver
}

func (od ownedDriver) QueueRq(ctx context.Context, rq *Request) error { return od.d.QueueRq(ctx, rq) }
func (od ownedDriver) Owner() *sever.Owner                            { return od.o }

// Name returns the name given to New.
func (q *Queue) Name() string { return q.name }

// Submit queues rq, waits for the driver to perform it, and returns the
// driver's error. It may be called from any number of goroutines at once.
//
// Before rq is admitted, Submit honours ctx: while the queue is frozen or
// full it waits, and if ctx is done first it returns an error wrapping
// ctx.Err() without rq reaching the driver. If ctx is done while rq waits
// for a worker, rq completes with that error, again without reaching the
// driver. Once the driver has rq, Submit waits for QueueRq to return
// whatever ctx does — the driver is using rq's buffer — and passes ctx to
// the driver, which should honour it.
//
// On a dying or dead queue, and for a request still queued when Kill
// began, Submit returns an error wrapping sever.ErrNoDevice (errors.Is(err,
// syscall.ENODEV) holds). If the driver panics, Submit returns an error
// wrapping sever.ErrIO. Submitting a Request whose previous Submit has not
// returned panics.
func (q *Queue) Submit(ctx context.Context, rq *Request) error {
	if !rq.busy.CompareAndSwap(false, true) {
		panic(fmt.Sprintf("blockq: queue %q: Submit of a Request already in flight", q.name))
	}
	err := q.submit(ctx, rq)
	rq.busy.Store(false)
	return err
}

func (q *Queue) submit(ctx context.Context, rq *Request) error {
	if err := q.enter(ctx); err != nil {
		return err
	}
	if rq.done == nil {
		rq.done = make(chan struct{}, 1)
	}
	rq.ctx, rq.err = ctx, nil
	select {
	case q.reqs <- rq:
	default:
		if err := q.send(ctx, rq); err != nil {
			rq.ctx = nil
			q.exit()
			return err
		}
	}
	<-rq.done
	err := rq.err
	rq.ctx, rq.err = nil, nil
	return err
}

// send queues rq on a full queue, giving up if ctx is done or Kill begins.
func (q *Queue) send(ctx context.Context, rq *Request) error {
	select {
	case q.reqs <- rq:
		return nil
	case <-q.dying:
		return q.gone
	case <-ctx.Done():
		return q.ctxErr(ctx)
	}
}

// enter admits one request: it returns nil once the caller is counted in
// usage with the gate open, or an error (dying: ErrNoDevice; ctx done) and
// no count.
func (q *Queue) enter(ctx context.Context) error {
	for {
		w := q.usage.Add(1)
		if w&gateClosed == 0 {
			return nil
		}
		q.exit() // back out; if we were the last count, wake the closer
		if w&flagDying != 0 {
			return q.gone
		}
		if err := q.waitOpen(ctx); err != nil {
			return err
		}
	}
}

// waitOpen waits until the gate may be open again: nil to retry, or an
// error if the queue is dying or ctx is done.
func (q *Queue) waitOpen(ctx context.Context) error {
	q.mu.Lock()
	if q.isDying {
		q.mu.Unlock()
		return q.gone
	}
	if q.depth == 0 {
		q.mu.Unlock()
		return nil // unfrozen since we looked
	}
	thaw := q.thaw
	q.mu.Unlock()
	select {
	case <-thaw:
		return nil
	case <-ctx.Done():
		return q.ctxErr(ctx)
	}
}

// exit drops one admission count. The drop that leaves none while the gate
// is closed settles: in the single order of atomics on usage, either it sees
// the closing flag, or the closer's own settle sees its drop.
func (q *Queue) exit() {
	if w := q.usage.Add(-1); w&gateClosed != 0 && w&countMask == 0 {
		q.settle()
	}
}

// settle closes idle if the gate is closed and no request is admitted.
// Once that holds it keeps holding until the gate reopens: a closed gate
// admits nobody.
func (q *Queue) settle() {
	q.mu.Lock()
	if q.idle != nil && !q.idleClosed && q.usage.Load()&countMask == 0 {
		q.idleClosed = true
		close(q.idle)
	}
	q.mu.Unlock()
}

// closeGateLocked makes a fresh idle channel if the gate was open.
func (q *Queue) closeGateLocked() {
	if q.idle == nil {
		q.idle = make(chan struct{})
		q.idleClosed = false
	}
}

// Freeze closes the queue to new requests and waits until every request
// already admitted has completed: the driver is then idle and stays idle
// until the last Unfreeze. Submitters that arrive meanwhile wait in Submit.
// Freeze nests, and may be called from any goroutine, concurrently with
// anything — but not from inside the driver's QueueRq, which it would wait
// for.
//
// Freeze returns nil once the queue is empty; every nil return must be
// matched by one Unfreeze. If ctx is done first, Freeze undoes its own
// freeze and returns an error wrapping ctx.Err(); no Unfreeze is due. On a
// dying or dead queue Freeze waits for Kill's drain and returns nil.
func (q *Queue) Freeze(ctx context.Context) error {
	q.mu.Lock()
	q.depth++
	if q.depth == 1 && !q.isDying {
		q.closeGateLocked()
		q.thaw = make(chan struct{})
		q.usage.Or(flagFrozen)
	}
	idle := q.idle
	q.mu.Unlock()
	q.settle() // the queue may already be empty
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}
	select {
	case <-idle: // both were ready: the freeze succeeded
		return nil
	default:
		n := q.usage.Load() & countMask
		q.Unfreeze()
		return &sever.ObjectError{Object: q.obj, Err: fmt.Errorf("freeze: %d requests still in flight: %w", n, ctx.Err())}
	}
}

// Unfreeze undoes one Freeze that returned nil. When the last is undone,
// submitters waiting on the freeze are admitted. Unfreeze never reopens a
// dying or dead queue. Unfreeze without a matching Freeze panics.
func (q *Queue) Unfreeze() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.depth == 0 {
		panic(fmt.Sprintf("blockq: queue %q: Unfreeze without Freeze", q.name))
	}
	q.depth--
	if q.depth > 0 || q.isDying {
		return
	}
	q.usage.And(^flagFrozen)
	q.idle = nil // the gate is open: the next close makes a fresh one
	close(q.thaw)
	q.thaw = nil
}

// Kill unplugs the queue. From its first call on, every Submit fails at
// once with an error wrapping sever.ErrNoDevice (submitters waiting on a
// freeze too); driver calls in flight run to their end; requests queued
// but not yet given to the driver complete with ErrNoDevice; the workers
// exit. Kill returns nil when all that is done: the driver will never be
// called again, its state may be freed and its code may go, and the queue
// holds no goroutine.
//
// Kill does not run what is queued. To finish queued work first, Freeze
// (which lets every admitted request run) and then Kill.
//
// If ctx is done first — a driver call that does not return — Kill returns
// an error wrapping ctx.Err() naming the queue, records check.SeverTimeout
// in the log given WithLog, and the queue stays dying; the rest of the kill
// goes on in the background, so the workers exit once the stuck call
// returns, and a later Kill waits again. Kill may be called any number of times, concurrently, and races
// freely with Freeze and Unfreeze; every call waits for the same drain. It
// must not be called from inside the driver's QueueRq, which it would wait
// for.
func (q *Queue) Kill(ctx context.Context) error {
	// 1. Refuse: close the gate for ever, fail new and waiting submitters.
	q.refuse()
	// 2. Sever the driver: no call begins from here, and we wait for those
	// running. This comes before the drain so that requests still queued
	// are failed with ErrNoDevice rather than run.
	if err := q.s.Sever(ctx); err != nil {
		q.finishLater()
		return err
	}
	// 3. Drain: the workers fail every queued request; wait until no
	// admitted request is left. Only then is nobody about to send on reqs.
	if err := q.drain(ctx); err != nil {
		q.finishLater()
		return err
	}
	// 4. Stop the workers.
	if err := q.stopWorkers(ctx); err != nil {
		return err
	}
	q.killed.Store(true)
	q.mu.Lock()
	unhook := q.unhook
	q.unhook = nil
	q.mu.Unlock()
	if unhook != nil {
		unhook()
	}
	return nil
}

// finishLater completes a Kill that missed its deadline on a goroutine of
// its own (accounted for by the log), so the workers exit once the stuck
// driver call returns even if no later Kill comes. If the call never
// returns, Quiesce reports that goroutine as left behind.
func (q *Queue) finishLater() {
	q.finishing.Do(func() {
		q.log.Go(q.obj+" kill (after its deadline)", func() {
			ctx := context.Background()
			if q.s.Sever(ctx) == nil && q.drain(ctx) == nil && q.stopWorkers(ctx) == nil {
				q.killed.Store(true)
			}
		})
	})
}

// refuse begins dying, once: it closes the gate for good and wakes every
// submitter waiting on a freeze or on a full queue.
func (q *Queue) refuse() {
	q.mu.Lock()
	if !q.isDying {
		q.isDying = true
		q.closeGateLocked()
		q.usage.Or(flagDying)
		close(q.dying)
		if q.thaw != nil {
			close(q.thaw)
			q.thaw = nil
		}
	}
	q.mu.Unlock()
}

// drain waits until no admitted request is left.
func (q *Queue) drain(ctx context.Context) error {
	q.mu.Lock()
	idle := q.idle
	q.mu.Unlock()
	q.settle()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}
	select {
	case <-idle:
		return nil
	default:
		return q.timeout(ctx, fmt.Sprintf("%d requests not completed", q.usage.Load()&countMask))
	}
}

// stopWorkers closes reqs, which nobody sends on any more, and waits for
// every worker to exit.
func (q *Queue) stopWorkers(ctx context.Context) error {
	q.stopOnce.Do(func() { close(q.reqs) })
	select {
	case <-q.stopped:
		return nil
	case <-ctx.Done():
	}
	select {
	case <-q.stopped:
		return nil
	default:
		return q.timeout(ctx, fmt.Sprintf("%d workers still running", q.running.Load()))
	}
}

func (q *Queue) timeout(ctx context.Context, detail string) error {
	if q.log != nil {
		q.log.Record(check.Violation{Class: check.SeverTimeout, Object: q.obj, Detail: "kill: " + detail + ": " + ctx.Err().Error()})
	}
	return &sever.ObjectError{Object: q.obj, Err: fmt.Errorf("kill: %s: %w", detail, ctx.Err())}
}

func (q *Queue) ctxErr(ctx context.Context) error {
	return &sever.ObjectError{Object: q.obj, Err: ctx.Err()}
}

// worker serves reqs until Kill closes it.
func (q *Queue) worker() {
	for rq := range q.reqs {
		q.dispatch(rq)
	}
	if q.running.Add(-1) == 0 {
		close(q.stopped)
	}
}

// dispatch completes rq: by the driver if it is still there and the
// submitter still waits, otherwise with the reason it is not called.
func (q *Queue) dispatch(rq *Request) {
	var err error
	if cerr := rq.ctx.Err(); cerr != nil {
		err = &sever.ObjectError{Object: q.obj, Err: cerr}
	} else {
		var t sever.Token
		if !q.s.Enter(&t) {
			err = q.gone // queued when Kill began, or the owner is unloading
		} else {
			err = q.call(rq)
			q.s.Exit(&t)
		}
	}
	rq.err = err
	rq.done <- struct{}{} // capacity 1, and only this Submit waits on it
	q.exit()
}

// call runs the driver on rq through the scope's one fault policy (owner
// pinned, panic recovered), and checks that Kill has not returned before
// the call began or before it ended.
func (q *Queue) call(rq *Request) error {
	late := q.killed.Load()
	if late {
		q.afterKill("QueueRq called after Kill returned")
	}
	err := q.s.Invoke(q.site, func() error { return q.driver.QueueRq(rq.ctx, rq) })
	if !late && q.killed.Load() {
		q.afterKill("QueueRq still running when Kill returned")
	}
	return err
}

func (q *Queue) afterKill(detail string) {
	q.log.Record(check.Violation{Class: check.CallbackAfterSever, Object: q.obj, Detail: detail, Stack: check.Stack(2)})
}
