package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/sever-dev/sever/lifetrace"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/stress"
)

const stressHelp = `usage: sever stress [flags]

Boots simulated machines and runs a random mix of operations on them from
many goroutines: USB boards plugged and unplugged, drivers bound and
unbound, modules unloaded (try and force) and reloaded, attribute files and
char devices opened, read, written, polled, mapped and closed, devices and
disks removing themselves from their own attributes, block I/O with freeze
and kill, IRQs requested, raised and freed, I2C and GPIO consumer calls. A
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

Exits 0 when there is no finding, 1 otherwise, 2 for bad flags.

flags:
`

func stressCmd(args []string, stdout, stderr io.Writer) int {
	var cfg stress.Config
	var quiet bool
	var traceJSON string
	var traceEvents int
	fs := flag.NewFlagSet("stress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Int64Var(&cfg.Seed, "seed", 1, "the run's seed: every choice follows from it")
	fs.IntVar(&cfg.Goroutines, "goroutines", 8, "goroutines issuing operations")
	fs.Int64Var(&cfg.Ops, "ops", 0, "stop after this many operations (default 100000 unless --duration is given)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (the first of --ops and --duration ends the run)")
	fs.IntVar(&cfg.RoundOps, "round-ops", 40000, "operations per round (per machine)")
	fs.Float64Var(&cfg.FaultRate, "fault-rate", 0.05, "fraction of operations that plant a fault in the driver code they reach (negative: none)")
	fs.DurationVar(&cfg.Deadline, "deadline", 10*time.Second, "deadline of every removal, unload and drain")
	fs.IntVar(&cfg.Round, "replay", -1, "run only this round again, with the same choices (same --seed, --goroutines, --round-ops, --fault-rate)")
	fs.BoolVar(&cfg.Serial, "serial", false, "run each round's operations one at a time, in a fixed order")
	fs.BoolVar(&quiet, "q", false, "no progress line per round")
	fs.StringVar(&traceJSON, "trace-json", "", "write the last --trace-events lifetime events of the run to `FILE` as Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing)")
	fs.IntVar(&traceEvents, "trace-events", 50000, "how many of the newest lifetime events --trace-json keeps")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), stressHelp)
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sever stress: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if cfg.Goroutines < 1 || cfg.RoundOps < 1 || cfg.Ops < 0 || cfg.Duration < 0 || cfg.Deadline <= 0 || traceEvents < 1 {
		fmt.Fprintln(stderr, "sever stress: --goroutines, --round-ops and --trace-events must be at least 1, --ops and --duration not negative, --deadline positive")
		return 2
	}
	var rec *lifetrace.Recorder
	if traceJSON != "" {
		rec = lifetrace.NewRecorder(traceEvents)
		cfg.Machine = append(cfg.Machine, sim.WithObserver(rec))
	}
	cfg.Replay = cfg.Round >= 0
	if !quiet {
		cfg.Progress = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res := stress.Run(ctx, cfg)
	res.WriteReport(stdout)
	if rec != nil {
		run := lifetrace.Run{Name: fmt.Sprintf("sever stress --seed %d (last %d events of %d)", cfg.Seed, len(rec.Records()), int64(len(rec.Records()))+rec.Dropped()), Records: rec.Records()}
		if err := writeFile(traceJSON, stdout, "trace-json", func(w io.Writer) error { return lifetrace.WriteChrome(w, run) }); err != nil {
			fmt.Fprintln(stderr, "sever stress:", err)
			return 1
		}
	}
	if !res.OK() {
		return 1
	}
	return 0
}
