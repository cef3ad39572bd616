package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/lifepage"
	"github.com/sever-dev/sever/lifetrace"
	"github.com/sever-dev/sever/progress"
	"github.com/sever-dev/sever/scenario"
	"github.com/sever-dev/sever/sim"
)

const demoHelp = `usage: sever demo [flags]

Plays every seed scenario (DESIGN.md, "Seeds") on fresh simulated machines,
each in two variants:

  correct  the drivers written against sever's API; the checker must
           record nothing and every consumer must see the contract
  naive    one driver written the way the seed says the bug happened;
           the checker must record the class of failure the seed describes

Each variant runs --runs times, each run with its own seed choosing where
the unplug, rmmod or rmdir lands among the consumers' operations and how
goroutines interleave. The table has one row per scenario and variant: the
scenario, its seed's section of DESIGN.md, the variant, the runs, the
operations run, the violations recorded by class (summed over the runs) and
the verdict.
A timeline of lifetime events follows for one scenario (--timeline).

Exits 0 only when every run of every correct variant is clean and every
run of every naive variant is caught; 1 otherwise; 2 for bad flags.

flags:
`

type demoFlags struct {
	scenarios string
	variant   string
	runs      int
	seed      int64
	trace     string
	traceJSON string
	html      string
	timeline  string
	verbose   bool
	tracking  bool
	parallel  int
}

func demo(args []string, stdout, stderr io.Writer) int {
	var f demoFlags
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.scenarios, "scenario", "", "run only these scenarios: NAME[,NAME...] (default: all; see the table for names)")
	fs.StringVar(&f.variant, "variant", "both", "which variants to run: correct, naive or both")
	fs.IntVar(&f.runs, "runs", 25, "randomized runs per scenario and variant (seeds --seed, --seed+1, ...)")
	fs.Int64Var(&f.seed, "seed", 1, "the first run's seed; a failing run is replayed with --seed SEED --runs 1")
	fs.StringVar(&f.trace, "trace", "", "write the full event trace of the first run of each selected scenario and variant to `FILE` as JSON lines (\"-\": stdout)")
	fs.StringVar(&f.traceJSON, "trace-json", "", "write the lifetime events of the first run of each selected scenario and variant to `FILE` as Chrome trace-event JSON, for ui.perfetto.dev or chrome://tracing")
	fs.StringVar(&f.html, "html", "", "write a self-contained HTML page to `FILE` with a timeline of the first run of each selected scenario, correct and naive side by side")
	fs.StringVar(&f.timeline, "timeline", "", "print the timeline of lifetime events of this scenario's first runs (default: the first scenario run; \"none\": no timeline)")
	fs.BoolVar(&f.verbose, "v", false, "print every violation of each row's first run, with where it happened")
	fs.BoolVar(&f.tracking, "tracking", false, "record who took every reference and access, so violations name holders with stacks (slower)")
	fs.IntVar(&f.parallel, "parallel", runtime.GOMAXPROCS(0), "runs played at once")
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), demoHelp) // as PrintDefaults below, which returns no error either
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		complain(stderr, "sever demo: unexpected argument %q", fs.Arg(0))
		return 2
	}
	scs, err := selectScenarios(f.scenarios)
	if err != nil {
		complain(stderr, "sever demo: %v", err)
		return 2
	}
	var variants []scenario.Variant
	switch f.variant {
	case "both":
		variants = scenario.Variants()
	case "correct":
		variants = []scenario.Variant{scenario.Correct}
	case "naive":
		variants = []scenario.Variant{scenario.Naive}
	default:
		complain(stderr, "sever demo: --variant %q: want correct, naive or both", f.variant)
		return 2
	}
	if f.runs < 1 || f.parallel < 1 {
		complain(stderr, "sever demo: --runs and --parallel must be at least 1")
		return 2
	}
	timeline := f.timeline
	if timeline == "" {
		timeline = scs[0].Name
	}
	if timeline != "none" && !slices.ContainsFunc(scs, func(s scenario.Scenario) bool { return s.Name == timeline }) {
		complain(stderr, "sever demo: --timeline %q is not among the scenarios run", timeline)
		return 2
	}
	var opts []sim.Option
	if f.tracking {
		opts = append(opts, sim.WithTracking())
	}

	rows := playAll(scs, variants, f, opts, stderr)

	out := &report{w: stdout}
	out.printf("sever demo: %d scenarios × %d variants × %d runs on fresh simulated machines\n\n", len(scs), len(variants), f.runs)
	failed := printTable(out, rows)
	if f.verbose {
		printViolations(out, rows, false)
	}
	printViolations(out, rows, true)
	if timeline != "none" {
		for _, r := range rows {
			if r.sc.Name == timeline {
				printTimeline(out, r.first)
			}
		}
	}
	if f.trace != "" {
		if err := writeTrace(f.trace, out, rows); err != nil {
			complain(stderr, "sever demo: %v", err)
			return 1
		}
	}
	if f.traceJSON != "" {
		if err := writeTraceJSON(f.traceJSON, out, rows); err != nil {
			complain(stderr, "sever demo: %v", err)
			return 1
		}
	}
	if f.html != "" {
		if err := writeHTML(f.html, out, rows); err != nil {
			complain(stderr, "sever demo: %v", err)
			return 1
		}
	}
	out.println()
	if failed > 0 {
		out.printf("FAIL: %d of %d rows failed (replay a run with --scenario NAME --variant V --seed SEED --runs 1 -v)\n", failed, len(rows))
		return 1
	}
	out.printf("ok: every correct variant clean and every naive variant caught, over %d runs each\n", f.runs)
	if out.err != nil {
		complain(stderr, "sever demo: writing the report: %v", out.err)
		return 1
	}
	return 0
}

