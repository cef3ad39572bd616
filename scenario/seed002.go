package scenario

import (
	"math/rand"
	"os"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim/psi"
)

// seed002 is seed 002 (kernfs_ops.free, Jun 2023): a process polls a PSI
// trigger on a cgroup's cpu.pressure while the cgroup is removed.
//
// Correct: the pressure file is a kernfs attribute; the poller sleeps on
// its open file's own queue, which kernfs owns and frees at the last
// close. rmdir severs the file: the poller wakes with EventErr|EventHup
// and ENODEV, reads of files held open fail with ENODEV, opens by path
// with ENOENT; the trigger's release runs once, at rmdir.
//
// Naive (psi.BugTriggerOwnsQueue): the trigger owns the wait queue and its
// release (run by rmdir, before the last fput) frees it while the poller
// sleeps on it or is about to poll it again — check.UseAfterFree, the
// poll_freewait use of the freed waitqueue head in the thread.
func seed002() []Scenario {
	return []Scenario{{
		Name:    "psi-rmdir",
		Seed:    "002",
		Doc:     "DESIGN.md#seed-002",
		Title:   "poll a PSI trigger while its cgroup is removed",
		Bug:     "the trigger owns its wait queue and frees it at release, under the poller",
		Catches: check.UseAfterFree,
		Run:     runPSIRmdir,
	}}
}

func runPSIRmdir(r *Run) error {
	ctx := r.Context()
	var bugs psi.Bugs
	if r.Naive() {
		bugs = psi.BugTriggerOwnsQueue
	}
	h, err := psi.Mount(r.M, bugs)
	if err != nil {
		return err
	}
	g, err := h.Mkdir("workload")
	if err != nil {
		return err
	}
	path := g.Path() + "/cpu.pressure"

	// The poller: a monitoring daemon that polls its trigger until the
	// file reports the cgroup gone, then closes it.
	r.Step("daemon: open %s, write trigger \"some 150000 1000000\", poll", path)
	w, err := h.Watch(path, "some 150000 1000000")
	if err != nil {
		return err
	}
	r.Go(func(rng *rand.Rand) {
		defer r.Close("w", w)
		for {
			Yield(rng)
			ev, err := w.Poll(ctx)
			if err == nil {
				r.Step("daemon: poll woke with %v", ev)
				continue
			}
			{
				if r.Variant == Correct {
					r.ExpectGone("poll across rmdir", err)
					if ev&(sever.EventErr|sever.EventHup) == 0 {
						r.Failf("poll across rmdir woke with %v, want EventErr|EventHup", ev)
					}
				}
				r.Step("daemon: poll returned %v (%v); close", ev, err)
				return
			}
		}
	})

	// A reader holding the file open, and a second trigger that is open
	// but never polled.
	reader, err := r.M.Sysfs().Open(path, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer r.Close("reader", reader)
	idle, err := h.Watch(path, "full 50000 1000000")
	if err != nil {
		return err
	}
	defer r.Close("idle", idle)

	buf := make([]byte, 256)
	ops := []Op{}
	for i := range 3 + r.Rand.Intn(3) {
		ops = append(ops,
			Op{Name: "scheduler: stall 200ms", Do: func() error { g.Stall(200 * time.Millisecond); return nil }},
			Op{Name: "reader: read cpu.pressure (held open)", Gone: []error{sever.ErrNoDevice}, Do: func() error {
				if _, err := reader.Seek(0, 0); err != nil {
					return err
				}
				_, err := reader.Read(buf)
				return err
			}},
		)
		if i == 1 {
			ops = append(ops, Op{Name: "cat cpu.pressure (open by path)", Gone: []error{sever.ErrNotExist, sever.ErrNoDevice}, Do: func() error {
				f, err := r.M.Sysfs().Open(path, os.O_RDONLY)
				if err != nil {
					return err
				}
				defer r.Close("f", f)
				_, err = f.Read(buf)
				return err
			}})
		}
	}
	return r.Interleave(ops, Op{Name: "rmdir " + g.Path(), Do: func() error { return h.Rmdir(ctx, "workload") }})
}
