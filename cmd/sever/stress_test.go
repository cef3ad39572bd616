package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sever-dev/sever/stress"
)

func TestStressCommandRunsAndReplays(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"stress", "--seed", "2", "--ops", "3000", "--goroutines", "4", "--round-ops", "1500", "-q"}, &out, &errb); code != 0 {
		t.Fatalf("sever stress exit %d:\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"3000 operations", "ops/s", "PASS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"stress", "--seed", "2", "--goroutines", "4", "--round-ops", "1500", "--replay", "1", "--serial", "-q"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "1500 operations") {
		t.Fatalf("replay exit %d:\n%s", code, out.String())
	}
	if code := run([]string{"stress", "--goroutines", "0"}, &out, &errb); code != 2 {
		t.Errorf("bad flags: exit %d, want 2", code)
	}
	out.Reset()
	if code := run([]string{"stress", "--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "--replay") && !strings.Contains(out.String(), "-replay") {
		t.Errorf("--help: exit %d:\n%s", code, out.String())
	}
}

// --seeds runs every seed in turn, a line each, and a summary; --soak
// rotates seeds from --seed until its time is up.
func TestStressSeedsAndSoakRunEverySeed(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"stress", "--seeds", "2,3", "--ops", "2000", "--goroutines", "4", "--round-ops", "1000", "-q"}, &out, &errb); code != 0 {
		t.Fatalf("sever stress --seeds exit %d:\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"seed 2: 2000 ops", "seed 3: 2000 ops", "2 seeds, 4000 operations and ", "4000 operations ran clean", "PASS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--seeds report lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"stress", "--soak", "1500ms", "--seed-duration", "500ms", "--seed", "40", "--goroutines", "2", "--round-ops", "500", "-q"}, &out, &errb); code != 0 {
		t.Fatalf("sever stress --soak exit %d:\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"seed 40: ", "seed 41: ", "PASS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--soak report lacks %q:\n%s", want, out.String())
		}
	}
	for _, bad := range [][]string{
		{"stress", "--seeds", "1,x"},
		{"stress", "--seeds", "1", "--soak", "1s"},
		{"stress", "--soak", "1s", "--replay", "0"},
		{"stress", "--soak", "1s", "--seed-duration", "0"},
	} {
		if code := run(bad, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2", bad, code)
		}
	}
}

// A seed with findings is summed up with its classes and the command that
// replays its first finding's round, and the summary counts operations per
// finding.
func TestSoakSummaryNamesFindingsAndReplay(t *testing.T) {
	clean := &stress.Result{Config: stress.Config{Seed: 4, Goroutines: 8, RoundOps: 40000, FaultRate: 0.05}, Ops: 1000, Rounds: 1}
	dirty := &stress.Result{Config: stress.Config{Seed: 7, Goroutines: 8, RoundOps: 40000, FaultRate: 0.05}, Ops: 3000, Rounds: 2,
		Findings: []stress.Finding{{Round: -1, Class: "goroutine leak"}, {Round: 1, Class: "call into gone owner"}},
		Dropped:  map[string]int{"call into gone owner": 2}}
	if l := seedLine(clean); !strings.HasSuffix(l, "clean") {
		t.Errorf("clean seed: %q", l)
	}
	l := seedLine(dirty)
	for _, want := range []string{"seed 7: 3000 ops", "4 findings", "call into gone owner×3", "goroutine leak×1", "replay: sever stress --seed 7 --goroutines 8 --round-ops 40000 --fault-rate 0.05 --replay 1 --serial"} {
		if !strings.Contains(l, want) {
			t.Errorf("seed line lacks %q: %q", want, l)
		}
	}
	var sum soakSummary
	sum.add(clean)
	sum.add(dirty)
	var b bytes.Buffer
	p := &report{w: &b}
	sum.write(p, time.Second)
	for _, want := range []string{"2 seeds, 4000 operations and 0 injected faults", "4 findings in 2 rounds on 1 of 2 seeds; one round with a finding per 2000 operations", "seeds with findings: 7 (", "FAIL"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

// The progress line says operations, rate, findings, elapsed time and the
// seed, counted from the seed's start; stop ends it with the final counts.
// (How a terminal's line is redrawn in place is package progress's test.)
func TestProgressLine(t *testing.T) {
	live := &stress.Live{}
	live.Ops.Add(1000) // an earlier seed's
	live.Findings.Add(3)
	var b syncBuffer
	p := startMeter(&b, 0, live, stress.Config{Ops: 10000}, "seed 9")
	live.Ops.Add(1234)
	live.Findings.Add(1)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(b.String(), "1234/") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // the meter reads the counts a few times a second
	}
	p.stop()
	l := b.String()
	for _, want := range []string{"sever stress: 1234/10000 ops (12%)", "ops/s", "1 findings", "elapsed", "seed 9"} {
		if !strings.Contains(l, want) {
			t.Errorf("progress %q lacks %q", l, want)
		}
	}
	if !strings.HasSuffix(l, "\n") || strings.ContainsAny(l, "\r\x1b") {
		t.Errorf("progress off a terminal is not plain lines: %q", l)
	}
	p.stop() // a second stop does nothing
	var nilp *stressMeter
	nilp.stop()
	var quiet bytes.Buffer
	q := startMeter(&quiet, 10*time.Second, live, stress.Config{Duration: time.Minute}, "") // nothing in the first 10s
	q.stop()
	if quiet.Len() != 0 {
		t.Errorf("a run shorter than the silent start printed %q", quiet.String())
	}
}
