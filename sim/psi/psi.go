// Package psi is a cgroup hierarchy with pressure-stall files, the setting
// of seed 002 (DESIGN.md, "Seed 002"): a process writes a trigger ("some 150000 1000000") to a
// group's cpu.pressure, polls the file for the trigger's events, and the
// group is removed with rmdir while the process is still polling.
//
// The correct pressure file is a plain kernfs attribute: the trigger is the
// open's private state, the provider fires it with Tree.Notify, pollers
// sleep on the open file's own wait queue (kernfs.File.Wait), and Release —
// which kernfs runs at rmdir for files still open — frees only the
// trigger. The queue belongs to the file's shell and is freed at its last
// close, so a poller asleep across rmdir wakes with EventErr|EventHup and
// nothing it touches is freed under it.
//
// The naive pressure file (BugTriggerOwnsQueue) is the code the seed
// thread was fixing: the trigger owns its wait queue, pollers sleep on it
// (psi_trigger_poll's poll_wait on t->event_wait), and the trigger's
// release frees it (psi_trigger_destroy's kfree of t) — at rmdir, while
// the file is still open and a poller is, or will again be, on the queue.
// The checker reports check.UseAfterFree.
//
// cgroup code is built into the kernel: the hierarchy's files have no
// module owner and are never unloaded.
package psi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
)

// Bugs selects naive behaviours, one bit per seed bug; zero is the correct
// driver.
type Bugs uint

// BugTriggerOwnsQueue makes each trigger own the wait queue its pollers
// sleep on and free it in the open's release, which rmdir runs while the
// file is still open (seed 002).
const BugTriggerOwnsQueue Bugs = 1 << iota

// Hierarchy is a mounted cgroup hierarchy, /fs/cgroup on a machine's tree.
type Hierarchy struct {
	m    *sim.Machine
	t    *kernfs.Tree
	root *kernfs.Node
	bugs Bugs

	handoff sync.Mutex // serializes Watch, which learns its trigger from Store (naive only)
	mu      sync.Mutex
	groups  map[string]*Group
}

// Mount creates /fs/cgroup on m. Groups still present at m's Quiesce are
// removed then; one that cannot be is reported by the machine's audit.
func Mount(m *sim.Machine, bugs Bugs) (*Hierarchy, error) {
	t := m.Sysfs()
	fsDir, err := t.AddDir(t.Root(), kernfs.Dir{Name: "fs"})
	if err != nil {
		return nil, err
	}
	root, err := t.AddDir(fsDir, kernfs.Dir{Name: "cgroup"})
	if err != nil {
		return nil, err
	}
	h := &Hierarchy{m: m, t: t, root: root, bugs: bugs, groups: make(map[string]*Group)}
	m.OnQuiesce("rmdir cgroups", func(ctx context.Context) error {
		h.mu.Lock()
		var names []string
		for n := range h.groups {
			names = append(names, n)
		}
		h.mu.Unlock()
		for _, n := range names {
			if err := h.Rmdir(ctx, n); err != nil {
				return err
			}
		}
		return nil
	})
	m.AddAudit("cgroup", func(ctx context.Context) error {
		ents, err := t.Readdir(root)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.Kind == kernfs.KindDir {
				m.Log().Record(check.Violation{Class: check.ReferenceAfterUnregister, Object: e.Node.Path(), Detail: "cgroup left after quiesce", Stack: "psi audit"})
			}
		}
		return nil
	})
	return h, nil
}

// Group is one cgroup: a directory with a cpu.pressure file.
//
//	live ──Rmdir──▶ removed (files severed, triggers released, state freed)
type Group struct {
	h     *Hierarchy
	name  string
	dir   *kernfs.Node
	file  *kernfs.Node
	state *check.State[*groupState] // provider state, freed at rmdir

	mu       sync.Mutex
	removed  bool
	triggers map[*trigger]struct{}
	handoff  *trigger // the trigger the last Store made, for Watch (naive)
}

type groupState struct {
	someTotal time.Duration
}

