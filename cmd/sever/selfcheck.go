package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// A selfTest plants one situation on fresh primitives, reporting into log.
// It returns the operations it ran and any failure of the contract that the
// log cannot express (an access after Sever returned, a hang).
type selfTest struct {
	name    string
	seed    string
	naive   bool        // the variant plants a bug the checker must catch
	catches check.Class // for naive variants: the class that must be recorded
	run     func(ctx context.Context, log *check.Log) (ops int, failure string)
}

var selfTests = []selfTest{
	{name: "active: unplug drains calls in flight", seed: "004", run: drainCheck},
	{name: "active: attribute removes its own node", seed: "001", run: selfRemoveCheck},
	{name: "waitqueue: poller woken by sever", seed: "002", run: pollWakeCheck},
	{name: "waitqueue: provider frees queue under poller", seed: "002", naive: true, catches: check.UseAfterFree, run: pollFreeCheck},
	{name: "owner: try refuses, force severs first", seed: "001", run: unloadCheck},
	{name: "owner: deferred call into unloaded module", seed: "004", naive: true, catches: check.CallIntoGoneOwner, run: deferredCallCheck},
	{name: "ref: release exactly once", seed: "003", run: releaseOnceCheck},
	{name: "ref: reference left after unregister", seed: "004", naive: true, catches: check.ReferenceAfterUnregister, run: leakedRefCheck},
}

func selfCheck(stdout, stderr io.Writer, verbose bool) int {
	w := &report{w: stdout}
	w.println("sever demo: self-check of the core primitives (the seed scenarios are not built yet)")
	w.println()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	t := &report{w: tw}
	t.println("CHECK\tSEED\tVARIANT\tOPS\tVIOLATIONS\tVERDICT")
	failed := 0
	var details []string
	for _, st := range selfTests {
		var log check.Log
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ops, failure := st.run(ctx, &log)
		vs := log.Quiesce(ctx)
		cancel()
		variant, verdict := "correct", "clean"
		ok := failure == "" && len(vs) == 0
		if st.naive {
			variant, verdict = "naive", "caught"
			ok = failure == "" && log.Count(st.catches) > 0
		}
		if failure != "" {
			verdict = "FAIL: " + failure
		} else if !ok {
			verdict = "FAIL"
		}
		if !ok {
			failed++
		}
		t.printf("%s\t%s\t%s\t%d\t%s\t%s\n", st.name, st.seed, variant, ops, summarize(vs), verdict)
		if verbose || !ok {
			for _, v := range vs {
				details = append(details, fmt.Sprintf("%s: %s\n%s", st.name, v, v.Stack))
			}
		}
	}
	w.keep(t.err)
	w.keep(tw.Flush())
	for _, d := range details {
		w.println("\n" + d)
	}
	w.println()
	if failed > 0 {
		w.printf("FAIL: %d of %d checks failed\n", failed, len(selfTests))
		return 1
	}
	w.printf("ok: %d checks; every correct variant clean, every naive variant caught\n", len(selfTests))
	if w.err != nil {
		complain(stderr, "sever selfcheck: writing the report: %v", w.err)
		return 1
	}
	return 0
}

func summarize(vs []check.Violation) string {
	if len(vs) == 0 {
		return "-"
	}
	m := map[string]int{}
	for _, v := range vs {
		m[v.Class.String()]++
	}
	var parts []string
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%s×%d", k, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// drainCheck: 8 callers hammer a provider while it is unplugged; none may be
// inside when Sever returns, and none may enter after.
func drainCheck(ctx context.Context, log *check.Log) (int, string) {
	var ops atomic.Int64
	var bad atomic.Value
	for round := 0; round < 200; round++ {
		a := sever.NewActive("cp2112/gpio", sever.WithLog(log))
		var inside atomic.Int64
		var returned atomic.Bool
		var wg sync.WaitGroup
		busy := make(chan struct{}, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				first := true
				for a.Do(func() error {
					inside.Add(1)
					if returned.Load() {
						bad.Store("a call began after Sever returned")
					}
					inside.Add(-1)
					ops.Add(1)
					return nil
				}) == nil {
					if first {
						first = false
						busy <- struct{}{}
					}
				}
			}()
		}
		<-busy // unplug while callers are busy
		<-busy
		if err := a.Sever(ctx); err != nil {
			return int(ops.Load()), err.Error()
		}
		if inside.Load() != 0 {
			bad.Store("Sever returned with calls inside")
		}
		returned.Store(true)
		wg.Wait()
	}
	if v := bad.Load(); v != nil {
		return int(ops.Load()), v.(string)
	}
	return int(ops.Load()), ""
}

