package scenario_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/scenario"
	"github.com/sever-dev/sever/sim"
)

// The naive zram-rmmod's deadlock is reported by the drain's deadline
// naming a stuck attribute of zram0 (the slow writer's comp_algorithm, or
// another write that reached the lock) and, with tracking, the write
// inside it —
// and nothing is left hung (goleak in TestMain, and no GoroutineLeft).
func TestZramRmmodDeadlockNamesTheStuckStore(t *testing.T) {
	sc, _ := scenario.Find("zram-rmmod")
	for seed := int64(0); seed < 5; seed++ {
		res := scenario.Execute(context.Background(), sc, scenario.Naive, seed, sim.WithTracking())
		var named bool
		for _, v := range res.Violations {
			if v.Class == check.SeverTimeout && strings.Contains(v.Object, "/zram0/") &&
				len(v.Holders) > 0 && strings.Contains(v.Holders[0], "WriteAtContext") {
				named = true
			}
		}
		if !named || res.Summary[check.GoroutineLeft] > 0 || res.Err != nil {
			t.Errorf("seed %d: want a SeverTimeout on an attribute of zram0 held by a write, nothing left running; got %s, err %v",
				seed, scenario.ClassList(res.Summary), res.Err)
		}
	}
}

// The correct zram scenarios trace each lifetime step of the disk.
func TestZramRunsRecordLifetimeEvents(t *testing.T) {
	for _, name := range []string{"zram-rmmod", "zram-remove"} {
		sc, _ := scenario.Find(name)
		res := scenario.Execute(context.Background(), sc, scenario.Correct, 3)
		kinds := map[sim.Kind]bool{}
		for _, e := range res.Events {
			kinds[e.Kind] = true
		}
		want := []sim.Kind{sim.KindEntered, sim.KindSevered, sim.KindDrained, sim.KindFreed}
		if name == "zram-rmmod" {
			want = append(want, sim.KindUnloaded)
		}
		for _, k := range want {
			if !kinds[k] {
				t.Errorf("%s: trace has no %q event", name, k)
			}
		}
	}
}
