// Package sim is a simulated machine — where a user's own driver starts
// (New), and what the seed scenarios run on: one value
// that holds its own driver core (buses, device tree, sysfs, dev/
// namespace), its modules, its violation log and its trace. Several
// machines run side by side in one process and share nothing.
//
// The simulated hardware and drivers live in sub-packages (sim/cp2112,
// sim/gpiokeys, sim/psi, sim/scsi), each built on the subsystems the way a
// driver author would build on them; each driver's code belongs to a module
// (a sever.Owner) named after the seed's module. A driver's naive variant —
// the bug its seed describes — is a separate, documented option of its
// package, so the checker can be shown catching it.
//
// A machine's life:
//
//	m := sim.New("m0")
//	scsiMod, _ := m.Insmod("scsi_mod", nil)
//	... plug hardware, open files, unplug, rmmod ...
//	vs, err := m.Quiesce(ctx) // unplug and unload everything, audit, return the violations
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// Option configures a Machine.
type Option func(*config)

type config struct {
	watchAfter time.Duration
	watchTo    io.Writer
	tracking   bool
	observer   sever.Observer
	sopt       sever.Option // sever.WithObserver(observer), made once per WithObserver
}

// WithTracking makes every reference and access record who took it, so
// audits and stuck removals name their holders with stacks. It slows the
// machine down.
func WithTracking() Option { return func(c *config) { c.tracking = true } }

// WithWatchdog sets how long a removal on the machine waits for calls in
// flight before it reports so (d <= 0: device.DefaultWatchdog, 5 s), and a
// writer that gets the report too (nil: only the trace). Without this
// option the watchdog is on with the default delay, reporting into the
// trace.
func WithWatchdog(d time.Duration, w io.Writer) Option {
	return func(c *config) { c.watchAfter, c.watchTo = d, w }
}

// WithObserver reports the lifetime events of every primitive the machine
// makes to o (sever.WithObserver), the violations its log records
// (sever.ObserveLog), and the events of its trace other than violations as
// sever.EventNote, whose State is the trace event's kind. Machines made
// with the same WithObserver value number their objects in one sequence,
// so events of machines made one after another (a stress run's rounds)
// never share an ID. A nil o observes nothing.
func WithObserver(o sever.Observer) Option {
	opt := sever.WithObserver(o)
	return func(c *config) { c.observer, c.sopt = o, opt }
}

// Machine is one simulated computer. Everything it holds — devices, sysfs,
// char devices, modules, the violation log, the trace — is its own.
//
// A Machine is safe for concurrent use. Its life ends with Quiesce, after
// which it must not be used except to read its log and trace.
type Machine struct {
	name  string
	log   *check.Log
	core  *device.Core
	trace *Trace

	mu       sync.Mutex
	modDir   *kernfs.Node // /module
	mods     []*module    // in insertion order
	platform *device.Bus
	teardown []hook
	audits   []hook
	quiesced bool
}

type module struct {
	name      string
	owner     *sever.Owner
	deps      []*module
	dir       *kernfs.Node // /module/<name>; nil if it could not be made
	unloading int          // Unloads between their dependency check and their end; guarded by Machine.mu
}

type hook struct {
	name string
	fn   func(ctx context.Context) error
}

type machineKey struct{}