// selfRemoveCheck: several writers of a "reset" attribute race to remove
// their own node; exactly one wins, nobody deadlocks.
func selfRemoveCheck(ctx context.Context, log *check.Log) (int, string) {
	ops := 0
	for round := 0; round < 100; round++ {
		a := sever.NewActive("zram0/reset", sever.WithLog(log))
		var wins atomic.Int32
		var wg sync.WaitGroup
		toks := make([]sever.Token, 4)
		for i := range toks {
			var ok bool
			if toks[i], ok = a.Enter(); !ok {
				return ops, "Enter failed on a live node"
			}
			ops++
		}
		for i := range toks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if won, _ := a.SeverSelf(ctx, &toks[i]); won {
					wins.Add(1)
				}
				a.Exit(&toks[i])
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			return ops, fmt.Sprintf("%d self-removers won, want 1", wins.Load())
		}
	}
	return ops, ""
}

// pollWakeCheck: a poller asleep on the framework's queue wakes with
// ERR|HUP when the provider goes; the queue is freed at the last put.
func pollWakeCheck(ctx context.Context, log *check.Log) (int, string) {
	q := sever.NewWaitQueue("cgroup/cpu.pressure", sever.WithLog(log))
	shell := sever.NewRef("cpu.pressure open file", q.Free)
	got := make(chan sever.Events)
	shell.Get("poller")
	log.Go("poller", func() {
		ev, _, _ := q.Wait(ctx, q.Seq())
		shell.Put("poller")
		got <- ev
	})
	for q.Waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	q.Sever() // rmdir
	ev := <-got
	shell.Put(nil) // close
	if ev != sever.EventErr|sever.EventHup {
		return 3, "poller woke with " + ev.String()
	}
	return 3, ""
}

// pollFreeCheck: seed 002's bug, the provider owning the queue and freeing
// it at release while a poller sleeps in it.
func pollFreeCheck(ctx context.Context, log *check.Log) (int, string) {
	q := sever.NewWaitQueue("psi trigger (provider-owned)", sever.WithLog(log))
	done := make(chan struct{})
	log.Go("poller", func() {
		// The naive variant: the checker, not Wait's error, is to report
		// the free under the poller.
		_, _, _ = q.Wait(ctx, q.Seq())
		close(done)
	})
	for q.Waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	q.Free() // release frees the trigger and its queue
	<-done
	return 2, ""
}

// unloadCheck: Try refuses while a file is open; Force severs the file's
// node (its release drops the pin) and then runs exit.
func unloadCheck(ctx context.Context, log *check.Log) (int, string) {
	exited := false
	mod := sever.NewOwner("zram", func() { exited = true }, sever.WithLog(log))
	node := sever.NewActive("zram0/disksize", sever.WithLog(log))
	release := log.Expect("zram0/disksize", "Release of open 1")
	mod.Get("open file")
	if _, err := mod.OnUnload("zram0", func(ctx context.Context) error {
		if err := node.Sever(ctx); err != nil {
			return err
		}
		release.Done()
		mod.Put("open file")
		return nil
	}); err != nil {
		return 0, err.Error()
	}
	if err := mod.Unload(ctx, sever.UnloadTry); err == nil {
		return 1, "Try unloaded a module with an open file"
	}
	if err := mod.Unload(ctx, sever.UnloadForce); err != nil {
		return 2, err.Error()
	}
	if !exited {
		return 2, "exit did not run"
	}
	return 2, ""
}

// deferredCallCheck: seed 004 example 1, a deferred callback that does not
// pin the module whose code it runs.
func deferredCallCheck(ctx context.Context, log *check.Log) (int, string) {
	mod := sever.NewOwner("scsi_mod", nil, sever.WithLog(log))
	if err := mod.Unload(ctx, sever.UnloadTry); err != nil { // rmmod before the work runs
		return 1, err.Error()
	}
	mod.Call("sysfs_schedule_callback_work", func() {})
	return 2, ""
}

// releaseOnceCheck: many racing holders; the release runs once, at the
// last put.
func releaseOnceCheck(ctx context.Context, log *check.Log) (int, string) {
	rel := log.Expect("uio0 shell", "free")
	r := sever.NewRef("uio0 shell", rel.Done)
	var wg sync.WaitGroup
	for range 64 {
		r.Get(nil)
		wg.Add(1)
		go func() { defer wg.Done(); r.Put(nil) }()
	}
	r.Put(nil)
	wg.Wait()
	return 129, ""
}

// leakedRefCheck: a consumer keeps a reference into provider state past
// unregister; the audit names it.
func leakedRefCheck(ctx context.Context, log *check.Log) (int, string) {
	r := sever.NewRef("i2c-3 adapter", nil, sever.WithTracking())
	r.Get("eeprom driver (never puts)")
	r.Put(nil) // unregister drops the provider's own reference
	if err := r.Audit(log, 0); err == nil {
		return 3, "Audit found no reference left"
	}
	return 3, ""
}
