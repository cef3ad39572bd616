package hostdev

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/uevent"
)

// Config configures a Host.
type Config struct {
	// Core is the machine whose driver core the host's devices join. It
	// must not be nil.
	Core *device.Core
	// Bus is the name of the Host's bus in Core; "" means "host".
	Bus string
	// Subsystems are the kernel subsystems mirrored ("tty", "hidraw",
	// "net", "gpio"); empty means every one. Each mirrored device costs a
	// directory of attributes in Core's tree, so name the ones you use.
	Subsystems []string
	// Sysfs is where sysfs is mounted; "" means "/sys".
	Sysfs string
	// QueueLen is the uevent queue's length (see uevent.Config).
	QueueLen int
}

// Host mirrors the host's devices into a driver core and keeps the mirror
// current from the kernel's uevents. Each device present — from the /sys
// snapshot taken at New, then from every "add" — is a sever device on the
// Host's bus, named "<subsystem>:<kernel name>" ("net:tap0",
// "tty:ttyUSB0"), whose attributes are the uevent's properties (DEVPATH,
// DEVNAME, INTERFACE, …, one file each, as read at the last add or
// change). A "remove" — or a resync whose snapshot lacks the device — takes
// the driver core's one removal path, device.Unregister, which severs every
// File opened on the device with Open.
//
// One goroutine of the Host's own applies the events, in the kernel's
// order; it ends at Close. A Host is safe for concurrent use.
type Host struct {
	cfg     Config
	want    map[string]bool // mirrored subsystems; nil: all
	bus     *device.Bus
	w       *uevent.Watcher
	stop    context.CancelFunc
	done    chan struct{} // closed when the event goroutine returns
	mu      sync.Mutex
	devs    map[string]*Device // by devpath
	changed chan struct{}      // closed and replaced at every change of devs
	seq     uint64             // registrations so far
	closed  bool
	err     error // why the event goroutine stopped early
}

// Device is a host device the Host knows of: what its last uevent said,
// and the sever device that mirrors it. The *Device stays valid after the
// device goes; its properties are then those it had last.
type Device struct {
	h   *Host
	dev *device.Device
	seq uint64 // registration order
	mu  sync.Mutex
	ev  uevent.Event
}