// New returns a fresh machine named name with an empty device tree, no
// modules and a clean log. Every violation the log records is also written
// to the machine's trace.
//
// New is where a user's own driver starts: make a machine, register a
// driver on its Platform bus (or its Core's buses), register devices, use
// them as consumers, unplug, and Quiesce for the checker's verdict. Its
// watchdog is on: a removal that has waited more than 5 s (see
// WithWatchdog) for calls in flight records one KindWatchdog event naming
// the object, the calls inside and, under WithTracking, the stacks that
// entered; the removal goes on waiting.
func New(name string, opts ...Option) *Machine {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	m := &Machine{name: name, log: new(check.Log), trace: newTrace(name)}
	if cfg.watchAfter <= 0 {
		cfg.watchAfter = device.DefaultWatchdog
	}
	watchTo := cfg.watchTo
	sopts := []sever.Option{sever.WithWatchdog(cfg.watchAfter, func(line string) {
		m.trace.Record(KindWatchdog, "sever", line)
		if watchTo != nil {
			_, _ = fmt.Fprintln(watchTo, line) // the line is in the trace already; a writer that fails has nowhere else to say so
		}
	})}
	if cfg.tracking {
		sopts = append(sopts, sever.WithTracking())
	}
	if cfg.observer != nil {
		sopts = append(sopts, cfg.sopt)
		sever.ObserveLog(m.log, cfg.observer)
		m.trace.obs = cfg.observer
	}
	m.core = device.NewCore(name, m.log, sopts...)
	m.modDir, _ = m.Sysfs().AddDir(m.Sysfs().Root(), kernfs.Dir{Name: "module"})
	device.Local(m.core, machineKey{}, func() *Machine { return m })
	m.log.Observe(func(v check.Violation) {
		m.trace.Record(KindViolation, v.Object, v.Class.String()+": "+v.Detail)
	})
	return m
}

// Of returns the machine whose driver core is c, or nil if c was not made
// by New. Driver callbacks, which receive devices, use it to reach their
// machine's trace.
func Of(c *device.Core) *Machine {
	return device.Local(c, machineKey{}, func() *Machine { return nil })
}

// Name returns the machine's name.
func (m *Machine) Name() string { return m.name }

// Log returns the machine's violation log.
func (m *Machine) Log() *check.Log { return m.log }

// Core returns the machine's driver core.
func (m *Machine) Core() *device.Core { return m.core }

// Sysfs returns the machine's attribute tree.
func (m *Machine) Sysfs() *kernfs.Tree { return m.core.Sysfs() }

// Dev returns the machine's dev/ namespace.
func (m *Machine) Dev() *chardev.Registry { return chardev.RegistryOf(m.core) }

// Trace returns the machine's trace.
func (m *Machine) Trace() *Trace { return m.trace }

// Record records an event in the machine's trace; see Trace.Record.
func (m *Machine) Record(kind Kind, object, detail string) { m.trace.Record(kind, object, detail) }

// Options returns the sever options of the machine's primitives (its log,
// and tracking if asked for), for drivers that make their own.
func (m *Machine) Options() []sever.Option { return m.core.Options() }

// Platform returns the machine's platform bus, where devices that are not
// discovered (a gpio-keys node of a devicetree) are registered. It is made
// on first use.
func (m *Machine) Platform() *device.Bus {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.platform == nil {
		b, err := m.core.NewBus(device.BusConfig{Name: "platform"})
		if err != nil {
			b = m.core.Bus("platform")
		}
		m.platform = b
	}
	return m.platform
}

// Insmod inserts the module name: a live sever.Owner whose exit function is
// exit (nil: none) and which pins each of deps, by name, until it is
// unloaded — as a module's use of another's symbols does. It fails with an
// error wrapping sever.ErrExist if a module of that name is loaded, and
// sever.ErrNotExist if a dependency is not.
func (m *Machine) Insmod(name string, exit func(), deps ...string) (*sever.Owner, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if md := m.findLocked(name); md != nil && md.owner.State() != sever.OwnerGone {
		return nil, &sever.ObjectError{Object: "module " + name, Err: sever.ErrExist}
	}
	md := &module{name: name}
	tag := "module " + name
	for _, dn := range deps {
		d := m.findLocked(dn)
		// A dependency being unloaded is refused like a missing one: an
		// Unload has checked that nothing depends on it and must not find
		// a new dependent's pin to wait for.
		if d == nil || d.unloading > 0 || !d.owner.TryGet(tag) {
			for _, got := range md.deps {
				got.owner.Put(tag)
			}
			return nil, &sever.ObjectError{Object: "module " + name, Err: fmt.Errorf("needs %s: %w", dn, sever.ErrNotExist)}
		}
		md.deps = append(md.deps, d)
	}
	md.owner = sever.NewOwner(name, func() {
		if exit != nil {
			exit()
		}
		for _, d := range md.deps {
			d.owner.Put(tag)
		}
		m.trace.Record(KindUnloaded, "module "+name, "exit ran")
	}, m.core.Options()...)
	m.mods = append(m.mods, md)
	m.addModuleDirLocked(md)
	m.trace.Record(KindLoaded, "module "+name, strings.Join(deps, ","))
	return md.owner, nil
}

