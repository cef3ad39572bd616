package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sever-dev/sever/lifetrace"
	"github.com/sever-dev/sever/progress"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/pc"
	"github.com/sever-dev/sever/stress"
)

const stressHelp = `usage: sever stress [flags]

Boots simulated machines and runs a random mix of operations on them from
many goroutines: USB boards plugged and unplugged, drivers bound and
unbound, modules unloaded (try and force) and reloaded, attribute files and
char devices opened, read, written, polled, mapped and closed, devices and
disks removing themselves from their own attributes, block I/O with freeze
and kill, IRQs requested, raised and freed, I2C and GPIO consumer calls,
and kill -9 of a driver host (this program, run as the cp2112's host
process; its attributes and gpiochip are in the mix; --host=false leaves
it out and runs its kills as unplugs). A
fault-injecting driver makes its callbacks sleep, fail or panic, and its
probes fail half-way, by the run's choice.

The run is a sequence of rounds: a fresh machine, --round-ops operations
shared among the goroutines, then every handle closed, the machine quiesced
(everything unplugged and unloaded) and audited. The checker's invariants
are observed continuously and at each quiesce. Every violation (but the
driver faults of injected panics, which are expected and counted), every
broken promise, every leak, and an operation that hangs, is a finding,
printed with its round, the operations in flight and the command that
replays the round.

Each goroutine draws its operations from its own source derived from
(seed, round, goroutine) alone, so a round's choices are the same on every
run; --replay ROUND runs them again, and --serial runs them one at a time in
a fixed order, so that the interleaving is the same every time too. Under
real concurrency a replay runs the same choices in another interleaving: it
reproduces a failure only as often as that interleaving recurs.

Many seeds: --seeds 2,3,5 runs each seed in turn (each bounded by --ops or
--duration); --soak 1h runs seeds --seed, --seed+1, ... for an hour in all,
each for --seed-duration (or --ops). Both go on after a finding, print a
line per seed as it ends (and the full report of a seed with findings), and
end with the findings per seed and the operations run between findings.

Progress: on a terminal, a line with operations, ops/s, findings, the time
elapsed and left, and the seed, redrawn in place after the first second;
otherwise the same as a plain line every 10 seconds. -q turns it off.

Exits 0 when there is no finding, 1 otherwise, 2 for bad flags.

flags:
`

// stressFlags are the flags of `sever stress` beyond stress.Config's.
type stressFlags struct {
	quiet        bool
	seeds        string
	soak         time.Duration
	seedDuration time.Duration
	traceJSON    string
	traceEvents  int
	host         bool
}

