package scenario_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sever-dev/sever/scenario"
)

// interleavings is how many seeds each correct variant must be clean over.
func interleavings() int {
	if testing.Short() {
		return 100
	}
	return 1000
}

// sweep runs sc in v over seeds [0, n) on as many workers as there are
// CPUs, and reports each run that fails its verdict, with the replay flags.
func sweep(t *testing.T, sc scenario.Scenario, v scenario.Variant, n int) {
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seed := next.Add(1) - 1
				if seed >= int64(n) || failed.Load() >= 3 {
					return
				}
				res := scenario.Execute(context.Background(), sc, v, seed)
				if res.Pass() {
					continue
				}
				failed.Add(1)
				var b strings.Builder
				fmt.Fprintf(&b, "%s %s, seed %d (replay: sever demo --scenario %s --variant %s --seed %d --runs 1 -v): %s; violations %s",
					sc.Name, v, seed, sc.Name, v, seed, res.Verdict(), scenario.ClassList(res.Summary))
				for _, f := range res.Failures {
					fmt.Fprintf(&b, "\n  promise broken: %s", f)
				}
				if res.Err != nil {
					fmt.Fprintf(&b, "\n  error: %v", res.Err)
				}
				for _, vi := range res.Violations {
					fmt.Fprintf(&b, "\n  %s", vi)
				}
				t.Error(b.String())
			}
		}()
	}
	wg.Wait()
}

func TestCorrectVariantIsCleanOverInterleavings(t *testing.T) {
	for _, sc := range scenario.All() {
		t.Run(sc.Name, func(t *testing.T) {
			sweep(t, sc, scenario.Correct, interleavings())
		})
	}
}

func TestNaiveVariantIsCaughtWithItsClass(t *testing.T) {
	for _, sc := range scenario.All() {
		t.Run(sc.Name, func(t *testing.T) {
			sweep(t, sc, scenario.Naive, interleavings())
		})
	}
}

func TestEverySeedHasAScenario(t *testing.T) {
	names := map[string]bool{}
	seeds := map[string]bool{}
	for _, sc := range scenario.All() {
		if names[sc.Name] {
			t.Errorf("two scenarios named %q", sc.Name)
		}
		names[sc.Name] = true
		seeds[sc.Seed] = true
		if sc.Run == nil || sc.Doc == "" || sc.Title == "" || sc.Bug == "" || sc.Catches == 0 {
			t.Errorf("scenario %q is incomplete: %+v", sc.Name, sc)
		}
		if sc.Doc != "DESIGN.md#seed-"+sc.Seed {
			t.Errorf("scenario %q: seed %s but document %s", sc.Name, sc.Seed, sc.Doc)
		}
	}
	for _, want := range []string{"000", "002", "004"} {
		if !seeds[want] {
			t.Errorf("no scenario for seed %s", want)
		}
	}
}

func TestRunRecordsLifetimeEvents(t *testing.T) {
	sc, ok := scenario.Find("psi-rmdir")
	if !ok {
		t.Fatal("psi-rmdir not found")
	}
	res := scenario.Execute(context.Background(), sc, scenario.Correct, 7)
	kinds := map[string]bool{}
	for _, e := range res.Events {
		kinds[string(e.Kind)] = true
	}
	for _, k := range []string{"step", "entered", "severed", "released", "drained", "freed"} {
		if !kinds[k] {
			t.Errorf("trace of a correct psi-rmdir run has no %q event", k)
		}
	}
}
