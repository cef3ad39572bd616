package stress

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/goleak"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/subsys/irq"
)

// Config is one stress run.
type Config struct {
	// Seed selects every choice of the run: worker w of round r draws its
	// operations from a source derived from (Seed, r, w) alone.
	Seed int64
	// Goroutines is the number of workers; 0 means 8.
	Goroutines int
	// Ops bounds the run by operations (all workers together); Duration
	// bounds it by time. At least one must be set; with both, the first
	// reached ends the run.
	Ops      int64
	Duration time.Duration
	// RoundOps is the number of operations of one round: a fresh machine,
	// the workers' operations, then everything closed and quiesced and
	// audited. 0 means 40000.
	RoundOps int
	// FaultRate is the fraction of operations that plant a fault (sleep,
	// error or panic) in the driver code they reach; 0 means 0.05, a
	// negative value none.
	FaultRate float64
	// Deadline bounds every removal, unload and drain; one that needs
	// longer is a check.SeverTimeout. 0 means 10s.
	Deadline time.Duration
	// Ports, Slots and Controllers size the machine: USB ports for cp2112
	// boards, stress device slots, AHCI controllers. 0 means 4, 3, 2.
	Ports, Slots, Controllers int
	// Replay runs only round Round, with the same choices as in the run it
	// comes from (same Seed, Goroutines, RoundOps and FaultRate).
	Replay bool
	Round  int
	// Serial runs each round's workers one operation at a time, in
	// worker order, on one goroutine: a replay whose interleaving is the
	// same every time.
	Serial bool
	// Progress, if not nil, gets a line per round.
	Progress io.Writer
	// Machine configures every round's machine (sim.WithObserver traces
	// them all).
	Machine []sim.Option
	// Host, if not empty, is the command of a driver host process that
	// serves sim/pc's cp2112 host (pc.ServeHost(ctx, pc.CP2112Host)) on
	// the listener it inherits; HostEnv is added to its environment. Every
	// round's machine then runs that host, whose attributes and char
	// device take part in the mix, and a host-kill operation kill -9s it
	// (the supervisor restarts it). Without a host, host-kill runs as an
	// unplug: a local provider's surprise removal.
	Host    []string
	HostEnv []string
	// Live, if not nil, is kept up to date while the run goes on, for a
	// progress display that samples it from another goroutine.
	Live *Live
}

// Live is a running count of a run's operations and findings, updated as
// they happen (every operation adds one to Ops) and safe to read at any
// time. Several runs may share one, to count a sequence of runs.
type Live struct {
	Ops      atomic.Int64
	Findings atomic.Int64
}

func (c Config) withDefaults() Config {
	if c.Goroutines <= 0 {
		c.Goroutines = 8
	}
	if c.RoundOps <= 0 {
		c.RoundOps = 40000
	}
	if c.FaultRate == 0 {
		c.FaultRate = 0.05
	}
	if c.Deadline <= 0 {
		c.Deadline = 10 * time.Second
	}
	if c.Ports <= 0 {
		c.Ports = 4
	}
	if c.Slots <= 0 {
		c.Slots = 3
	}
	if c.Controllers <= 0 {
		c.Controllers = 2
	}
	return c
}

// hangAfter is how long one operation may run before the watchdog calls
// the run stuck: a removal past its deadline has already been recorded by
// then, so this is a hang the deadline could not end (a deadlock).
func (c Config) hangAfter() time.Duration { return 3*c.Deadline + 5*time.Second }

// KindCount is what happened to the operations of one kind.
type KindCount struct {
	N       int64         // operations run
	OK      int64         // returned nil
	Failed  int64         // returned an error (ENODEV from a shell, EBUSY from a try, ...)
	Skipped int64         // found nothing to act on (no open file, an empty port)
	Max     time.Duration // the longest one took
}

func (k *KindCount) add(o KindCount) {
	k.N += o.N
	k.OK += o.OK
	k.Failed += o.Failed
	k.Skipped += o.Skipped
	k.Max = max(k.Max, o.Max)
}

// Finding is one thing the run found wrong.
type Finding struct {
	Round int
	// Class is a check.Class name for a violation the machine's checker
	// recorded; otherwise "broken promise" (an operation saw what the
	// contract rules out), "fault accounting", "shell leak", "irq leak",
	// "goroutine leak", "teardown", "setup" or "stuck".
	Class  string
	Detail string
	Stack  string
	// Inflight are the operations running when it was found: the one
	// that broke a promise, or every worker's for a violation the checker
	// recorded (it may have come from any of them, or from a goroutine
	// one of them started).
	Inflight []Inflight
}