// New starts a Host: it listens for uevents, mirrors every device present
// (read from /sys) before it returns, and from then on follows the kernel's
// events. A Config without Core, or whose Bus exists in Core already, is
// refused with an error wrapping sever.ErrInvalid or sever.ErrExist.
func New(ctx context.Context, cfg Config) (*Host, error) {
	if cfg.Core == nil {
		return nil, fmt.Errorf("hostdev: Config without Core: %w", sever.ErrInvalid)
	}
	if cfg.Bus == "" {
		cfg.Bus = "host"
	}
	if cfg.Sysfs == "" {
		cfg.Sysfs = "/sys"
	}
	h := &Host{cfg: cfg, devs: make(map[string]*Device), changed: make(chan struct{}), done: make(chan struct{})}
	if len(cfg.Subsystems) > 0 {
		h.want = make(map[string]bool)
		for _, s := range cfg.Subsystems {
			h.want[s] = true
		}
	}
	w, err := uevent.Listen(uevent.Config{Sysfs: cfg.Sysfs, QueueLen: cfg.QueueLen})
	if err != nil {
		return nil, fmt.Errorf("hostdev: %w", err)
	}
	bus, err := cfg.Core.NewBus(device.BusConfig{Name: cfg.Bus, SuppressBindAttrs: true})
	if err != nil {
		_ = w.Close() // never used: err is the news
		return nil, fmt.Errorf("hostdev: %w", err)
	}
	h.w, h.bus = w, bus
	first, err := w.Next(ctx) // the start snapshot
	if err != nil {
		_ = w.Close() // never used: err is the news
		return nil, fmt.Errorf("hostdev: %w", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	h.stop = stop
	h.apply(runCtx, first)
	go h.run(runCtx)
	return h, nil
}

// run is the event goroutine.
func (h *Host) run(ctx context.Context) {
	defer close(h.done)
	for {
		ev, err := h.w.Next(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, sever.ErrClosed) {
				h.mu.Lock()
				h.err = err
				h.mu.Unlock()
			}
			return
		}
		h.apply(ctx, ev)
	}
}

// Bus returns the Host's bus in the Core.
func (h *Host) Bus() *device.Bus { return h.bus }

// wanted reports whether devices of subsystem are mirrored.
func (h *Host) wanted(subsystem string) bool { return h.want == nil || h.want[subsystem] }

// apply brings the mirror up to date with one event.
func (h *Host) apply(ctx context.Context, ev uevent.Event) {
	switch ev.Action {
	case uevent.ActionResync:
		present := make(map[string]uevent.Event)
		for _, e := range ev.Snapshot {
			if h.wanted(e.Subsystem) {
				present[e.Devpath] = e
			}
		}
		h.mu.Lock()
		var gone []string
		for p := range h.devs {
			if _, ok := present[p]; !ok {
				gone = append(gone, p)
			}
		}
		h.mu.Unlock()
		for _, p := range gone {
			_ = h.remove(ctx, p) // see ActionRemove
		}
		for _, e := range present {
			h.add(ctx, e)
		}
	case uevent.ActionAdd:
		if h.wanted(ev.Subsystem) {
			h.add(ctx, ev)
		}
	case uevent.ActionRemove:
		// The host's device is gone whatever Unregister says: a drain
		// that Close cuts short goes on in the background, and no caller
		// waits for this event.
		_ = h.remove(ctx, ev.Devpath)
	case uevent.ActionMove:
		_ = h.remove(ctx, ev.Props["DEVPATH_OLD"]) // as ActionRemove
		if h.wanted(ev.Subsystem) {
			h.add(ctx, ev)
		}
	default: // change, bind, unbind, online, offline: new properties
		h.mu.Lock()
		d := h.devs[ev.Devpath]
		h.mu.Unlock()
		if d != nil {
			d.update(ev)
		}
	}
	h.mu.Lock()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// add mirrors ev's device, or updates it if it is mirrored already.
func (h *Host) add(ctx context.Context, ev uevent.Event) {
	h.mu.Lock()
	d := h.devs[ev.Devpath]
	h.mu.Unlock()
	if d != nil {
		d.update(ev)
		return
	}
	d = &Device{h: h, ev: ev}
	var attrs []device.Attr
	for _, k := range slices.Sorted(maps.Keys(ev.Props)) {
		if k == "" || strings.ContainsAny(k, "/\x00") || k == "uevent" {
			continue
		}
		attrs = append(attrs, device.Attr{Name: k, Show: func(_ *kernfs.Call, _ *device.Device, buf []byte) ([]byte, error) {
			return append(append(buf, d.Prop(k)...), '\n'), nil
		}})
	}
	cfg := device.Config{
		Name:       ev.Subsystem + ":" + ev.Sysname(),
		Bus:        h.bus,
		Compatible: ev.Subsystem,
		Data:       d,
		Groups:     []device.AttrGroup{{Attrs: attrs}},
	}
	dev, err := h.cfg.Core.Register(ctx, cfg)
	if errors.Is(err, sever.ErrExist) {
		// Two devices of one subsystem with one kernel name (under two
		// parents): the devpath, flattened as the kernel flattens block
		// device names ("cciss!c0d0"), is unique.
		cfg.Name = ev.Subsystem + ":" + strings.ReplaceAll(strings.TrimPrefix(ev.Devpath, "/"), "/", "!")
		dev, err = h.cfg.Core.Register(ctx, cfg)
	}
	if err != nil {
		return // the core refused it (shutting down, name too long): not mirrored
	}
	h.mu.Lock()
	h.seq++
	d.dev, d.seq = dev, h.seq
	h.devs[ev.Devpath] = d
	h.mu.Unlock()
}

// remove unregisters the device at devpath, if mirrored, and returns
// Unregister's error.
func (h *Host) remove(ctx context.Context, devpath string) error {
	h.mu.Lock()
	d := h.devs[devpath]
	delete(h.devs, devpath)
	h.mu.Unlock()
	if d != nil {
		return d.dev.Unregister(ctx)
	}
	return nil
}

// Devices returns the devices mirrored now, oldest first.
func (h *Host) Devices() []*Device {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := slices.Collect(maps.Values(h.devs))
	slices.SortFunc(out, func(a, b *Device) int { return int(a.seq) - int(b.seq) })
	return out
}

// Find returns the device present now that matches k — the newest, if
// several do — or an error wrapping sever.ErrNotExist if none does. A Key
// that names nothing is refused with an error wrapping sever.ErrInvalid.
func (h *Host) Find(k Key) (*Device, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	d, _ := h.find(k)
	if d == nil {
		return nil, fmt.Errorf("hostdev: no device matches %v: %w", k, sever.ErrNotExist)
	}
	return d, nil
}

// find returns the newest device matching k, and the channel closed at the
// next change.
func (h *Host) find(k Key) (*Device, <-chan struct{}) {
	h.mu.Lock()
	changed := h.changed // before the scan: a change during it is not missed
	h.mu.Unlock()
	devs := h.Devices()
	for i := len(devs) - 1; i >= 0; i-- {
		if k.matches(h.cfg.Sysfs, devs[i]) {
			return devs[i], changed
		}
	}
	return nil, changed
}

// Wait returns the device matching k as soon as one is present: at once if
// one is, else when an event brings one. It returns ctx's error if ctx is
// done first, an error wrapping sever.ErrClosed once the Host is closed,
// and one wrapping sever.ErrInvalid for a Key that names nothing.
func (h *Host) Wait(ctx context.Context, k Key) (*Device, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	for {
		h.mu.Lock()
		closed := h.closed
		h.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("hostdev: Wait on a closed Host: %w", sever.ErrClosed)
		}
		d, changed := h.find(k)
		if d != nil {
			return d, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// OpenFunc opens the file of a device for a handle, returning a descriptor
// the handle takes over (see NewFile). DevNode opens /dev/<DEVNAME>; a tap
// is reached by opening /dev/net/tun and attaching to the interface.
type OpenFunc func(d *Device) (fd int, err error)

// DevNode returns an OpenFunc that opens the device's node, /dev/<DEVNAME>,
// with flag (as for os.OpenFile; O_NONBLOCK and O_CLOEXEC are added). A
// device without DEVNAME (a network interface) fails to open with an error
// wrapping sever.ErrInvalid.
func DevNode(flag int) OpenFunc {
	return func(d *Device) (int, error) {
		name := d.Devname()
		if name == "" {
			return -1, fmt.Errorf("hostdev: %s has no device node: %w", d.Devpath(), sever.ErrInvalid)
		}
		fd, err := unix.Open("/dev/"+name, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("hostdev: open /dev/%s: %w", name, err)
		}
		return fd, nil
	}
}

// Open opens a handle on d with open, and joins it to d's removal path:
// when d's remove uevent arrives — or a resync finds d gone, or the Host is
// closed — device.Unregister severs the handle (see File). It also severs
// on the kernel's word, like any File. Open of a device that is gone, or
// going, returns an error wrapping sever.ErrNoDevice.
func (h *Host) Open(d *Device, open OpenFunc) (*File, error) {
	select {
	case <-d.dev.Removed():
		return nil, d.goneErr()
	default:
	}
	fd, err := open(d)
	if err != nil {
		return nil, err
	}
	name := d.Devpath()
	if n := d.Devname(); n != "" {
		name = "/dev/" + n
	}
	f, err := NewFile(fd, name)
	if err != nil {
		_ = unix.Close(fd) // NewFile refused it: its error is the news
		return nil, err
	}
	unlink, err := d.dev.AddSeverable("hostdev "+name, device.StageFiles, func(ctx context.Context) error {
		return f.sever(ctx, true)
	})
	if err != nil {
		_ = f.Close() // never handed out: the device's going is the news
		return nil, d.goneErr()
	}
	f.unlink = unlink
	return f, nil
}

// OpenKey waits for a device matching k (see Wait) and opens it (see
// Open). A consumer whose device went calls it again to get a fresh handle
// on the device when it comes back, under whatever name. If the open fails
// because the device is going (ENOENT, ENODEV, ENXIO, EIO, EBADFD) — its
// handle severed on the kernel's word before its remove uevent arrived —
// OpenKey waits for the removal and then for the next matching device;
// if ctx ends first it returns that open error.
func (h *Host) OpenKey(ctx context.Context, k Key, open OpenFunc) (*File, error) {
	for {
		d, err := h.Wait(ctx, k)
		if err != nil {
			return nil, err
		}
		f, err := h.Open(d, open)
		if err == nil || !goneErrno(err) && !errors.Is(err, unix.ENOENT) {
			return f, err
		}
		// Gone between Wait and Open: its node was removed, or the kernel
		// refused it, before its remove uevent reached us. Wait for that,
		// then for the next device matching k.
		select {
		case <-d.Gone():
		case <-ctx.Done():
			return nil, err
		}
	}
}

// Close stops following events and unregisters every mirrored device,
// newest first, which severs every handle opened with Open. It returns the
// error that stopped the event goroutine early, if one did. A second Close
// returns an error wrapping sever.ErrClosed.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return fmt.Errorf("hostdev: second Close: %w", sever.ErrClosed)
	}
	h.closed = true
	close(h.changed) // wakes every Wait, which sees closed
	h.changed = make(chan struct{})
	h.mu.Unlock()
	h.stop()
	_ = h.w.Close() // only the first Close of the watcher fails, and this is it
	<-h.done
	var errs []error
	devs := h.Devices()
	for i := len(devs) - 1; i >= 0; i-- {
		errs = append(errs, h.remove(ctx, devs[i].Devpath()))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return errors.Join(append([]error{h.err}, errs...)...)
}

func (d *Device) update(ev uevent.Event) {
	d.mu.Lock()
	d.ev = ev
	d.mu.Unlock()
}

func (d *Device) goneErr() error {
	return &sever.ObjectError{Object: "hostdev: " + d.Devpath(), Err: sever.ErrNoDevice}
}

// Devpath returns the device's path below /sys ("/devices/virtual/net/tap0").
func (d *Device) Devpath() string { return d.event().Devpath }

// Subsystem returns the device's subsystem ("net", "tty").
func (d *Device) Subsystem() string { return d.event().Subsystem }

// Devname returns the device's node below /dev ("ttyUSB0"), or "".
func (d *Device) Devname() string { return d.event().Devname }

// Prop returns the uevent property key, or "".
func (d *Device) Prop(key string) string { return d.event().Props[key] }

// Props returns a copy of the uevent properties.
func (d *Device) Props() map[string]string { return maps.Clone(d.event().Props) }

// Device returns the sever device mirroring d in the Host's Core.
func (d *Device) Device() *device.Device { return d.dev }

// Gone returns a channel closed when d's removal from the Core has
// finished: every handle opened on it with Host.Open is severed.
func (d *Device) Gone() <-chan struct{} { return d.dev.Removed() }

// String names d by subsystem and devpath: "net:/devices/virtual/net/tap0".
func (d *Device) String() string { return d.Subsystem() + ":" + d.Devpath() }

func (d *Device) event() uevent.Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ev
}
