package scenario

import (
	"errors"
	"math/rand"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim/tcmu"
)

// seed003 is seed 003 (uio late_release, Feb 2021; DESIGN.md, "Seed
// 003"): tcmu unregisters its uio device while tcmu-runner has it open,
// blocked in read, polled, and its data area mapped.
//
// Correct: the unregistration is immediate. The blocked read wakes with
// EIO, the poller with EventErr|EventHup, every later read or write on the
// open files fails with EIO, and each open's release runs once, at the
// unregistration. The mapping stays valid: the data area is a sever.Region,
// the framework's memory, freed by the framework exactly once, after the
// unregistration and the daemon's last unmap and close, with no callback
// into tcmu. rmmod --try target_core_user is refused (EBUSY) while tcmu0 is
// bound, and succeeds once it is destroyed, with the daemon still mapping
// the data area; rmmod uio is refused while target_core_user is loaded.
//
// Naive (tcmu.BugFreeAtUnregister): tcmu frees its pages in Remove, at
// unregister, with the daemon still mapping them: its last touch of the
// mapping — finishing the command in flight — is check.UseAfterFree.
func seed003() []Scenario {
	return []Scenario{{
		Name:    "tcmu-unregister",
		Seed:    "003",
		Doc:     "DESIGN.md#seed-003",
		Title:   "tcmu unregisters its uio device while tcmu-runner has it open and mapped",
		Bug:     "tcmu frees its data area pages at unregister, under the daemon's mapping",
		Catches: check.UseAfterFree,
		Run:     runTcmuUnregister,
	}}
}