func (m *Machine) findLocked(name string) *module {
	for i := len(m.mods) - 1; i >= 0; i-- {
		if m.mods[i].name == name {
			return m.mods[i]
		}
	}
	return nil
}

// Module returns the most recently inserted module named name, or nil.
func (m *Machine) Module(name string) *sever.Owner {
	m.mu.Lock()
	defer m.mu.Unlock()
	if md := m.findLocked(name); md != nil {
		return md.owner
	}
	return nil
}

// Modules returns the names of the modules inserted, in insertion order,
// with their states.
func (m *Machine) Modules() map[string]sever.OwnerState {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]sever.OwnerState, len(m.mods))
	for _, md := range m.mods {
		out[md.name] = md.owner.State()
	}
	return out
}

// Rmmod unloads module name the way rmmod does: it refuses with an error
// wrapping sever.ErrBusy while a loaded module depends on it, and otherwise
// takes it down with sever.UnloadForce — its drivers are unbound and its
// nodes and char devices severed first, calls in flight drain, and it waits
// for pins held by deferred work of its own (never for a user to close a
// file). It fails with sever.ErrNotExist for a module not loaded. Once the
// module is gone its /module/<name> directory is removed. Rmmod is Unload
// with sever.UnloadForce.
func (m *Machine) Rmmod(ctx context.Context, name string) error {
	return m.Unload(ctx, name, sever.UnloadForce)
}

// Unload unloads module name under policy p and then removes its
// /module/<name> directory. Whatever the policy, it refuses with an error
// wrapping sever.ErrBusy, and changes nothing, while a loaded module
// depends on it (its symbols are in use). With sever.UnloadTry it also
// refuses, changing nothing, while any pin on the module is held — a bound
// device, an open file of its code, a call in flight, deferred work: the
// "try" of seed 001, which a user cannot turn into a hang. With
// sever.UnloadForce it is what Rmmod does. It fails with an error wrapping
// sever.ErrNotExist for a module not loaded, and with sever.Owner.Unload's
// error otherwise. If ctx ends while calls are still in flight, that error
// wraps sever.ErrUnloadInBackground: the unload goes on without the
// caller, and the directory is removed when the module is gone.
//
// It must not be called from a callback of the module's own /module
// directory; writing that directory's unload attribute is the way to
// unload from there.
func (m *Machine) Unload(ctx context.Context, name string, p sever.Policy) error {
	m.mu.Lock()
	md := m.findLocked(name)
	m.mu.Unlock()
	if md == nil {
		return &sever.ObjectError{Object: "module " + name, Err: sever.ErrNotExist}
	}
	if err := m.unload(ctx, md, p); err != nil {
		return err
	}
	if md.dir != nil {
		if err := m.Sysfs().Remove(ctx, md.dir); err != nil {
			return err
		}
	}
	return nil
}

// unload is Unload of md but for the removal of the module's directory.
func (m *Machine) unload(ctx context.Context, md *module, p sever.Policy) error {
	name := md.name
	m.mu.Lock()
	if md.owner.State() == sever.OwnerGone {
		m.mu.Unlock()
		return &sever.ObjectError{Object: "module " + name, Err: sever.ErrNotExist}
	}
	var users []string
	for _, o := range m.mods {
		if o.owner.State() != sever.OwnerGone && slices.Contains(o.deps, md) {
			users = append(users, o.name)
		}
	}
	if len(users) > 0 {
		m.mu.Unlock()
		return &sever.ObjectError{Object: "module " + name, Err: fmt.Errorf("in use by %s: %w", strings.Join(users, ","), sever.ErrBusy)}
	}
	md.unloading++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		md.unloading--
		m.mu.Unlock()
	}()
	if p == sever.UnloadTry {
		if err := md.owner.Unload(ctx, sever.UnloadTry); err != nil {
			m.trace.Record(KindStep, "module "+name, "rmmod (try): "+err.Error())
			m.removeDirWhenGone(md, err)
			return err
		}
		m.trace.Record(KindStep, "module "+name, "rmmod (try): it had no users; unloaded")
		return nil
	}
	m.trace.Record(KindSevered, "module "+name, "rmmod: unbinding its drivers, severing its nodes")
	err := md.owner.Unload(ctx, sever.UnloadForce)
	m.trace.Record(KindDrained, "module "+name, errText(err, "unloaded"))
	m.removeDirWhenGone(md, err)
	return err
}