// Inflight is one worker's operation in progress.
type Inflight struct {
	Worker int
	Step   int64 // the operation's index in the worker's sequence for the round
	Op     Op
	For    time.Duration // how long it had been running
}

func (i Inflight) String() string {
	return fmt.Sprintf("w%d step %d: %v (running %v)", i.Worker, i.Step, i.Op, i.For.Round(time.Microsecond))
}

// Result is a run's outcome: figures and findings.
type Result struct {
	Config  Config
	Rounds  int
	Ops     int64
	Elapsed time.Duration
	Counts  [numKinds]KindCount

	Sleeps, Errors, Panics int64 // faults injected
	ExpectedFaults         int64 // DriverFaults recorded for injected panics
	Releases               int64 // stress char device Releases
	RegionFrees            int64 // regions freed
	Probes                 int64 // stress probes completed
	ShellsOpened           int64
	ShellsFreed            int64
	HostKills              int64 // host processes killed by host-kill
	HostFiles              int64 // the host's attributes and char devices opened

	Findings []Finding
	// Dropped counts, by class, the findings not kept in full: those
	// beyond the first MaxFindings, or beyond the first few of their class.
	Dropped map[string]int
	Stuck   bool

	kept map[string]int // findings kept in full, by class
}

// MaxFindings bounds the findings a Result keeps in full.
const MaxFindings = 50

// maxPerClass bounds the findings of one class a Result keeps in full, so
// that a class found thousands of times (a stranded unload leaves a
// goroutine behind in every later round) cannot crowd out a rarer one.
const maxPerClass = MaxFindings / 5

// OK reports whether the run found nothing wrong.
func (res *Result) OK() bool { return len(res.Findings) == 0 }

// SkipShare is the fraction of the run's operations that found nothing to
// act on (KindCount.Skipped over all kinds).
func (res *Result) SkipShare() float64 {
	var n, skipped int64
	for _, k := range res.Counts {
		n += k.N
		skipped += k.Skipped
	}
	if n == 0 {
		return 0
	}
	return float64(skipped) / float64(n)
}

// OpsPerSecond is the run's throughput.
func (res *Result) OpsPerSecond() float64 {
	if res.Elapsed <= 0 {
		return 0
	}
	return float64(res.Ops) / res.Elapsed.Seconds()
}

// ReplayCommand returns the command that re-runs the round of f
// serialized, with the same choices.
func (res *Result) ReplayCommand(f Finding) string {
	c := res.Config
	return fmt.Sprintf("sever stress --seed %d --goroutines %d --round-ops %d --fault-rate %g --replay %d --serial", c.Seed, c.Goroutines, c.RoundOps, c.FaultRate, f.Round)
}

// harness runs rounds and collects findings.
type harness struct {
	cfg  Config
	stop atomic.Bool

	mu       sync.Mutex
	res      *Result
	workers  []*worker // the current round's
	round    int
	serialAt *worker // in serial mode, the worker whose operation runs
}

// Run runs cfg: rounds of operations from cfg.Goroutines workers on fresh
// simulated machines, each round ended by closing everything, quiescing
// the machine and auditing it, until cfg.Ops operations have run or
// cfg.Duration has passed (or ctx is done). Every violation the machines'
// checkers record, except the driver faults of injected panics, and every
// broken promise and leak the audits find, is a Finding.
func Run(ctx context.Context, cfg Config) *Result {
	if cfg.Ops <= 0 && cfg.Duration <= 0 && !cfg.Replay {
		cfg.Ops = 100000
	}
	cfg = cfg.withDefaults()
	h := &harness{cfg: cfg, res: &Result{Config: cfg, Dropped: map[string]int{}}}
	baseline := goleak.IgnoreCurrent()
	start := time.Now()
	if cfg.Duration > 0 && !cfg.Replay {
		t := time.AfterFunc(cfg.Duration, func() { h.stop.Store(true) })
		defer t.Stop()
	}
	if cfg.Replay {
		h.runRound(ctx, cfg.Round, cfg.RoundOps)
	} else {
		for round := 0; !h.stop.Load() && ctx.Err() == nil; round++ {
			n := cfg.RoundOps
			if cfg.Ops > 0 {
				left := cfg.Ops - h.res.Ops
				if left <= 0 {
					break
				}
				n = int(min(int64(n), left))
			}
			if !h.runRound(ctx, round, n) {
				break
			}
		}
	}
	h.res.Elapsed = time.Since(start)
	if !h.res.Stuck {
		if err := goleak.Find(baseline); err != nil {
			h.add(Finding{Round: -1, Class: "goroutine leak", Detail: err.Error()})
		}
	}
	return h.res
}