// trigger is one open's pressure trigger (struct psi_trigger).
type trigger struct {
	threshold time.Duration
	acc       time.Duration
	q         *sever.WaitQueue // naive only: the queue the trigger owns
}

// openState is a pressure file's per-open state.
type openState struct {
	trig *trigger
}

// Mkdir creates the group name with its cpu.pressure file.
func (h *Hierarchy) Mkdir(name string) (*Group, error) {
	dir, err := h.t.AddDir(h.root, kernfs.Dir{Name: name, Hidden: true})
	if err != nil {
		return nil, err
	}
	g := &Group{h: h, name: name, dir: dir, triggers: make(map[*trigger]struct{})}
	g.state = check.NewState(h.m.Log(), dir.Path()+" psi group", &groupState{})
	g.file, err = h.t.AddAttr(dir, kernfs.Attr{
		Name:    "cpu.pressure",
		Mode:    0o644,
		Show:    g.show,
		Store:   g.store,
		Parse:   kernfs.String(64),
		Open:    func(c *kernfs.Call) (any, error) { return &openState{}, nil },
		Release: g.release,
	})
	if err != nil {
		return nil, errors.Join(err, h.t.Remove(context.Background(), dir))
	}
	if err := h.t.Activate(dir); err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.groups[name] = g
	h.mu.Unlock()
	return g, nil
}

// Path returns the group's directory path.
func (g *Group) Path() string { return g.dir.Path() }

// Rmdir removes group name: its files are severed (calls in flight drain,
// each open's release runs — freeing its trigger), then the group's state
// is freed. Files still open become shells.
func (h *Hierarchy) Rmdir(ctx context.Context, name string) error {
	h.mu.Lock()
	g := h.groups[name]
	delete(h.groups, name)
	h.mu.Unlock()
	if g == nil {
		return &sever.ObjectError{Object: h.root.Path() + "/" + name, Err: sever.ErrNotExist}
	}
	h.m.Record(sim.KindSevered, g.dir.Path(), "rmdir")
	err := h.t.Remove(ctx, g.dir)
	h.m.Record(sim.KindDrained, g.dir.Path(), errTextOr(err, "no callback runs; open files are shells"))
	g.mu.Lock()
	g.removed = true
	g.mu.Unlock()
	g.state.Free()
	h.m.Record(sim.KindFreed, g.dir.Path(), "psi group state")
	return err
}

func errTextOr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// Stall is the simulated scheduler: the group's tasks stalled for d. Every
// trigger whose threshold is crossed fires. Stall on a removed group does
// nothing. It is the test's way to make pressure.
func (g *Group) Stall(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.removed {
		return
	}
	if st, ok := g.state.Use("psi_account"); ok {
		st.someTotal += d
	}
	fired := false
	for t := range g.triggers {
		t.acc += d
		if t.acc < t.threshold {
			continue
		}
		t.acc = 0
		fired = true
		if t.q != nil {
			t.q.Notify(sever.EventPri)
		}
	}
	if fired && g.h.bugs&BugTriggerOwnsQueue == 0 {
		g.h.t.Notify(g.file)
	}
}

func (g *Group) show(c *kernfs.Call, buf []byte) ([]byte, error) {
	g.mu.Lock()
	st, ok := g.state.Use("psi_show")
	var total int64
	if ok {
		total = st.someTotal.Microseconds()
	}
	g.mu.Unlock()
	if !ok {
		return nil, sever.ErrNoDevice
	}
	return fmt.Appendf(buf, "some avg10=0.00 avg60=0.00 avg300=0.00 total=%d\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", total), nil
}