func runTcmuUnregister(r *Run) error {
	ctx := r.Context()
	var bugs tcmu.Bugs
	if r.Naive() {
		bugs = tcmu.BugFreeAtUnregister
	}
	r.Step("insmod uio; insmod target_core_user")
	tgt, err := tcmu.Load(ctx, r.M, bugs)
	if err != nil {
		return err
	}
	r.Step("configfs: mkdir and enable user_0/tcmu0")
	d, err := tgt.Create(ctx, "tcmu0")
	if err != nil {
		return err
	}
	u := d.UIO()
	dev := "/dev/" + u.Name()

	// tcmu-runner: the device's fd, mapped, and a thread blocked in read
	// processing commands until the device goes.
	r.Step("tcmu-runner: open %s, mmap the data area, read for commands", dev)
	runner, err := d.OpenRunner()
	if err != nil {
		return err
	}
	defer runner.Close()
	daemonDone := make(chan struct{})
	r.Go(func(rng *rand.Rand) {
		defer close(daemonDone)
		for {
			Yield(rng)
			_, err := runner.Wait(ctx)
			r.Op()
			if err != nil {
				if r.Variant == Correct {
					r.ExpectGone("tcmu-runner: read across unregister", err, sever.ErrIO)
				}
				r.Step("tcmu-runner: read returned %v; winding down", err)
				return
			}
			if err := runner.Touch("process the command ring"); err != nil {
				r.Failf("tcmu-runner: touch its mapping: %v", err)
			}
		}
	})
	// A second thread polls its own fd for commands.
	poller, err := u.Open(os.O_RDONLY)
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed { // an early return
			r.Close("poller", poller)
		}
	}()
	pollDone := make(chan struct{})
	r.Go(func(rng *rand.Rand) {
		defer close(pollDone)
		buf := make([]byte, 4)
		for {
			Yield(rng)
			ev, err := poller.Wait(ctx, sever.EventIn)
			r.Op()
			if err != nil || ev&(sever.EventErr|sever.EventHup) != 0 {
				if r.Variant == Correct {
					r.ExpectGone("poll across unregister", err, sever.ErrIO)
					if ev != sever.EventErr|sever.EventHup {
						r.Failf("poll across unregister woke with %v, want EventErr|EventHup", ev)
					}
				}
				r.Step("poller: poll returned %v (%v)", ev, err)
				return
			}
			_, _ = poller.Read(buf) // consume the count; EIO here is seen by the next poll
		}
	})

	buf := make([]byte, 64)
	eventPath := u.Device().Path() + "/event"
	var ops []Op
	var destroying atomic.Bool // the rmdir has begun: tcmu0 may be unbound
	for range 2 + r.Rand.Intn(2) {
		ops = append(ops,
			Op{Name: "target: queue a SCSI command to tcmu0", Gone: []error{sever.ErrNoDevice}, Do: d.Queue},
			Op{Name: "tcmu-runner: touch the mapped data area", Do: func() error { return runner.Touch("read a command's data") }},
			Op{Name: "cat " + eventPath, Gone: []error{sever.ErrNotExist, sever.ErrNoDevice}, Do: func() error {
				f, err := r.M.Sysfs().Open(eventPath, os.O_RDONLY)
				if err != nil {
					return err
				}
				defer r.Close("f", f)
				_, err = f.Read(buf)
				return err
			}},
			Op{Name: "rmmod --try target_core_user (refused while tcmu0 is bound)", Do: func() error {
				err := r.M.Unload(ctx, tcmu.ModuleName, sever.UnloadTry)
				if errors.Is(err, sever.ErrBusy) {
					return nil
				}
				if (err == nil || errors.Is(err, sever.ErrNotExist)) && destroying.Load() {
					return nil // tcmu0 is gone: nothing pins the module, mapped or not
				}
				return errors.New("not refused with EBUSY while tcmu0 is bound: " + strconv.Quote(errString(err)))
			}},
		)
	}
	ops = append(ops, Op{Name: "rmmod uio (refused while target_core_user is loaded)", Do: func() error {
		if tgt.Owner().State() == sever.OwnerGone {
			return nil // an rmmod --try above unloaded target_core_user: uio stays for the end
		}
		return expectBusy(r.M.Rmmod(ctx, tcmu.UIOModule))
	}})
	r.Rand.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	if err := r.Interleave(ops, Op{Name: "configfs: rmdir tcmu0 (tcmu unregisters " + u.Name() + ")", Do: func() error {
		destroying.Store(true)
		return tgt.Destroy(ctx, d)
	}}); err != nil {
		return err
	}
	<-daemonDone
	<-pollDone

	// After the unregistration, before the daemon lets go.
	f := runner.File()
	if _, err := f.Read(make([]byte, 4)); r.Variant == Correct {
		r.ExpectGone("read "+dev+" after unregister", err, sever.ErrIO)
	}
	if _, err := f.Write([]byte{1, 0, 0, 0}); r.Variant == Correct {
		r.ExpectGone("write "+dev+" after unregister", err, sever.ErrIO)
	}
	if ev, err := f.Poll(); r.Variant == Correct && (ev != sever.EventErr|sever.EventHup || !errors.Is(err, sever.ErrIO)) {
		r.Failf("poll %s after unregister: %v, %v; want EventErr|EventHup and EIO", dev, ev, err)
	}
	if r.Variant == Correct {
		if n := d.Frees(); n != 0 {
			r.Failf("data area freed %d times while still mapped", n)
		}
		if n := d.Releases(); n != 2 {
			r.Failf("uio release ran %d times at unregister for 2 open files, want 2", n)
		}
	}
	r.Step("rmmod --try target_core_user while tcmu-runner still maps the data area")
	if err := r.M.Unload(ctx, tcmu.ModuleName, sever.UnloadTry); r.Variant == Correct && err != nil && !errors.Is(err, sever.ErrNotExist) {
		r.Failf("rmmod --try target_core_user with tcmu0 destroyed and its data area mapped: %v; want it unloaded (a region pins no module)", err)
	}
	r.Step("tcmu-runner: finish the command in flight in the mapping, unmap, close")
	if err := runner.Touch("complete the last command"); err != nil {
		r.Failf("tcmu-runner: touch its mapping after unregister: %v", err)
	}
	runner.Close()
	r.Close("poller", poller)
	closed = true
	if r.Variant == Correct {
		if n := d.Frees(); n != 1 {
			r.Failf("data area freed %d times after the last unmap and close, want exactly 1", n)
		}
		if n := d.Releases(); n != 2 {
			r.Failf("uio release ran %d times in all for 2 opens, want 2 (none at the later close)", n)
		}
	}
	r.Step("rmmod uio")
	if err := r.M.Rmmod(ctx, tcmu.UIOModule); err != nil && r.Variant == Correct {
		r.Failf("rmmod uio after target_core_user and the daemon let go: %v", err)
	}
	return nil
}

// expectBusy turns the refusal a step expects into success, and anything
// else into an error naming what came instead.
func expectBusy(err error) error {
	if errors.Is(err, sever.ErrBusy) {
		return nil
	}
	return errors.New("not refused with EBUSY: " + strconv.Quote(errString(err)))
}

func errString(err error) string {
	if err == nil {
		return "succeeded"
	}
	return err.Error()
}