func stressCmd(args []string, stdout, stderr io.Writer) int {
	var cfg stress.Config
	var f stressFlags
	fs := flag.NewFlagSet("stress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Int64Var(&cfg.Seed, "seed", 1, "the run's seed: every choice follows from it (with --soak, the first seed)")
	fs.IntVar(&cfg.Goroutines, "goroutines", 8, "goroutines issuing operations")
	fs.Int64Var(&cfg.Ops, "ops", 0, "stop after this many operations, per seed (default 100000 unless --duration is given)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long, per seed (the first of --ops and --duration ends the run)")
	fs.IntVar(&cfg.RoundOps, "round-ops", 40000, "operations per round (per machine)")
	fs.Float64Var(&cfg.FaultRate, "fault-rate", 0.05, "fraction of operations that plant a fault in the driver code they reach (negative: none)")
	fs.DurationVar(&cfg.Deadline, "deadline", 10*time.Second, "deadline of every removal, unload and drain")
	fs.IntVar(&cfg.Round, "replay", -1, "run only this round again, with the same choices (same --seed, --goroutines, --round-ops, --fault-rate)")
	fs.BoolVar(&cfg.Serial, "serial", false, "run each round's operations one at a time, in a fixed order")
	fs.StringVar(&f.seeds, "seeds", "", "run these seeds in turn (comma-separated), each bounded by --ops or --duration")
	fs.DurationVar(&f.soak, "soak", 0, "run seeds --seed, --seed+1, ... for this long in all, going on after findings")
	fs.DurationVar(&f.seedDuration, "seed-duration", 20*time.Second, "with --soak and no --ops: how long each seed runs")
	fs.BoolVar(&f.quiet, "q", false, "no progress line")
	fs.BoolVar(&f.host, "host", true, "run the cp2112 in a driver host process (this program) that host-kill kills -9")
	fs.StringVar(&f.traceJSON, "trace-json", "", "write the last --trace-events lifetime events of the run to `FILE` as Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing)")
	fs.IntVar(&f.traceEvents, "trace-events", 50000, "how many of the newest lifetime events --trace-json keeps")
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), stressHelp) // flag's own usage output is unchecked too
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	bad := func(format string, a ...any) int {
		_, _ = fmt.Fprintf(stderr, "sever stress: "+format+"\n", a...) // exit 2 says it anyway
		return 2
	}
	if fs.NArg() > 0 {
		return bad("unexpected argument %q", fs.Arg(0))
	}
	if cfg.Goroutines < 1 || cfg.RoundOps < 1 || cfg.Ops < 0 || cfg.Duration < 0 || cfg.Deadline <= 0 || f.traceEvents < 1 {
		return bad("--goroutines, --round-ops and --trace-events must be at least 1, --ops and --duration not negative, --deadline positive")
	}
	var rec *lifetrace.Recorder
	if f.traceJSON != "" {
		rec = lifetrace.NewRecorder(f.traceEvents)
		cfg.Machine = append(cfg.Machine, sim.WithObserver(rec))
	}
	cfg.Replay = cfg.Round >= 0
	if f.host {
		exe, err := os.Executable()
		if err != nil {
			_, _ = fmt.Fprintln(stderr, "sever stress: the driver host is this program, which cannot be found:", err)
			return 1
		}
		cfg.Host = []string{exe, "host", pc.CP2112Host}
	}
	seeds, err := parseSeeds(f.seeds)
	if err != nil {
		return bad("--seeds: %v", err)
	}
	multi := len(seeds) > 0 || f.soak > 0
	switch {
	case len(seeds) > 0 && f.soak > 0:
		return bad("--seeds and --soak exclude each other")
	case multi && cfg.Replay:
		return bad("--replay runs one round of one seed; not with --seeds or --soak")
	case f.soak < 0 || f.seedDuration <= 0:
		return bad("--soak must not be negative, --seed-duration must be positive")
	}
	if f.soak > 0 && cfg.Ops == 0 && cfg.Duration == 0 {
		cfg.Duration = f.seedDuration
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	live := &stress.Live{}
	cfg.Live = live
	meter := func(c stress.Config, note string) *stressMeter {
		if f.quiet {
			return nil
		}
		return startMeter(stderr, meterEvery(stderr), live, c, note)
	}
	if multi && rec != nil {
		return bad("--trace-json traces one run; not with --seeds or --soak")
	}
	if !multi {
		prog := meter(cfg, "")
		res := stress.Run(ctx, cfg)
		prog.stop()
		failed := res.WriteReport(stdout) != nil || !res.OK()
		if rec != nil { // most wanted when the run found something
			run := lifetrace.Run{Name: fmt.Sprintf("sever stress --seed %d (last %d events of %d)", cfg.Seed, len(rec.Records()), int64(len(rec.Records()))+rec.Dropped()), Records: rec.Records()}
			if err := writeFile(f.traceJSON, stdout, "trace-json", func(w io.Writer) error { return lifetrace.WriteChrome(w, run) }); err != nil {
				_, _ = fmt.Fprintln(stderr, "sever stress:", err)
				return 1
			}
		}
		if failed {
			return 1
		}
		return 0
	}
	out := &report{w: stdout}

	var sum soakSummary
	start := time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		c := cfg
		if len(seeds) > 0 {
			if i == len(seeds) {
				break
			}
			c.Seed = seeds[i]
		} else {
			left := f.soak - time.Since(start)
			if left <= 0 {
				break
			}
			c.Seed = cfg.Seed + int64(i)
			if c.Duration == 0 || c.Duration > left {
				c.Duration = left
			}
		}
		prog := meter(c, fmt.Sprintf("seed %d", c.Seed))
		res := stress.Run(ctx, c)
		prog.stop() // ends its line before the seed's line
		sum.add(res)
		out.printf("%s\n", seedLine(res))
		if !res.OK() && out.err == nil {
			out.err = res.WriteReport(stdout)
		}
	}
	sum.write(out, time.Since(start))
	if sum.findings > 0 || out.err != nil {
		return 1
	}
	return 0
}

// parseSeeds parses "2,3,5".
func parseSeeds(s string) ([]int64, error) {
	if s == "" {
		return nil, nil
	}
	var seeds []int64
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a seed", f)
		}
		seeds = append(seeds, n)
	}
	return seeds, nil
}

// seedLine is one seed's outcome in a line: figures, and the findings by
// class with the command that replays the first.
func seedLine(res *stress.Result) string {
	s := fmt.Sprintf("seed %d: %d ops in %d rounds, %v (%.0f ops/s), %.1f%% skipped, faults %d/%d/%d (sleep/error/panic), %d host kills: ",
		res.Config.Seed, res.Ops, res.Rounds, res.Elapsed.Round(time.Millisecond), res.OpsPerSecond(), 100*res.SkipShare(), res.Sleeps, res.Errors, res.Panics, res.HostKills)
	if res.OK() {
		return s + "clean"
	}
	s += fmt.Sprintf("%d findings (%s)", findings(res), classes(res))
	for _, f := range res.Findings {
		if f.Round >= 0 {
			return s + "; replay: " + res.ReplayCommand(f)
		}
	}
	return s
}

func findings(res *stress.Result) int {
	n := len(res.Findings)
	for _, d := range res.Dropped {
		n += d
	}
	return n
}

