package stress

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// report logs res and fails t if it found anything.
func report(t *testing.T, res *Result) {
	t.Helper()
	var b bytes.Buffer
	if err := res.WriteReport(&b); err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Fatalf("the stress run found something:\n%s", b.String())
	}
	t.Logf("\n%s", b.String())
}

func TestStressSmoke(t *testing.T) {
	report(t, Run(context.Background(), Config{Seed: 1, Goroutines: 4, Ops: 20000, RoundOps: 10000}))
}

// TestStressMillionOps is CI's bounded stress: a million operations from
// eight goroutines, failing on any finding. Under -race on two cores it
// takes about half a minute.
func TestStressMillionOps(t *testing.T) {
	if testing.Short() {
		t.Skip("a million operations; run without -short")
	}
	report(t, Run(context.Background(), Config{Seed: 1, Goroutines: 8, Ops: 1_000_000}))
}

// TestSerialReplayIsDeterministic: a round replayed serialized runs the
// same operations with the same outcomes every time.
func TestSerialReplayIsDeterministic(t *testing.T) {
	cfg := Config{Seed: 3, Goroutines: 4, RoundOps: 4000, Replay: true, Round: 2, Serial: true, FaultRate: -1}
	a := Run(context.Background(), cfg)
	b := Run(context.Background(), cfg)
	report(t, a)
	report(t, b)
	for k := range a.Counts { // durations differ; outcomes must not
		a.Counts[k].Max, b.Counts[k].Max = 0, 0
	}
	if a.Counts != b.Counts {
		t.Errorf("two serial replays of one round differ:\n%v\n%v", a.Counts, b.Counts)
	}
}

// TestGeneratorIsAFunctionOfSeedRoundWorker: the choice sequence depends
// on nothing else, and Decode reads back what EncodeOps wrote.
func TestGeneratorIsAFunctionOfSeedRoundWorker(t *testing.T) {
	g1, g2, g3 := newGenerator(9, 4, 2, 0.1), newGenerator(9, 4, 2, 0.1), newGenerator(9, 4, 3, 0.1)
	var a, b, c []Op
	for range 1000 {
		a, b, c = append(a, g1.next()), append(b, g2.next()), append(c, g3.next())
	}
	if !equalOps(a, b) {
		t.Fatal("same (seed, round, worker), different operations")
	}
	if equalOps(a, c) {
		t.Fatal("two workers drew the same operations")
	}
	if !equalOps(Decode(EncodeOps(a)), a) {
		t.Fatal("Decode(EncodeOps(ops)) != ops")
	}
}

func equalOps(a, b []Op) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestWatchdogTimesAreBounded keeps the hang limit above the deadline: a
// removal past its deadline is a SeverTimeout, recorded before the
// watchdog would call the run stuck.
func TestWatchdogTimesAreBounded(t *testing.T) {
	c := Config{}.withDefaults()
	if c.hangAfter() <= c.Deadline || c.hangAfter() > 2*time.Minute {
		t.Fatalf("hang limit %v for deadline %v", c.hangAfter(), c.Deadline)
	}
}

// TestAtMostATenthOfTheMixIsSkipped: an operation that would find nothing
// to act on is retargeted, so at most 10% of a run is skipped (0.5% is
// typical; the old mix skipped a quarter).
func TestAtMostATenthOfTheMixIsSkipped(t *testing.T) {
	res := Run(context.Background(), Config{Seed: 2, Goroutines: 4, Ops: 20000, RoundOps: 10000})
	report(t, res)
	if s := res.SkipShare(); s > 0.10 {
		t.Errorf("%.1f%% of the operations were skipped for having nothing to act on; want at most 10%%", 100*s)
	}
	for k, c := range res.Counts {
		if c.N > 100 && c.Skipped*2 > c.N {
			t.Errorf("%v: %d of %d skipped: the kind mostly finds nothing to act on", Kind(k), c.Skipped, c.N)
		}
	}
}