// RunOps plays one round in which worker w runs the operations seqs[w],
// in order — a recorded choice sequence, or one decoded from arbitrary
// bytes with Decode — on a machine cfg sizes, and audits it as Run does.
// cfg.Serial runs the workers one operation at a time, in worker order.
// cfg's Seed, Ops, Duration, RoundOps and Replay are not used.
func RunOps(ctx context.Context, cfg Config, seqs [][]Op) *Result {
	if len(seqs) == 0 {
		seqs = [][]Op{nil}
	}
	cfg = cfg.withDefaults()
	cfg.Goroutines = len(seqs)
	h := &harness{cfg: cfg, res: &Result{Config: cfg, Dropped: map[string]int{}}}
	per := make([]int, len(seqs))
	pos := make([]int, len(seqs))
	for i, s := range seqs {
		per[i] = len(s)
	}
	start := time.Now()
	h.play(ctx, 0, per, func(w int) Op { pos[w]++; return seqs[w][pos[w]-1] })
	h.res.Elapsed = time.Since(start)
	return h.res
}

// add keeps f, or only counts it once MaxFindings in all or maxPerClass
// of its class are kept.
func (h *harness) add(f Finding) {
	if l := h.cfg.Live; l != nil {
		l.Findings.Add(1)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.res.Findings) >= MaxFindings || h.res.kept[f.Class] >= maxPerClass {
		h.res.Dropped[f.Class]++
		return
	}
	if h.res.kept == nil {
		h.res.kept = map[string]int{}
	}
	h.res.kept[f.Class]++
	h.res.Findings = append(h.res.Findings, f)
}

// inflight snapshots the operations running now: in serial mode the one,
// otherwise every worker's. h.mu is held.
func (h *harness) inflightLocked() []Inflight {
	ws := h.workers
	if h.serialAt != nil {
		ws = []*worker{h.serialAt}
	}
	var out []Inflight
	now := time.Now()
	for _, w := range ws {
		w.mu.Lock()
		if w.busy {
			out = append(out, Inflight{Worker: w.id, Step: w.step, Op: w.op, For: now.Sub(w.start)})
		}
		w.mu.Unlock()
	}
	return out
}

// violation is the round's observer of the machine's log.
func (h *harness) violation(round int) func(check.Violation) {
	return func(v check.Violation) {
		h.mu.Lock()
		in := h.inflightLocked()
		h.mu.Unlock()
		detail := v.Object + ": " + v.Detail
		for _, hd := range v.Holders {
			detail += "\n\theld by " + firstLine(hd)
		}
		if v.Cause != "" {
			detail += "\n\tcause: " + trimStack(v.Cause, 6)
		}
		h.add(Finding{Round: round, Class: v.Class.String(), Detail: detail, Stack: trimStack(v.Stack, 16), Inflight: in})
	}
}

// promise records a broken promise seen by w's current operation.
func (h *harness) promise(w *worker, format string, args ...any) {
	w.mu.Lock()
	in := []Inflight{{Worker: w.id, Step: w.step, Op: w.op, For: time.Since(w.start)}}
	w.mu.Unlock()
	h.add(Finding{Round: w.r.round, Class: "broken promise", Detail: fmt.Sprintf(format, args...), Inflight: in})
}

// runRound plays round with n operations drawn from the workers'
// generators and audits it. It reports whether the run may go on (false
// when a worker is stuck).
func (h *harness) runRound(ctx context.Context, round, n int) bool {
	cfg := h.cfg
	gens := make([]*generator, cfg.Goroutines)
	per := make([]int, cfg.Goroutines)
	for i := range gens {
		gens[i] = newGenerator(cfg.Seed, round, i, cfg.FaultRate)
		per[i] = n / cfg.Goroutines
		if i < n%cfg.Goroutines {
			per[i]++
		}
	}
	return h.play(ctx, round, per, func(w int) Op { return gens[w].next() })
}