// classes is "call into gone owner×2, stuck×1".
func classes(res *stress.Result) string {
	counts := map[string]int{}
	for _, f := range res.Findings {
		counts[f.Class]++
	}
	for c, n := range res.Dropped {
		counts[c] += n
	}
	var cs []string
	for c, n := range counts {
		cs = append(cs, fmt.Sprintf("%s×%d", c, n))
	}
	sort.Strings(cs)
	return strings.Join(cs, ", ")
}

// soakSummary adds up a sequence of runs, one per seed.
type soakSummary struct {
	seeds, ops, findings int64
	faults               int64 // injected: sleeps, errors and panics
	kills                int64 // driver host processes killed
	// rounds counts the rounds with a finding: one race often records
	// many violations in its round, so operations per such round is the
	// honest rate.
	rounds int64
	dirty  []string // "7 (call into gone owner×1)"
	runs   []*stress.Result
}

func (s *soakSummary) add(res *stress.Result) {
	s.seeds++
	s.ops += res.Ops
	s.faults += res.Sleeps + res.Errors + res.Panics
	s.kills += res.HostKills
	s.runs = append(s.runs, res)
	if n := findings(res); n > 0 {
		s.findings += int64(n)
		rounds := map[int]bool{}
		for _, f := range res.Findings {
			rounds[f.Round] = true
		}
		s.rounds += int64(max(len(rounds), 1))
		s.dirty = append(s.dirty, fmt.Sprintf("%d (%s)", res.Config.Seed, classes(res)))
	}
}

func (s *soakSummary) write(w *report, elapsed time.Duration) {
	w.printf("\nsever stress: %d seeds, %d operations and %d injected faults in %v", s.seeds, s.ops, s.faults, elapsed.Round(time.Second))
	if s.findings == 0 {
		w.printf(": no finding; %d operations ran clean\n", s.ops)
		w.printf("driver host kills (kill -9 under load): %d\n", s.kills)
		w.printf("PASS: no violation, no broken promise, no leak on any seed\n")
		return
	}
	w.printf(": %d findings in %d rounds on %d of %d seeds; one round with a finding per %d operations\n", s.findings, s.rounds, len(s.dirty), s.seeds, s.ops/s.rounds)
	w.printf("seeds with findings: %s\n", strings.Join(s.dirty, "; "))
	w.printf("driver host kills (kill -9 under load): %d\n", s.kills)
	w.printf("FAIL: replay a seed's round with the command printed on its line\n")
}

// stressMeter shows a run's progress through a progress.Meter. The run's
// counts are atomics its workers bump (stress.Live), not events, so a
// goroutine reads them a few times a second and hands them to the Meter,
// which decides when to draw. Each seed gets its own: "seed N" ends its
// line, and its line is ended before the seed's result is printed. A nil
// *stressMeter does nothing.
type stressMeter struct {
	meter  *progress.Meter
	live   *stress.Live
	cfg    stress.Config // the seed's: Ops and Duration make Total and Left
	note   string
	start  time.Time
	ops0   int64 // live's counts when the seed began
	found0 int64
	done   chan struct{} // closed by stop
	exited chan struct{} // closed when the polling goroutine returns
	once   sync.Once
}

// meterEvery is both the Meter's silent start and, off a terminal, its
// interval: on a terminal the line appears after a second, elsewhere a
// plain line every 10 seconds.
func meterEvery(w io.Writer) time.Duration {
	if isTerminal(w) {
		return time.Second
	}
	return 10 * time.Second
}

// startMeter shows the progress of the run of cfg on w until stop.
func startMeter(w io.Writer, every time.Duration, live *stress.Live, cfg stress.Config, note string) *stressMeter {
	m := &stressMeter{
		meter: progress.New(w, "sever stress", "ops", every),
		live:  live, cfg: cfg, note: note, start: time.Now(),
		ops0: live.Ops.Load(), found0: live.Findings.Load(),
		done: make(chan struct{}), exited: make(chan struct{}),
	}
	go func() {
		defer close(m.exited)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.done:
				return
			case <-t.C:
				m.meter.Update(m.status())
			}
		}
	}()
	return m
}

// status is the seed's counts now. A run bounded by --ops has a total; one
// bounded by --duration alone has time left.
func (m *stressMeter) status() progress.Status {
	s := progress.Status{
		Done:     m.live.Ops.Load() - m.ops0,
		Findings: int(m.live.Findings.Load() - m.found0),
		Note:     m.note,
	}
	switch ops, d := m.cfg.Ops, m.cfg.Duration; {
	case ops > 0:
		s.Total = ops
	case d > 0:
		s.Left = max(d-time.Since(m.start), time.Millisecond)
	default: // stress.Run's default bound
		s.Total = 100000
	}
	return s
}

// stop ends the display, with the final counts if a line was shown; it
// may be called more than once.
func (m *stressMeter) stop() {
	if m == nil {
		return
	}
	m.once.Do(func() {
		close(m.done)
		<-m.exited
		m.meter.Finish(m.status())
	})
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