func selectScenarios(list string) ([]scenario.Scenario, error) {
	all := scenario.All()
	if list == "" {
		return all, nil
	}
	var out []scenario.Scenario
	for _, name := range strings.Split(list, ",") {
		sc, ok := scenario.Find(strings.TrimSpace(name))
		if !ok {
			var names []string
			for _, s := range all {
				names = append(names, s.Name)
			}
			return nil, fmt.Errorf("no scenario %q (have: %s)", name, strings.Join(names, ", "))
		}
		out = append(out, sc)
	}
	return out, nil
}

// row is one scenario and variant over all its runs.
type row struct {
	sc      scenario.Scenario
	variant scenario.Variant
	first   scenario.Result     // the run with the first seed
	rec     *lifetrace.Recorder // the first run's lifetime events, if asked for
	runs    int
	passed  int
	ops     int64
	summary map[check.Class]int
	failing []scenario.Result // up to three failing runs
	elapsed time.Duration
}

func playAll(scs []scenario.Scenario, variants []scenario.Variant, f demoFlags, opts []sim.Option, progressOut io.Writer) []*row {
	type job struct {
		r    *row
		seed int64
	}
	var rows []*row
	var jobs []job
	for _, sc := range scs {
		for _, v := range variants {
			r := &row{sc: sc, variant: v, summary: map[check.Class]int{}}
			rows = append(rows, r)
			for i := range f.runs {
				jobs = append(jobs, job{r, f.seed + int64(i)})
			}
		}
	}
	ch := make(chan job)
	var mu sync.Mutex
	var wg sync.WaitGroup
	done, failedRuns := 0, 0
	meter := progress.New(progressOut, "sever demo", "runs", 2*time.Second)
	for range f.parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				o := opts
				var rec *lifetrace.Recorder
				if j.seed == f.seed && (f.traceJSON != "" || f.html != "") {
					rec = lifetrace.NewRecorder(0)
					o = append(slices.Clip(opts), sim.WithObserver(rec))
				}
				res := scenario.Execute(context.Background(), j.r.sc, j.r.variant, j.seed, o...)
				mu.Lock()
				r := j.r
				r.runs++
				r.ops += res.Ops
				r.elapsed += res.Elapsed
				for c, n := range res.Summary {
					r.summary[c] += n
				}
				if res.Pass() {
					r.passed++
				} else {
					failedRuns++
				}
				if !res.Pass() && len(r.failing) < 3 {
					r.failing = append(r.failing, res)
				}
				if j.seed == f.seed {
					r.first = res
					r.rec = rec
				} else {
					res.Events = nil // keep only the first run's trace
				}
				done++
				meter.Update(progress.Status{Done: int64(done), Total: int64(len(jobs)), Findings: failedRuns})
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	meter.Finish(progress.Status{Done: int64(done), Total: int64(len(jobs)), Findings: failedRuns})
	return rows
}

func printTable(out *report, rows []*row) (failed int) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	t := &report{w: tw}
	t.println("SCENARIO\tSEED DOCUMENT\tVARIANT\tRUNS\tOPS\tVIOLATIONS BY CLASS\tVERDICT")
	for _, r := range rows {
		verdict := "clean"
		if r.variant == scenario.Naive {
			verdict = "caught (" + r.sc.Catches.String() + ")"
		}
		if r.passed != r.runs {
			verdict = fmt.Sprintf("FAIL (%d of %d runs)", r.runs-r.passed, r.runs)
			failed++
		}
		t.printf("%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.sc.Name, r.sc.Doc, r.variant, r.runs, r.ops, scenario.ClassList(r.summary), verdict)
	}
	out.keep(t.err)
	out.keep(tw.Flush())
	return failed
}