// play runs a round in which worker w runs per[w] operations, each taken
// from next(w), and audits it.
func (h *harness) play(ctx context.Context, round int, per []int, next func(w int) Op) bool {
	cfg := h.cfg
	r, err := newRig(ctx, cfg, round, h.violation(round))
	if err != nil {
		h.add(Finding{Round: round, Class: "setup", Detail: err.Error()})
		return false
	}
	ws := make([]*worker, len(per))
	for i := range ws {
		ws[i] = &worker{h: h, r: r, id: i}
	}
	h.mu.Lock()
	h.workers, h.round = ws, round
	h.mu.Unlock()
	start := time.Now()

	if cfg.Serial {
		for s := 0; s < slices.Max(per) && !h.stop.Load(); s++ {
			for i, w := range ws {
				if s >= per[i] {
					continue
				}
				op := next(i)
				h.mu.Lock()
				h.serialAt = w
				h.mu.Unlock()
				w.begin(int64(s), op)
				w.exec(ctx, op)
				// Deferred work (a remove_async's) finishes within its
				// operation, so the next one sees the same machine
				// every time.
				if err := r.m.Sysfs().Flush(ctx); err != nil && ctx.Err() == nil {
					h.add(Finding{Round: round, Class: "teardown", Detail: fmt.Sprintf("flush of deferred work after %v: %v", op, err)})
				}
				w.end()
			}
		}
		h.mu.Lock()
		h.serialAt = nil
		h.mu.Unlock()
		for _, w := range ws {
			w.closeAll(ctx)
		}
	} else {
		var wg sync.WaitGroup
		for i, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for s := range per[i] {
					if h.stop.Load() {
						break
					}
					op := next(i)
					w.begin(int64(s), op)
					w.exec(ctx, op)
					w.end()
				}
				w.closeAll(ctx)
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		if !h.watch(round, ws, done) {
			return false
		}
	}
	ran := int64(0)
	for _, w := range ws {
		for k := range w.counts {
			ran += w.counts[k].N
		}
	}
	h.audit(ctx, r)
	h.mu.Lock()
	for _, w := range ws {
		for k := range w.counts {
			h.res.Counts[k].add(w.counts[k])
		}
	}
	h.res.Ops += ran
	h.res.Rounds++
	h.workers = nil
	findings := len(h.res.Findings)
	for _, n := range h.res.Dropped {
		findings += n
	}
	h.mu.Unlock()
	if cfg.Progress != nil {
		// A progress line that cannot be written is lost; the run goes on.
		_, _ = fmt.Fprintf(cfg.Progress, "round %d: %d ops in %v, %d findings so far\n", round, ran, time.Since(start).Round(time.Millisecond), findings)
	}
	return true
}

// watch waits for done, checking every worker's operation against the
// hang limit. A worker past it is a finding with every goroutine's stack;
// watch then stops the run and returns false without waiting further.
func (h *harness) watch(round int, ws []*worker, done <-chan struct{}) bool {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	limit := h.cfg.hangAfter()
	for {
		select {
		case <-done:
			return true
		case <-tick.C:
		}
		for _, w := range ws {
			w.mu.Lock()
			stuck := w.busy && time.Since(w.start) > limit
			in := Inflight{Worker: w.id, Step: w.step, Op: w.op, For: time.Since(w.start)}
			w.mu.Unlock()
			if !stuck {
				continue
			}
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			h.stop.Store(true)
			h.add(Finding{Round: round, Class: "stuck", Detail: fmt.Sprintf("an operation has run for more than %v", limit), Stack: string(buf), Inflight: []Inflight{in}})
			h.mu.Lock()
			h.res.Stuck = true
			h.mu.Unlock()
			return false
		}
	}
}

// audit quiesces r's machine — every device unplugged or removed, every
// module unloaded; the workers have closed their handles — and checks what
// the checker cannot see by itself: that every injected panic was recorded
// as a driver fault, that no IRQ stayed requested, and that every file
// shell the workers opened has become unreachable.
func (h *harness) audit(ctx context.Context, r *rig) {
	qctx, cancel := context.WithTimeout(ctx, 3*h.cfg.Deadline)
	defer cancel()
	// Faults planted for a probe, remove or open that never came are
	// dropped: the teardown is not an operation of the mix.
	for _, s := range r.slots {
		s.plan.probe.Store(0)
		s.plan.remove.Store(0)
		s.plan.open.Store(0)
	}
	if _, err := r.m.Quiesce(qctx); err != nil {
		h.add(Finding{Round: r.round, Class: "teardown", Detail: err.Error()})
	}
	if n := irq.Requested(r.m.Core()); n != 0 {
		h.add(Finding{Round: r.round, Class: "irq leak", Detail: fmt.Sprintf("%d IRQs still requested after quiesce", n)})
	}
	if p, e := r.faults.panics.Load(), r.expected.Load(); p != e {
		h.add(Finding{Round: r.round, Class: "fault accounting", Detail: fmt.Sprintf("%d panics injected, %d recorded as driver faults", p, e)})
	}
	// Every shell was closed and every device is gone: nothing of the
	// machine may still reach a shell.
	deadline := time.Now().Add(2 * time.Second)
	for r.shellsFreed.Load() < r.shellsOpen.Load() && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	if o, f := r.shellsOpen.Load(), r.shellsFreed.Load(); f < o {
		h.add(Finding{Round: r.round, Class: "shell leak", Detail: fmt.Sprintf("%d of %d file shells still reachable after close and quiesce", o-f, o)})
	}
	h.mu.Lock()
	res := h.res
	res.Sleeps += r.faults.sleeps.Load()
	res.Errors += r.faults.errors.Load()
	res.Panics += r.faults.panics.Load()
	res.ExpectedFaults += r.expected.Load()
	res.Releases += r.releases.Load()
	r.regions.Range(func(k, _ any) bool {
		if k.(*sever.Region).Freed() {
			res.RegionFrees++
		}
		return true
	})
	res.Probes += r.probes.Load()
	res.ShellsOpened += r.shellsOpen.Load()
	res.ShellsFreed += r.shellsFreed.Load()
	res.HostKills += r.kills.Load()
	res.HostFiles += r.files.Load()
	h.mu.Unlock()
}