// removeDirWhenGone removes md's directory once its owner is gone, if err
// says the unload goes on in the background (sever.ErrUnloadInBackground):
// the caller that gave up waiting no longer removes it.
func (m *Machine) removeDirWhenGone(md *module, err error) {
	if md.dir == nil || !errors.Is(err, sever.ErrUnloadInBackground) {
		return
	}
	m.log.Go("module "+md.name+": remove its directory once unloaded", func() {
		<-md.owner.Gone()
		if err := m.Sysfs().Remove(context.Background(), md.dir); err != nil {
			m.trace.Record(KindStep, "module "+md.name, "remove its directory after the background unload: "+err.Error())
		}
	})
}

// addModuleDirLocked makes /module/<name> for md, as sysfs has it for a
// loaded module:
//
//	refcnt     read: the pins held on the module now (sever.Owner.Pins):
//	           dependent modules, bound devices, open files of its code,
//	           calls in flight, deferred work
//	initstate  read: live, going or gone
//	unload     write "try" or "force": Unload with sever.UnloadTry or
//	           sever.UnloadForce, then the directory goes; anything else
//	           is EINVAL, a refused try (or a module others depend on)
//	           EBUSY
//
// The files are built-in code (no owner), so an open of them pins nothing
// and the module's own unload never waits for them; the unload attribute
// removes its own directory with Call.RemoveSelf, so a write to it cannot
// deadlock on itself.
func (m *Machine) addModuleDirLocked(md *module) {
	if m.modDir == nil {
		return
	}
	t := m.Sysfs()
	dir, err := t.AddDir(m.modDir, kernfs.Dir{Name: md.name, Hidden: true})
	if err != nil {
		return // a directory of an earlier instance that failed to unload
	}
	o := md.owner
	_, err1 := t.AddAttr(dir, kernfs.Attr{Name: "refcnt", Show: func(_ *kernfs.Call, buf []byte) ([]byte, error) {
		return fmt.Appendf(buf, "%d\n", o.Pins()), nil
	}})
	_, err2 := t.AddAttr(dir, kernfs.Attr{Name: "initstate", Show: func(_ *kernfs.Call, buf []byte) ([]byte, error) {
		return append(append(buf, o.State().String()...), '\n'), nil
	}})
	_, err3 := t.AddAttr(dir, kernfs.Attr{Name: "unload", Parse: kernfs.Enum("try", "force"), Store: func(c *kernfs.Call, v any) error {
		p := sever.UnloadTry
		if v.(string) == "force" {
			p = sever.UnloadForce
		}
		m.trace.Record(KindStep, c.Path(), "write "+v.(string))
		if err := m.unload(c.Context(), md, p); err != nil {
			return err
		}
		// The module is gone: its directory goes, this file's with it.
		_, err := c.RemoveSelf(context.Background(), dir)
		return err
	}})
	if err := errors.Join(err1, err2, err3); err != nil {
		// The module works without its directory; the trace says why
		// it has none.
		m.trace.Record(KindStep, dir.Path(), "module directory: "+errors.Join(err, t.Remove(context.Background(), dir)).Error())
		return
	}
	if err := t.Activate(dir); err != nil {
		m.trace.Record(KindStep, dir.Path(), "module directory: "+err.Error())
		return
	}
	md.dir = dir
}

