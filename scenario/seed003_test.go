package scenario_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/scenario"
	"github.com/sever-dev/sever/sim"
)

// Correct: the data area is freed exactly once, after the unregistration
// and the daemon's last unmap; naive: at the unregistration, before the
// daemon's last touch.
func TestTcmuPagesAreFreedOnceAfterTheLastUnmap(t *testing.T) {
	sc, _ := scenario.Find("tcmu-unregister")
	for _, v := range scenario.Variants() {
		res := scenario.Execute(context.Background(), sc, v, 11)
		var freed, drained, touched int
		for i, e := range res.Events {
			switch {
			case e.Kind == sim.KindFreed && strings.HasSuffix(e.Object, "data area"):
				freed = i
			case e.Kind == sim.KindDrained && strings.HasSuffix(e.Object, "tcmu0"):
				drained = i
			case e.Kind == sim.KindStep && strings.Contains(e.Detail, "finish the command in flight"):
				touched = i
			}
		}
		switch {
		case v == scenario.Correct && !(freed > drained && freed > touched):
			t.Errorf("correct: pages freed at event %d, unregistered at %d, last touch at %d; want the free last", freed, drained, touched)
		case v == scenario.Naive && !(freed < drained && res.Summary[check.UseAfterFree] > 0):
			t.Errorf("naive: pages freed at event %d, unregistered at %d, %s; want freed inside the unregistration and a use after free",
				freed, drained, scenario.ClassList(res.Summary))
		}
	}
}
