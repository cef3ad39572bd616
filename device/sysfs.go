package device

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"sort"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/kernfs"
)

// Attr is a device attribute: a text file in the device's directory whose
// callbacks receive the device. It is turned into a kernfs.Attr whose
// callbacks capture the device, so the kernfs contract applies unchanged:
//
// Show and Store run on the reading or writing goroutine, inside the node's
// active reference with the owner pinned: the node is not severed and the
// device's removal path waits for them before it calls the driver's
// Remove. They run any number of times, never after the node is severed —
// the first step of unbinding — so they may touch the driver's state
// without a lock against Remove. They may block (removal waits longer).
// They must not unregister their own device except through
// Device.UnregisterSelf (Unregister from inside them fails with
// sever.ErrDeadlock).
//
// As a file: a read at offset 0 calls Show, and later reads serve what it
// produced, so a reader seeks to 0 for fresh content; a write moves the
// file's offset past what it wrote, like any file, so a read after a write
// on the same open file starts there — seek to 0 first (Store is called
// once per write, whatever the offset). The callbacks take a *kernfs.Call,
// so a driver with attributes imports package kernfs: the Call is where
// RemoveSelf, Context and the per-open Private are.
type Attr struct {
	Name  string
	Mode  fs.FileMode // 0: derived from Show and Store, as in kernfs
	Show  func(c *kernfs.Call, d *Device, buf []byte) ([]byte, error)
	Store func(c *kernfs.Call, d *Device, v any) error
	Parse kernfs.Parser
}

// AttrGroup is a set of attributes created and removed together. A named
// group is a subdirectory of the device's directory.
//
// A driver's named groups are created hidden before Probe and shown when
// Probe succeeds; its unnamed groups are created after Probe succeeds
// (kernfs can hide directories, not single attributes, so they cannot
// exist invisibly in a live directory).
type AttrGroup struct {
	Name  string // "": the device's own directory
	Attrs []Attr
}

// devNode is a device's place in the tree.
type devNode struct {
	dir   *kernfs.Node
	links []*kernfs.Node // in /bus/*/devices and /class/* (device scope)
}

// sysfs builds the machine's /sys: /devices, /bus, /class.
type sysfs struct {
	c                     *Core
	t                     *kernfs.Tree
	devices, bus, classes *kernfs.Node
	busDir                map[*Bus]*busNodes
	classDir              map[*Class]*kernfs.Node
}

type busNodes struct {
	dir, devices, drivers *kernfs.Node
	drv                   map[*Driver]*kernfs.Node
}

func newSysfs(c *Core) *sysfs {
	t := kernfs.New(c.opts...)
	s := &sysfs{c: c, t: t, busDir: make(map[*Bus]*busNodes), classDir: make(map[*Class]*kernfs.Node)}
	s.devices = s.mustDir(t.Root(), "devices")
	s.bus = s.mustDir(t.Root(), "bus")
	s.classes = s.mustDir(t.Root(), "class")
	return s
}

func (s *sysfs) mustDir(parent *kernfs.Node, name string) *kernfs.Node {
	n, err := s.t.AddDir(parent, kernfs.Dir{Name: name})
	if err != nil {
		panic("device: building /sys: " + err.Error())
	}
	return n
}

// Sysfs returns the machine's attribute tree: /devices, /bus, /class, and
// whatever subsystems add (/irq).
func (c *Core) Sysfs() *kernfs.Tree { return c.sys.t }

// Dir returns the device's directory node.
func (d *Device) Dir() *kernfs.Node {
	if d.node == nil {
		return nil
	}
	return d.node.dir
}

func (s *sysfs) addBus(b *Bus) {
	bn := &busNodes{drv: make(map[*Driver]*kernfs.Node)}
	bn.dir = s.mustDir(s.bus, b.cfg.Name)
	bn.devices = s.mustDir(bn.dir, "devices")
	bn.drivers = s.mustDir(bn.dir, "drivers")
	s.c.mu.Lock()
	s.busDir[b] = bn
	s.c.mu.Unlock()
}