func errText(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// OnQuiesce registers fn to run at the start of Quiesce, newest first,
// before devices are unregistered and modules unloaded: the operator's
// clean-up that is not a device (a cgroup to rmdir).
func (m *Machine) OnQuiesce(name string, fn func(ctx context.Context) error) {
	m.mu.Lock()
	m.teardown = append(m.teardown, hook{name, fn})
	m.mu.Unlock()
}

// AddAudit registers fn to run at Quiesce after everything is unplugged and
// unloaded: it records in the machine's log whatever its package left
// behind that should be gone. Its error is returned by Quiesce.
func (m *Machine) AddAudit(name string, fn func(ctx context.Context) error) {
	m.mu.Lock()
	m.audits = append(m.audits, hook{name, fn})
	m.mu.Unlock()
}

// Quiesce ends the machine's life and returns every violation its log
// recorded, in order, and the errors of the teardown itself. In order:
//
//  1. the OnQuiesce functions run, newest first;
//  2. every root device is unregistered (every USB device unplugged, every
//     platform device removed) through the one removal path;
//  3. every loaded module is unloaded, newest first, as Rmmod does;
//  4. deferred sysfs callbacks are waited for;
//  5. the audit: a device directory under /devices, an entry under /irq or
//     a name under dev/ left now is recorded as
//     check.ReferenceAfterUnregister (an orphan that outlived its
//     provider), and the AddAudit functions run;
//  6. the log's own quiesce: goroutines the framework started must have
//     returned (check.GoroutineLeft), every expected release must have run
//     (check.ReleaseNeverRun).
//
// A second Quiesce returns the violations again and does nothing else.
func (m *Machine) Quiesce(ctx context.Context) ([]check.Violation, error) {
	m.mu.Lock()
	if m.quiesced {
		m.mu.Unlock()
		return m.log.Violations(), nil
	}
	m.quiesced = true
	teardown := slices.Clone(m.teardown)
	m.mu.Unlock()
	m.trace.Record(KindStep, "machine", "quiesce: remove what is left, unplug every device, unload every module, audit")

	var errs []error
	for i := len(teardown) - 1; i >= 0; i-- {
		if err := teardown[i].fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", teardown[i].name, err))
		}
	}
	if err := m.core.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shutdown: %w", err))
	}
	m.mu.Lock()
	mods := slices.Clone(m.mods)
	m.mu.Unlock()
	for i := len(mods) - 1; i >= 0; i-- {
		if mods[i].owner.State() == sever.OwnerGone {
			continue
		}
		if err := m.Rmmod(ctx, mods[i].name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.Sysfs().Flush(ctx); err != nil {
		errs = append(errs, fmt.Errorf("flush: %w", err))
	}
	m.auditOrphans()
	m.mu.Lock()
	audits := slices.Clone(m.audits)
	m.mu.Unlock()
	for _, a := range audits {
		if err := a.fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.name, err))
		}
	}
	return m.log.Quiesce(ctx), errors.Join(errs...)
}

// auditOrphans records what outlived every provider: seed 004's
// "verifying reference count is 0 after unregistering" applied to the
// machine's namespaces, and seed 000's leaked /proc/irq entry.
func (m *Machine) auditOrphans() {
	t := m.Sysfs()
	for _, dir := range []string{"/devices", "/irq"} {
		n, err := t.Lookup(dir)
		if err != nil {
			continue
		}
		ents, err := t.Readdir(n)
		if err != nil {
			continue
		}
		for _, e := range ents {
			detail := "node left after every device was unregistered and every module unloaded"
			if dir == "/irq" {
				detail = "IRQ entry left after its domain was removed"
				if sub, err := t.Readdir(e.Node); err == nil {
					var names []string
					for _, s := range sub {
						names = append(names, s.Name)
					}
					detail += " (entries: " + strings.Join(names, ", ") + ")"
				}
			}
			m.log.Record(check.Violation{Class: check.ReferenceAfterUnregister, Object: e.Node.Path(), Detail: detail, Stack: "machine audit at quiesce"})
		}
	}
	for _, name := range m.Dev().Names() {
		m.log.Record(check.Violation{Class: check.ReferenceAfterUnregister, Object: "/dev/" + name, Detail: "char device left after every device was unregistered", Stack: "machine audit at quiesce"})
	}
}