// printViolations prints the violations of each row's first run (all
// rows), or of the failing runs (failing true).
func printViolations(w *report, rows []*row, failing bool) {
	for _, r := range rows {
		results := []scenario.Result{r.first}
		if failing {
			results = r.failing
		}
		for _, res := range results {
			if failing {
				w.printf("\n%s, %s, seed %d: %s\n", r.sc.Name, r.variant, res.Seed, res.Verdict())
				for _, f := range res.Failures {
					w.printf("  promise broken: %s\n", f)
				}
				if res.Err != nil {
					w.printf("  error: %v\n", res.Err)
				}
			} else if len(res.Violations) > 0 {
				w.printf("\n%s, %s, seed %d:\n", r.sc.Name, r.variant, res.Seed)
			}
			for _, v := range res.Violations {
				w.printf("  %s\n", v)
				if v.Cause != "" {
					w.printf("    cause: %s\n", firstLines(v.Cause, 3))
				}
				w.printf("    at: %s\n", firstLines(v.Stack, 3))
			}
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, "\n        ")
}

// printTimeline prints a run's lifetime events, one a line, with times.
func printTimeline(w *report, res scenario.Result) {
	w.printf("\ntimeline: %s, %s variant, seed %d — %s\n", res.Scenario.Name, res.Variant, res.Seed, res.Scenario.Title)
	if res.Variant == scenario.Naive {
		w.printf("  (planted: %s)\n", res.Scenario.Bug)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	t := &report{w: tw}
	for _, e := range res.Events {
		t.printf("  %8.3fms\t%s\t%s\t%s\n", float64(e.T.Microseconds())/1000, e.Kind, e.Object, e.Detail)
	}
	w.keep(t.err)
	w.keep(tw.Flush())
}

func writeTrace(path string, stdout io.Writer, rows []*row) error {
	return writeFile(path, stdout, "trace", func(w io.Writer) error {
		for _, r := range rows {
			if err := sim.WriteJSON(w, r.first.Events); err != nil {
				return err
			}
		}
		return nil
	})
}

// runName names a row's first run in traces and pages.
func runName(r *row) string {
	return fmt.Sprintf("%s %s, seed %d", r.sc.Name, r.variant, r.first.Seed)
}

// writeTraceJSON writes the first run of every row as Chrome trace-event
// JSON, one process per run.
func writeTraceJSON(path string, stdout io.Writer, rows []*row) error {
	var runs []lifetrace.Run
	for _, r := range rows {
		if r.rec != nil {
			runs = append(runs, lifetrace.Run{Name: runName(r), Records: r.rec.Records()})
		}
	}
	return writeFile(path, stdout, "trace-json", func(w io.Writer) error { return lifetrace.WriteChrome(w, runs...) })
}

// writeFile creates path ("-": stdout), writes it with write and names it
// on stdout under label.
func writeFile(path string, stdout io.Writer, label string, write func(io.Writer) error) error {
	if path == "-" {
		return write(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		_ = f.Close() // the write error is the news; the file is incomplete either way
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "\n%s: %s\n", label, path)
	return err
}

// writeHTML writes the first run of every row as one page, a section per
// scenario with its variants side by side.
func writeHTML(path string, stdout io.Writer, rows []*row) error {
	var secs []lifepage.Section
	for _, r := range rows {
		if r.rec == nil {
			continue
		}
		if len(secs) == 0 || secs[len(secs)-1].Name != r.sc.Name {
			secs = append(secs, lifepage.Section{Name: r.sc.Name, Title: r.sc.Title, Doc: "seed " + r.sc.Doc})
		}
		run := lifepage.Run{
			Label:   fmt.Sprintf("%s, seed %d", r.variant, r.first.Seed),
			Verdict: r.first.Verdict(),
			Caught:  len(r.first.Violations) > 0,
			Records: r.rec.Records(),
		}
		if len(r.first.Violations) > 0 {
			run.Verdict += ": " + scenario.ClassList(r.first.Summary)
		}
		if r.variant == scenario.Naive {
			run.Note = r.sc.Bug
		}
		s := &secs[len(secs)-1]
		s.Runs = append(s.Runs, run)
	}
	return writeFile(path, stdout, "html", func(w io.Writer) error {
		return lifepage.Write(w, "sever demo: lifetimes of each scenario, correct and naive", secs)
	})
}