// store parses "some|full <threshold us> <window us>" and makes the open's
// trigger (psi_trigger_create). A second trigger on one open is EBUSY.
func (g *Group) store(c *kernfs.Call, v any) error {
	f := strings.Fields(v.(string))
	if len(f) != 3 || f[0] != "some" && f[0] != "full" {
		return sever.ErrInvalid
	}
	thr, err1 := strconv.ParseUint(f[1], 10, 32)
	win, err2 := strconv.ParseUint(f[2], 10, 32)
	if err1 != nil || err2 != nil || thr == 0 || win < thr {
		return sever.ErrInvalid
	}
	os := c.Private().(*openState)
	g.mu.Lock()
	defer g.mu.Unlock()
	if os.trig != nil {
		return sever.ErrBusy
	}
	t := &trigger{threshold: time.Duration(thr) * time.Microsecond}
	if g.h.bugs&BugTriggerOwnsQueue != 0 {
		t.q = sever.NewWaitQueue(c.Path()+" trigger event_wait", g.h.m.Options()...)
	}
	os.trig = t
	g.triggers[t] = struct{}{}
	g.handoff = t
	g.h.m.Record(sim.KindEntered, c.Path(), "psi_trigger_create "+v.(string))
	return nil
}

// release is cgroup_pressure_release: it destroys the open's trigger. The
// naive trigger frees its own wait queue here — the seed's bug: kernfs
// runs release at rmdir, while the file may still be polled.
func (g *Group) release(n *kernfs.Node, private any) {
	os := private.(*openState)
	g.mu.Lock()
	t := os.trig
	if t != nil {
		delete(g.triggers, t)
	}
	g.mu.Unlock()
	if t == nil {
		g.h.m.Record(sim.KindReleased, n.Path(), "release of an open without a trigger")
	} else {
		g.h.m.Record(sim.KindReleased, n.Path(), "psi_trigger_destroy")
	}
	if t != nil && t.q != nil {
		t.q.Free() // kfree(t): the queue pollers sleep on goes with it
		g.h.m.Record(sim.KindFreed, n.Path(), "trigger and its wait queue (freed by the provider)")
	}
}

// Watcher is a process's side of a pressure trigger: an open pressure file
// with a trigger written to it, polled for events. A Watcher is used by one
// goroutine at a time.
type Watcher struct {
	h    *Hierarchy
	f    *kernfs.File
	trig *trigger // naive: the trigger whose queue Poll sleeps on
	seq  uint64
	buf  []byte
}

// Watch opens the pressure file at path and writes trigger to it, as a
// process does before polling.
func (h *Hierarchy) Watch(path, trigger string) (*Watcher, error) {
	h.handoff.Lock()
	defer h.handoff.Unlock()
	f, err := h.t.Open(path, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write([]byte(trigger)); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	w := &Watcher{h: h, f: f, buf: make([]byte, kernfs.PageSize)}
	if h.bugs&BugTriggerOwnsQueue != 0 {
		if g := h.groupOf(f.Node()); g != nil {
			g.mu.Lock()
			w.trig, g.handoff = g.handoff, nil
			g.mu.Unlock()
			if w.trig != nil {
				w.seq = w.trig.q.Seq()
			}
		}
	}
	return w, nil
}

func (h *Hierarchy) groupOf(file *kernfs.Node) *Group {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range h.groups {
		if g.file == file {
			return g
		}
	}
	return nil
}

// Poll blocks until the trigger fires (EventPri), the group is removed
// (EventErr|EventHup and an error wrapping sever.ErrNoDevice), the watcher
// is closed or ctx is done.
//
// Correct: it sleeps on the open file's own queue, kernfs.File.Wait, and
// re-arms by reading the file. Naive: it sleeps on the trigger's queue, as
// do_select does on the queue psi_trigger_poll handed it.
func (w *Watcher) Poll(ctx context.Context) (sever.Events, error) {
	if w.trig != nil {
		ev, seq, err := w.trig.q.Wait(ctx, w.seq)
		w.seq = seq
		return ev, err
	}
	ev, err := w.f.Wait(ctx)
	if err != nil {
		return ev, err
	}
	if _, err := w.f.Seek(0, 0); err == nil {
		// Re-arm: the next Notify counts from here. A read that fails
		// (the cgroup going) is seen by the next Wait.
		_, _ = w.f.Read(w.buf)
	}
	return ev, nil
}

// Close closes the pressure file. A closed Watcher must not be polled.
func (w *Watcher) Close() error { return w.f.Close() }