// WriteReport writes res as a table of figures followed by the findings,
// each with the command that replays its round. It returns the first
// error writing to out, and writes nothing after it.
func (res *Result) WriteReport(out io.Writer) error {
	w := &errWriter{w: out}
	c := res.Config
	w.printf("sever stress: seed %d, %d goroutines, %d rounds of up to %d ops, fault rate %g\n", c.Seed, c.Goroutines, res.Rounds, c.RoundOps, c.FaultRate)
	w.printf("%d operations in %v: %.0f ops/s\n\n", res.Ops, res.Elapsed.Round(time.Millisecond), res.OpsPerSecond())
	w.printf("%-13s %9s %9s %9s %9s %10s\n", "kind", "ops", "ok", "failed", "skipped", "max")
	var total KindCount
	for k, kc := range res.Counts {
		total.add(kc)
		w.printf("%-13s %9d %9d %9d %9d %10v\n", Kind(k), kc.N, kc.OK, kc.Failed, kc.Skipped, kc.Max.Round(time.Microsecond))
	}
	w.printf("%-13s %9d %9d %9d %9d %10v\n", "total", total.N, total.OK, total.Failed, total.Skipped, total.Max.Round(time.Microsecond))
	w.printf("skipped for having nothing to act on: %.1f%%\n\n", 100*res.SkipShare())
	w.printf("faults injected: %d sleeps, %d errors, %d panics (%d recorded as expected driver faults)\n", res.Sleeps, res.Errors, res.Panics, res.ExpectedFaults)
	w.printf("stress probes completed %d; char device releases %d; regions freed %d; file shells opened %d, collected %d\n",
		res.Probes, res.Releases, res.RegionFrees, res.ShellsOpened, res.ShellsFreed)
	if len(c.Host) > 0 {
		w.printf("driver host %s: %d kill -9s under load; %d opens of its attributes and char device\n", HostName, res.HostKills, res.HostFiles)
	} else {
		w.printf("no driver host (host-kill ran as unplug)\n")
	}
	if res.OK() {
		w.printf("\nPASS: no violation, no broken promise, no leak\n")
		return w.err
	}
	w.printf("\nFAIL: %d findings", len(res.Findings))
	if len(res.Dropped) > 0 {
		var ds []string
		for cl, n := range res.Dropped {
			ds = append(ds, fmt.Sprintf("%s×%d", cl, n))
		}
		sort.Strings(ds)
		w.printf(" (and %s not kept)", strings.Join(ds, ", "))
	}
	w.printf("\n")
	for i, f := range res.Findings {
		w.printf("\n%d. round %d: %s: %s\n", i+1, f.Round, f.Class, f.Detail)
		for _, in := range f.Inflight {
			w.printf("   in flight: %v\n", in)
		}
		if f.Stack != "" {
			w.printf("   stack:\n%s\n", indent(f.Stack, "      "))
		}
		if f.Round >= 0 {
			w.printf("   replay: %s\n", res.ReplayCommand(f))
		}
	}
	return w.err
}

// errWriter keeps the first error of a sequence of writes and skips the
// writes after it, so a report checks its writes once, at the end.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, a ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, a...)
	}
}

func indent(s, pre string) string {
	return pre + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pre)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// trimStack keeps the first n lines of a stack.
func trimStack(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