func (s *sysfs) busNodes(b *Bus) *busNodes {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.busDir[b]
}

func (s *sysfs) addClass(cl *Class) {
	n := s.mustDir(s.classes, cl.name)
	s.c.mu.Lock()
	s.classDir[cl] = n
	s.c.mu.Unlock()
}

// addDriver creates /bus/<bus>/drivers/<driver>, with a bind file unless
// the bus suppresses it. The directory is backed by the driver's owner, so
// its unload removes it.
func (s *sysfs) addDriver(b *Bus, drv *Driver) {
	bn := s.busNodes(b)
	dir, err := s.t.AddDir(bn.drivers, kernfs.Dir{Name: drv.Name})
	if err != nil {
		return // a second driver of one name: it works, without a directory
	}
	if !b.cfg.SuppressBindAttrs {
		// A directory without its bind file (its driver unloading
		// meanwhile) still works: the error is dropped on purpose.
		_, _ = s.t.AddAttr(dir, kernfs.Attr{Name: "bind", Parse: kernfs.String(kernfs.MaxNameLen),
			Store: func(c *kernfs.Call, v any) error {
				name := v.(string)
				for _, d := range b.Devices() {
					if d.name == name {
						// bind_store: only a driver that matches the
						// device (found by sever stress: writing
						// ahci.0 to stressdrv's bind ran a probe
						// on a device it cannot drive).
						if !b.match(d, drv) {
							return fmt.Errorf("driver %s does not match %s: %w", drv.Name, d.path, sever.ErrNoDevice)
						}
						return d.Bind(context.Background(), drv)
					}
				}
				return fmt.Errorf("no device %q on bus %s: %w", name, b.cfg.Name, sever.ErrNoDevice)
			}})
	}
	s.c.mu.Lock()
	bn.drv[drv] = dir
	s.c.mu.Unlock()
}

func (s *sysfs) removeDriver(b *Bus, drv *Driver) {
	bn := s.busNodes(b)
	s.c.mu.Lock()
	dir := bn.drv[drv]
	delete(bn.drv, drv)
	s.c.mu.Unlock()
	if dir != nil {
		_ = s.t.Remove(context.Background(), dir) // nothing of it can be inside: it cannot fail
	}
}