// TestHostKillsUnderLoad runs the mix with a driver host and host-kills
// far more often than the generator draws them: each kill is checked by
// hostKill (the host's device removed within the deadline), the host's
// attributes and char device are in use by the other workers while it
// dies, and the round's checker and audits must find nothing.
func TestHostKillsUnderLoad(t *testing.T) {
	cfg := withTestHost(Config{Goroutines: 4, FaultRate: -1})
	gen := newGenerator(5, 0, 0, 0.05)
	seqs := make([][]Op, cfg.Goroutines)
	for i := range 8000 {
		op := gen.next()
		switch {
		case i%200 == 100:
			op.Kind = KHostKill
		case op.Kind == KHostKill:
			op.Kind = KSysRead // exactly the 40 kills asked for
		}
		seqs[i%len(seqs)] = append(seqs[i%len(seqs)], op)
	}
	res := RunOps(context.Background(), cfg, seqs)
	report(t, res)
	if res.HostKills < 30 {
		t.Errorf("%d host kills; want the 40 asked for (all but a few that meet a restart)", res.HostKills)
	}
	if c := res.Counts[KHostKill]; c.N != 40 {
		t.Errorf("host-kill ran %d times; want 40", c.N)
	}
	if res.HostFiles == 0 {
		t.Error("no file of the driver host's was opened: the kills were not under load")
	}
}

// TestHostDevicesAreInTheMix: with a driver host, the mix reaches the
// host's devices — its attributes and its char device are opened.
func TestHostDevicesAreInTheMix(t *testing.T) {
	res := Run(context.Background(), withTestHost(Config{Seed: 6, Goroutines: 4, Ops: 8000, RoundOps: 8000}))
	report(t, res)
	if res.HostKills != res.Counts[KHostKill].OK {
		t.Errorf("%d host kills counted, %d host-kill operations succeeded", res.HostKills, res.Counts[KHostKill].OK)
	}
	if res.HostFiles == 0 {
		t.Error("no file of the driver host's was opened: its devices are not in the mix")
	}
}

// TestWithoutAHostHostKillIsAnUnplug: a run without Config.Host retargets
// every host-kill, so none is left in the counts.
func TestWithoutAHostHostKillIsAnUnplug(t *testing.T) {
	res := RunOps(context.Background(), Config{Serial: true, Ports: 2, Slots: 1, Controllers: 1}, [][]Op{{{Kind: KHostKill}, {Kind: KHostKill, A: 1}}})
	report(t, res)
	if n := res.Counts[KHostKill].N; n != 0 {
		t.Errorf("%d host-kills ran without a host", n)
	}
	if n := res.Counts[KUnplug].N; n != 2 {
		t.Errorf("%d unplugs; want the 2 host-kills as unplugs", n)
	}
}

// TestAFloodOfOneClassDoesNotHideAnother: a rare finding that comes after
// thousands of one common class is still kept in full, and every finding
// not kept is counted by class.
func TestAFloodOfOneClassDoesNotHideAnother(t *testing.T) {
	h := &harness{res: &Result{Dropped: map[string]int{}}}
	for range 1000 {
		h.add(Finding{Class: "goroutine left behind"})
	}
	h.add(Finding{Class: "callback after sever"})
	var rare int
	for _, f := range h.res.Findings {
		if f.Class == "callback after sever" {
			rare++
		}
	}
	if rare != 1 {
		t.Errorf("kept %d of the one callback after sever behind 1000 of another class, want it kept", rare)
	}
	if kept, dropped := len(h.res.Findings)-rare, h.res.Dropped["goroutine left behind"]; kept+dropped != 1000 || kept > maxPerClass {
		t.Errorf("of 1000 goroutines left behind: %d kept, %d counted as not kept; want at most %d kept and the rest counted", kept, dropped, maxPerClass)
	}
}
