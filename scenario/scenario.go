// Package scenario runs the seed threads' scenarios on simulated machines,
// each in two variants, and gives the checker's verdict.
//
// A scenario is one seed's situation — a cp2112 unplugged under its
// consumers (000), a PSI trigger polled across rmdir (002), a SCSI delete
// attribute outliving its modules (004) — written twice against the same
// simulated machine:
//
//   - Correct: the drivers use sever's API the way a driver author would.
//     The checker must record nothing, and every consumer must see the
//     contract (its calls succeed before the removal and fail with ENODEV,
//     or the errno the seed names, after it).
//   - Naive: one driver is written the way the seed says the bug happened.
//     The checker must record the class of failure the seed describes.
//
// Every run takes a seed: a math/rand source chooses where the unplug,
// unload or rmdir lands among the consumers' operations, whether it runs
// concurrently with some of them, and how goroutines yield, so that a
// verdict holds over many interleavings (see Run.Interleave).
//
// Adding a scenario is adding a file: a function returning its Scenarios,
// listed once in the table of All.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim"
)

// table lists the functions that contribute scenarios, one per seed file
// (seed000.go, …). A new seed's scenarios are added by adding its function
// here.
var table = []func() []Scenario{
	seed000,
	seed001,
	seed002,
	seed003,
	seed004,
}

// All returns every scenario, in seed order.
func All() []Scenario {
	var out []Scenario
	for _, f := range table {
		out = append(out, f()...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seed < out[j].Seed })
	return out
}

// Find returns the scenario named name.
func Find(name string) (Scenario, bool) {
	for _, s := range All() {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Variant is how a scenario's drivers are written.
type Variant int

// The variants.
const (
	Correct Variant = iota // written against sever's API; must be clean
	Naive                  // written as the seed's bug; must be caught
)

// Variants lists both variants.
func Variants() []Variant { return []Variant{Correct, Naive} }

// String returns "correct" or "naive".
func (v Variant) String() string {
	if v == Naive {
		return "naive"
	}
	return "correct"
}

// Scenario is one seed situation in both variants.
type Scenario struct {
	Name  string // short and unique: "psi-rmdir"
	Seed  string // the seed thread's number: "002"
	Doc   string // where the seed is described: "DESIGN.md#seed-002"
	Title string // what happens, in one line
	// Bug says what the naive variant plants, in one line.
	Bug string
	// Catches is the class of violation the naive variant must produce.
	Catches check.Class
	// Tracking runs the naive variant on a machine that records who takes
	// every reference and access, for a bug whose verdict must name its
	// holders (a deadlock found by a deadline).
	Tracking bool
	// Run plays the scenario on r.M. It returns an error only when it could
	// not play (a set-up step failed); a broken promise is r.Failf.
	Run func(r *Run) error
}

// Result is one run's outcome.
type Result struct {
	Scenario   Scenario
	Variant    Variant
	Seed       int64
	Ops        int64             // operations the scenario ran
	Violations []check.Violation // everything the machine's log recorded
	Summary    map[check.Class]int
	Failures   []string // promises the scenario saw broken (errnos, wake-ups)
	Err        error    // the scenario could not be played, or the teardown failed
	Events     []sim.Event
	Elapsed    time.Duration
}

// Pass reports the verdict: a correct run passes when the log is clean,
// no promise broke and nothing failed; a naive run passes when the checker
// recorded the class the scenario says it catches.
func (res Result) Pass() bool {
	if res.Variant == Naive {
		return res.Summary[res.Scenario.Catches] > 0
	}
	return len(res.Violations) == 0 && len(res.Failures) == 0 && res.Err == nil
}

// Verdict returns "clean", "caught" or "FAIL".
func (res Result) Verdict() string {
	switch {
	case !res.Pass():
		return "FAIL"
	case res.Variant == Naive:
		return "caught"
	default:
		return "clean"
	}
}

// RunTimeout bounds one run, teardown included. A run that needs it has
// hung: the removal or the scenario did not finish.
const RunTimeout = 20 * time.Second

// Execute plays sc in variant v on a fresh machine with the given seed,
// quiesces the machine and returns the verdict's material. opts configure
// the machine.
func Execute(ctx context.Context, sc Scenario, v Variant, seed int64, opts ...sim.Option) Result {
	ctx, cancel := context.WithTimeout(ctx, RunTimeout)
	defer cancel()
	if sc.Tracking && v == Naive {
		opts = append(opts[:len(opts):len(opts)], sim.WithTracking())
	}
	m := sim.New(fmt.Sprintf("%s/%s/%d", sc.Name, v, seed), opts...)
	r := &Run{M: m, Variant: v, Rand: rand.New(rand.NewSource(seed)), ctx: ctx}
	start := time.Now()
	err := r.play(sc.Run)
	r.wg.Wait()
	vs, qerr := m.Quiesce(ctx)
	res := Result{
		Scenario:   sc,
		Variant:    v,
		Seed:       seed,
		Ops:        r.ops.Load(),
		Violations: vs,
		Summary:    summarize(vs),
		Failures:   r.failures,
		Err:        errors.Join(err, qerr),
		Events:     m.Trace().Events(),
		Elapsed:    time.Since(start),
	}
	return res
}

func summarize(vs []check.Violation) map[check.Class]int {
	out := make(map[check.Class]int)
	for _, v := range vs {
		out[v.Class]++
	}
	return out
}

// Run is one play of a scenario: its machine, its variant, its random
// source, and the bookkeeping of operations and broken promises.
type Run struct {
	M       *sim.Machine
	Variant Variant
	// Rand chooses the interleaving. It is for the scenario's own
	// goroutine; actors started with Go get their own from Fork.
	Rand *rand.Rand

	ctx      context.Context
	ops      atomic.Int64
	mu       sync.Mutex
	failures []string
	wg       sync.WaitGroup
}

func (r *Run) play(fn func(*Run) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			buf := make([]byte, 8<<10)
			buf = buf[:runtime.Stack(buf, false)]
			err = fmt.Errorf("scenario panicked: %v\n%s", p, buf)
		}
	}()
	return fn(r)
}