// addDevice builds the device's directory hidden — standard attributes,
// subsystem link, the creator's groups — and shows it whole. The directory
// joins the device's removal path at StageFiles, device scope.
func (s *sysfs) addDevice(d *Device) error {
	parent := s.devices
	if d.parent != nil {
		parent = d.parent.Dir()
	}
	dir, err := s.t.AddDir(parent, kernfs.Dir{Name: d.name, Owner: d.owner, Hidden: true})
	if err != nil {
		return err
	}
	n := &devNode{dir: dir}
	fail := func(err error) error {
		_ = s.t.Remove(context.Background(), dir) // nothing of it can be inside: it cannot fail
		return err
	}
	if _, err := s.t.AddAttr(dir, kernfs.Attr{Name: "uevent", Show: d.showUevent, Store: d.storeUevent,
		Parse: kernfs.Enum("add", "remove", "change", "bind", "unbind")}); err != nil {
		return fail(err)
	}
	if d.bus != nil && !d.bus.cfg.SuppressBindAttrs {
		// The unbind control: writing "1" (a trailing newline allowed, as
		// for every attribute) unbinds the driver, like Linux's per-device
		// "remove" files; anything else is refused with an error wrapping
		// sever.ErrInvalid (EINVAL) and unbinds nothing. Built-in code;
		// unbinding severs the driver's nodes, never this one.
		if _, err := s.t.AddAttr(dir, kernfs.Attr{Name: "unbind", Parse: kernfs.Enum("1"), Store: func(c *kernfs.Call, v any) error {
			return d.Unbind(context.Background())
		}}); err != nil {
			return fail(err)
		}
	}
	var subsys *kernfs.Node
	switch {
	case d.bus != nil:
		subsys = s.busNodes(d.bus).dir
	case d.class != nil:
		s.c.mu.Lock()
		subsys = s.classDir[d.class]
		s.c.mu.Unlock()
	}
	if subsys != nil {
		if _, err := s.t.AddSymlink(dir, "subsystem", subsys, nil); err != nil {
			return fail(err)
		}
	}
	for _, g := range d.groups {
		if _, err := s.addGroup(d, dir, g, d.owner, false); err != nil {
			return fail(err)
		}
	}
	if err := s.t.Activate(dir); err != nil {
		return fail(err)
	}
	// Links to the device from its bus and class. A name clash (two
	// devices of one name on a bus, under different parents) leaves the
	// second without a link rather than failing its registration.
	if d.bus != nil {
		if l, err := s.t.AddSymlink(s.busNodes(d.bus).devices, d.name, dir, nil); err == nil {
			n.links = append(n.links, l)
		}
	}
	if subsys != nil && d.class != nil {
		if l, err := s.t.AddSymlink(subsys, d.name, dir, nil); err == nil {
			n.links = append(n.links, l)
		}
	}
	d.node = n
	if _, err := d.AddSeverable("kernfs "+dir.Path(), StageFiles, func(ctx context.Context) error {
		return s.t.Remove(ctx, dir)
	}); err != nil {
		return fail(err)
	}
	return nil
}

// addGroup adds g under dir, as owner's code, and returns the nodes it
// added to dir: the group's directory (created hidden if hidden; the
// caller activates it), or each attribute of an unnamed group. On error
// nothing is left behind.
func (s *sysfs) addGroup(d *Device, dir *kernfs.Node, g AttrGroup, owner *sever.Owner, hidden bool) ([]*kernfs.Node, error) {
	var top []*kernfs.Node
	undo := func(err error) ([]*kernfs.Node, error) {
		for _, n := range top {
			_ = s.t.Remove(context.Background(), n) // nothing of it can be inside: it cannot fail
		}
		return nil, err
	}
	at := dir
	if g.Name != "" {
		var err error
		if at, err = s.t.AddDir(dir, kernfs.Dir{Name: g.Name, Owner: owner, Hidden: hidden}); err != nil {
			return nil, err
		}
		top = append(top, at)
	}
	for _, a := range g.Attrs {
		ka := kernfs.Attr{Name: a.Name, Mode: a.Mode, Owner: owner, Parse: a.Parse}
		if a.Show != nil {
			show := a.Show
			ka.Show = func(c *kernfs.Call, buf []byte) ([]byte, error) { return show(c, d, buf) }
		}
		if a.Store != nil {
			store := a.Store
			ka.Store = func(c *kernfs.Call, v any) error { return store(c, d, v) }
		}
		n, err := s.t.AddAttr(at, ka)
		if err != nil {
			return undo(err)
		}
		if at == dir {
			top = append(top, n)
		}
	}
	return top, nil
}

