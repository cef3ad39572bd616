// Package chardev is character devices: files under a machine's dev/ whose
// driver can be unplugged while processes hold them open, read them, sleep
// in poll on them and have their memory mapped.
//
// It is seed 000's user-space rule and seed 003's uio/tcmu case as an API
// (DESIGN.md, "Seed 000" and "Seed 003"):
//
//   - A driver registers a char device on its *device.Device with Register.
//     Every call into the driver's Ops runs inside the char device's active
//     reference (a sever.Active) as its owner's code (sever.Owner.Call), with
//     panics recovered and recorded as check.DriverFault.
//   - Unregistering — the device's removal path, or Cdev.Unregister — denies
//     new operations, drains the ones in flight (never waiting for files to
//     be closed), then runs the driver's Release once for every file still
//     open and wakes its pollers with EventErr|EventHup. When it returns, no
//     Ops callback is running or will ever run again.
//   - An open File is a shell the framework owns: after unregister every
//     operation returns the device's chosen errno (ENODEV, or EIO for
//     uio-like devices), Close still works, and the wait queue pollers sleep
//     on is the file's own, freed at its last reference.
//   - Memory a driver lets processes map is handed over as a *sever.Region:
//     a mapping stays valid after unregister, and the framework frees the
//     memory exactly once, when the device is unregistered and the last
//     mapping and open are gone — tcmu's late release without any callback
//     into a released driver, and without keeping its module loaded.
//
// The driver's side:
//
//	cd, _ := chardev.Register(dev, chardev.Config{Name: "ring0", Ops: chardev.Ops{Read: readRing}})
//	cd.Notify(sever.EventIn) // data arrived: wake readers and pollers
//	...
//	dev.Unregister(ctx) // severs cd with the device's files
//
// The user's side:
//
//	f, _ := chardev.RegistryOf(core).Open("ring0", os.O_RDONLY)
//	defer f.Close()
//	n, err := f.ReadContext(ctx, buf) // after unplug: errors.Is(err, syscall.ENODEV)
//
// Nothing is global: the dev/ namespace and its major:minor numbers are a
// Registry per simulated machine (per *device.Core).
package chardev

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
)

// Devt is a device number, major:minor.
type Devt struct {
	Major, Minor uint32
}

func (d Devt) String() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// Registry is one machine's dev/ namespace: char devices by name, and the
// major and minor numbers in use. Get it with RegistryOf; it is created on
// first use and lives as long as its Core. A Registry is safe for
// concurrent use.
type Registry struct {
	core *device.Core

	mu     sync.Mutex
	byName map[string]*Cdev
	majors map[uint32]string           // allocated majors and who holds them
	minors map[uint32]map[uint32]*Cdev // per major, the minors in use
}

type registryKey struct{}

// RegistryOf returns the dev/ namespace of the machine c.
func RegistryOf(c *device.Core) *Registry {
	return device.Local(c, registryKey{}, func() *Registry {
		return &Registry{
			core:   c,
			byName: make(map[string]*Cdev),
			majors: make(map[uint32]string),
			minors: make(map[uint32]map[uint32]*Cdev),
		}
	})
}

// Core returns the machine the registry belongs to.
func (r *Registry) Core() *device.Core { return r.core }

// Dynamic majors are handed out from 254 down to 234, then from 511 down to
// 384, as Linux's register_chrdev_region(0, ...) does.
var dynamicMajors = [][2]uint32{{254, 234}, {511, 384}}

// AllocMajor reserves a dynamic major number for name (a subsystem: "uio")
// and returns it; Register with Config.Major set to it hands out its
// minors. The major stays reserved for the registry's life. When every
// dynamic major is taken it returns an error wrapping sever.ErrBusy.
func (r *Registry) AllocMajor(name string) (uint32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.allocMajorLocked(name)
}

func (r *Registry) allocMajorLocked(name string) (uint32, error) {
	for _, span := range dynamicMajors {
		for m := span[0]; m >= span[1]; m-- {
			if _, used := r.majors[m]; !used {
				r.majors[m] = name
				return m, nil
			}
		}
	}
	return 0, &sever.ObjectError{Object: "chardev: " + name, Err: fmt.Errorf("no dynamic major left: %w", sever.ErrBusy)}
}

// Lookup returns the live char device named name ("uio0", "/dev/uio0" or
// "dev/uio0"), or an error wrapping sever.ErrNotExist. A char device leaves
// the namespace as soon as its unregistration begins.
func (r *Registry) Lookup(name string) (*Cdev, error) {
	n := trimDev(name)
	r.mu.Lock()
	c, ok := r.byName[n]
	r.mu.Unlock()
	if !ok {
		return nil, &sever.ObjectError{Object: "chardev: /dev/" + n, Err: sever.ErrNotExist}
	}
	return c, nil
}

// Open opens the char device named name, as Lookup finds it, with flag
// (see Cdev.Open).
func (r *Registry) Open(name string, flag int) (*File, error) {
	c, err := r.Lookup(name)
	if err != nil {
		return nil, err
	}
	return c.Open(flag)
}

// Names returns the names of the live char devices, sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.byName))
	for n := range r.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func trimDev(name string) string {
	name = strings.TrimPrefix(name, "/")
	return strings.TrimPrefix(name, "dev/")
}

// publish enters c into the namespace with a number. It fails if the name
// is taken, or if c's unregistration has already begun.
func (r *Registry) publish(c *Cdev, major uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.unpublished {
		return c.errNoDevice()
	}
	if _, dup := r.byName[c.name]; dup {
		return &sever.ObjectError{Object: c.obj, Err: sever.ErrExist}
	}
	if major == 0 {
		m, err := r.allocMajorLocked(c.name)
		if err != nil {
			return err
		}
		major, c.ownMajor = m, true
	}
	ms := r.minors[major]
	if ms == nil {
		ms = make(map[uint32]*Cdev)
		r.minors[major] = ms
	}
	var minor uint32
	for ms[minor] != nil {
		minor++
	}
	ms[minor] = c
	c.devt = Devt{major, minor}
	r.byName[c.name] = c
	return nil
}

// unpublish takes c out of the namespace and gives its number back; a
// later publish of c fails.
func (r *Registry) unpublish(c *Cdev) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.unpublished = true
	if r.byName[c.name] != c {
		return
	}
	delete(r.byName, c.name)
	if ms := r.minors[c.devt.Major]; ms[c.devt.Minor] == c {
		delete(ms, c.devt.Minor)
	}
	if c.ownMajor {
		delete(r.majors, c.devt.Major)
		delete(r.minors, c.devt.Major)
	}
}