// Context returns the run's context: it ends at the run's deadline.
func (r *Run) Context() context.Context { return r.ctx }

// Naive reports whether this is the naive variant.
func (r *Run) Naive() bool { return r.Variant == Naive }

// Step records a scenario step — what a process or the operator does — in
// the machine's trace and counts it as an operation.
func (r *Run) Step(format string, args ...any) {
	r.ops.Add(1)
	r.M.Record(sim.KindStep, "scenario", fmt.Sprintf(format, args...))
}

// Close closes c, a handle the scenario opened (a file, a line, an
// adapter reference), and records a broken promise if Close fails: a
// handle's first Close succeeds whether or not its provider is gone
// (DESIGN.md rule 2). what names the handle in the message.
func (r *Run) Close(what string, c interface{ Close() error }) {
	if err := c.Close(); err != nil {
		r.Failf("close %s: %v; want nil", what, err)
	}
}

// Op counts one operation without tracing it.
func (r *Run) Op() { r.ops.Add(1) }

// Failf records a broken promise: something a consumer saw that the
// contract rules out. It fails a correct run.
func (r *Run) Failf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.failures = append(r.failures, msg)
	r.mu.Unlock()
	r.M.Record(sim.KindStep, "scenario", "PROMISE BROKEN: "+msg)
}

// Go runs fn on a goroutine of its own, an actor of the scenario (a
// process polling, a thread doing I/O). Execute waits for every actor
// before it quiesces the machine, so fn must end by itself, at the latest
// when the run's context ends. rng is the actor's own random source,
// forked from the run's.
func (r *Run) Go(fn func(rng *rand.Rand)) {
	rng := r.Fork()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn(rng)
	}()
}

// Fork returns a new random source seeded from the run's.
func (r *Run) Fork() *rand.Rand { return rand.New(rand.NewSource(r.Rand.Int63())) }

// Yield gives other goroutines a chance to run, a random number (0-3) of
// times: the run's seed shapes the interleaving.
func Yield(rng *rand.Rand) {
	for range rng.Intn(4) {
		runtime.Gosched()
	}
}

// Op is one consumer operation of Interleave.
type Op struct {
	Name string
	Do   func() error
	// Gone lists the errors the operation may fail with once the
	// disruption has happened (errors.Is): sever.ErrNoDevice for a call
	// through a handle, sever.ErrNotExist for an open by path. Empty: the
	// operation must keep succeeding (it does not reach the provider).
	Gone []error
}

// Interleave runs ops in order with disrupt — the unplug, the rmmod, the
// rmdir — landing at a place the run's seed chooses: between two ops, or
// on a goroutine of its own running concurrently with a window of them.
// It checks each op against the contract: an op that returned before the
// disruption began must have succeeded; one that began after the
// disruption returned must fail with one of its Gone errors (or succeed,
// if it has none); one that overlapped may do either. It returns the
// disruption's error.
func (r *Run) Interleave(ops []Op, disrupt Op) error {
	k := r.Rand.Intn(len(ops) + 1)
	window := 0
	if r.Rand.Intn(2) == 0 {
		window = r.Rand.Intn(len(ops) - k + 1)
	}
	var began, ended atomic.Bool
	var derr error
	done := make(chan struct{})
	startDisrupt := func() {
		rng := r.Fork()
		go func() {
			defer close(done)
			Yield(rng)
			r.Step("%s", disrupt.Name)
			began.Store(true)
			derr = disrupt.Do()
			ended.Store(true)
		}()
	}
	for i, op := range ops {
		if i == k {
			startDisrupt()
			if window == 0 {
				<-done
			}
		}
		if i == k+window && window > 0 {
			<-done
		}
		after := ended.Load()
		r.Op()
		err := op.Do()
		before := !began.Load()
		r.M.Record(sim.KindStep, "scenario", op.Name+": "+outcome(err))
		r.check(op, err, before, after)
		Yield(r.Rand)
	}
	if k == len(ops) {
		startDisrupt()
	}
	<-done
	return derr
}

// outcome names an operation's result for the trace.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return sever.Errno(err).Error()
}

func (r *Run) check(op Op, err error, before, after bool) {
	switch {
	case err == nil:
		if after && len(op.Gone) > 0 && r.Variant == Correct {
			// A call that reached the provider after it was gone.
			r.Failf("%s after the removal succeeded; want one of %v", op.Name, op.Gone)
		}
	case before:
		r.Failf("%s before the removal: %v", op.Name, err)
	case !slices.ContainsFunc(op.Gone, func(e error) bool { return errors.Is(err, e) }):
		r.Failf("%s: %v; want one of %v", op.Name, err, op.Gone)
	}
}

// ExpectGone checks that err reports the provider gone (errors.Is one of
// want, sever.ErrNoDevice if want is empty), or records a broken promise.
func (r *Run) ExpectGone(what string, err error, want ...error) {
	if len(want) == 0 {
		want = []error{sever.ErrNoDevice}
	}
	if err == nil || !slices.ContainsFunc(want, func(e error) bool { return errors.Is(err, e) }) {
		r.Failf("%s: got %v, want one of %v", what, err, want)
	}
}

// ClassList formats a summary as "UseAfterFree×2 CallIntoGoneOwner×1" in
// the order of check.Classes, or "-" when empty.
func ClassList(sum map[check.Class]int) string {
	var parts []string
	for _, c := range check.Classes() {
		if n := sum[c]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s×%d", c, n))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