// addDriverGroups creates the driver's named groups, hidden, before Probe.
// Each joins the binding's removal path at StageFiles.
func (s *sysfs) addDriverGroups(d *Device, b *binding) error {
	dir := d.Dir()
	for _, g := range b.drv.Groups {
		if g.Name == "" {
			continue
		}
		nodes, err := s.addGroup(d, dir, g, b.drv.Owner, true)
		if err != nil {
			return err
		}
		b.hidden = append(b.hidden, nodes...)
		for _, n := range nodes {
			if err := s.severWithBinding(d, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// severWithBinding registers the removal of n with the current binding.
func (s *sysfs) severWithBinding(d *Device, n *kernfs.Node) error {
	if n == nil {
		return nil
	}
	_, err := d.AddSeverable("kernfs "+n.Path(), StageFiles, func(ctx context.Context) error {
		return s.t.Remove(ctx, n)
	})
	return err
}

// activateDriver shows the driver's groups and adds its unnamed groups and
// the driver link, once Probe has succeeded.
func (s *sysfs) activateDriver(d *Device, b *binding) {
	dir := d.Dir()
	for _, n := range b.hidden {
		_ = s.t.Activate(n) // an Unregister has begun: it removes n
	}
	for _, g := range b.drv.Groups {
		if g.Name != "" {
			continue
		}
		nodes, _ := s.addGroup(d, dir, g, b.drv.Owner, false)
		for _, n := range nodes {
			// A node that cannot join the binding's removal path (an
			// Unregister has begun) must not stay: an unbind before
			// the Unregister reaches the directory would leave it live
			// with the driver gone (found by sever stress, seed 20: a
			// Store ran on a driver attribute after Remove).
			if err := s.severWithBinding(d, n); err != nil {
				_ = s.t.Remove(context.Background(), n) // nothing of it can be inside: it cannot fail
			}
		}
	}
	if bn := s.busNodes(d.bus); bn != nil {
		s.c.mu.Lock()
		target := bn.drv[b.drv]
		s.c.mu.Unlock()
		if target != nil {
			if l, err := s.t.AddSymlink(dir, "driver", target, nil); err == nil {
				if err := s.severWithBinding(d, l); err != nil {
					_ = s.t.Remove(context.Background(), l) // nothing of it can be inside: it cannot fail
				}
			}
		}
	}
}

// removeDevice takes the device's links out of /bus and /class. Its
// directory was removed by the removal path.
func (s *sysfs) removeDevice(d *Device) {
	if d.node == nil {
		return
	}
	for _, l := range d.node.links {
		_ = s.t.Remove(context.Background(), l) // nothing of it can be inside: it cannot fail
	}
	if !d.node.dir.Removed() {
		_ = s.t.Remove(context.Background(), d.node.dir) // nothing of it can be inside: it cannot fail
	}
}

// showUevent lists the variables of the device's uevents.
func (d *Device) showUevent(c *kernfs.Call, buf []byte) ([]byte, error) {
	env := map[string]string{}
	switch {
	case d.bus != nil:
		if d.bus.cfg.Uevent != nil {
			d.bus.cfg.Uevent(d, env)
		}
	case d.class != nil:
		if d.class.uevent != nil {
			d.class.uevent(d, env)
		}
	}
	if drv := d.Driver(); drv != nil {
		env["DRIVER"] = drv.Name
	}
	keys := slices.Collect(maps.Keys(env))
	sort.Strings(keys)
	for _, k := range keys {
		buf = fmt.Appendf(buf, "%s=%s\n", k, env[k])
	}
	return buf, nil
}

// storeUevent emits a synthetic uevent of the written action.
func (d *Device) storeUevent(c *kernfs.Call, v any) error {
	a := map[string]Action{"add": ActionAdd, "remove": ActionRemove, "change": ActionChange, "bind": ActionBind, "unbind": ActionUnbind}[v.(string)]
	d.core.uevent(d, a, map[string]string{"SYNTH_UUID": "0"})
	return nil
}

// UnregisterSelf unregisters d from inside one of its attribute callbacks
// (SCSI "delete", zram "reset") without deadlocking on that callback: it
// removes the device's directory with c.RemoveSelf, so the removal does not
// wait for the caller, and then — if this call won the race to remove it —
// unregisters the device. A loser returns nil once the winner's removal of
// the directory is done. After it returns, the callback must not touch the
// driver's state: Remove may have run.
func (d *Device) UnregisterSelf(ctx context.Context, c *kernfs.Call) error {
	won, err := c.RemoveSelf(ctx, d.Dir())
	if err != nil || !won {
		return err
	}
	return d.Unregister(ctx)
}
