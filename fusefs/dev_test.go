package fusefs_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/fusefs"
)

const pollIn = 0x01

// ring is the test's char device driver: reads take the bytes pushed so
// far and block (sever.ErrWouldBlock) while there are none; writes are
// recorded; it is always writable and readable when it has data. Callbacks
// after the device was unregistered are counted as late.
type ring struct {
	cd *chardev.Cdev

	mu       sync.Mutex
	data     []byte
	written  []string
	gone     atomic.Bool
	late     atomic.Int64
	releases atomic.Int64
}

func (r *ring) note() {
	if r.gone.Load() {
		r.late.Add(1)
	}
}

func (r *ring) ops() chardev.Ops {
	return chardev.Ops{
		Read: func(_ *chardev.Call, buf []byte) (int, error) {
			r.note()
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.data) == 0 {
				return 0, sever.ErrWouldBlock
			}
			n := copy(buf, r.data)
			r.data = r.data[n:]
			return n, nil
		},
		Write: func(_ *chardev.Call, p []byte) (int, error) {
			r.note()
			r.mu.Lock()
			r.written = append(r.written, string(p))
			r.mu.Unlock()
			return len(p), nil
		},
		Poll: func(*chardev.Call) sever.Events {
			r.note()
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.data) > 0 {
				return sever.EventIn | sever.EventOut
			}
			return sever.EventOut
		},
		Release: func(*chardev.Call) { r.note(); r.releases.Add(1) },
	}
}

// push gives the driver data, as an interrupt handler does, and wakes
// readers and pollers.
func (r *ring) push(s string) {
	r.mu.Lock()
	r.data = append(r.data, s...)
	r.mu.Unlock()
	r.cd.Notify(sever.EventIn)
}

func (r *ring) unregister(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.cd.Unregister(ctx); err != nil {
		t.Fatalf("Unregister %s: %v", r.cd, err)
	}
	r.gone.Store(true)
}

// devMachine is a machine with two char devices on one device: ring0,
// which answers ENODEV once unregistered, and uio0, which answers EIO.
type devMachine struct {
	reg        *chardev.Registry
	ring0, uio *ring
}

func newDevMachine(t *testing.T) *devMachine {
	t.Helper()
	log := &check.Log{}
	core := device.NewCore(t.Name(), log)
	dev, err := core.Register(context.Background(), device.Config{Name: "dev0"})
	if err != nil {
		t.Fatal(err)
	}
	m := &devMachine{reg: chardev.RegistryOf(core), ring0: &ring{}, uio: &ring{}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := dev.Unregister(ctx); err != nil {
			t.Errorf("device Unregister: %v", err)
		}
		for _, v := range log.Quiesce(ctx) {
			t.Errorf("checker: %v\n%s", v, v.Stack)
		}
		for _, r := range []*ring{m.ring0, m.uio} {
			if n := r.late.Load(); n != 0 {
				t.Errorf("%s: %d driver callbacks after Unregister", r.cd, n)
			}
		}
	})
	for _, c := range []struct {
		r    *ring
		name string
		gone error
	}{{m.ring0, "ring0", nil}, {m.uio, "uio0", sever.ErrIO}} {
		c.r.cd, err = chardev.Register(dev, chardev.Config{Name: c.name, Gone: c.gone, Ops: c.r.ops()})
		if err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// dev/ lists the registry's char devices as regular files of mode 0660
// beside sys/; a read blocks until the driver has data, and a write hands
// the driver the bytes as they are (the text protocol of a device is its
// driver's); non-blocking reads fail with EAGAIN, and there is no offset.
func TestDevFileReadBlocksUntilDriverHasDataAndWritesPassThrough(t *testing.T) {
	dm := newDevMachine(t)
	p := newProvider(t)
	s := mount(t, fusefs.Sources{Sys: p.tr, Dev: dm.reg})

	if out, _, err := run(t, "ls", s.Dir()); err != nil || out != "dev\nsys\n" {
		t.Errorf("ls of the mount = %q, %v; want dev and sys", out, err)
	}
	if out, _, err := run(t, "ls", path(s, "dev")); err != nil || out != "ring0\nuio0\n" {
		t.Errorf("ls dev = %q, %v; want ring0 and uio0", out, err)
	}
	if out, errOut, err := run(t, "stat", "-c", "%a %F %s", path(s, "dev/ring0")); err != nil || out != "660 regular empty file 0\n" {
		t.Errorf("stat dev/ring0 = %q, %v (%s); want a regular file of mode 660", out, err, errOut)
	}
	if out, _, err := run(t, "cat", path(s, "sys/devices/dev0/value")); err != nil || out != "1\n" {
		t.Errorf("cat sys/devices/dev0/value = %q, %v", out, err)
	}

	py := startPy(t)
	if r := py.do("open r " + path(s, "dev/ring0") + " r"); r != "ok" {
		t.Fatalf("open dev/ring0: %s", r)
	}
	py.send("rd r")
	py.quiet("a read of ring0 without data", 100*time.Millisecond)
	dm.ring0.push("hello\n")
	if r := py.reply(5 * time.Second); r != "ok:hello\n" {
		t.Errorf("blocked read after the driver got data: %q, want \"ok:hello\\n\"", r)
	}
	if r := py.do("read r"); r != "ESPIPE" {
		t.Errorf("pread of a dev file: %s, want ESPIPE (no offset)", r)
	}

	if r := py.do("open w " + path(s, "dev/ring0") + " w"); r != "ok" {
		t.Fatalf("open dev/ring0 for writing: %s", r)
	}
	if r := py.do("write w request 3 both"); r != "ok" {
		t.Errorf("write: %s", r)
	}
	if _, errOut, err := run(t, "sh", "-c", "echo release 3 > "+path(s, "dev/ring0")); err != nil {
		t.Errorf("echo > dev/ring0: %v: %s", err, errOut)
	}
	dm.ring0.mu.Lock()
	if got := strings.Join(dm.ring0.written, "|"); got != "request 3 both|release 3\n" {
		t.Errorf("the driver got writes %q; want \"request 3 both\" then \"release 3\\n\", byte for byte", got)
	}
	dm.ring0.mu.Unlock()

	if r := py.do("open n " + path(s, "dev/ring0") + " rn"); r != "ok" {
		t.Fatalf("open O_NONBLOCK: %s", r)
	}
	if r := py.do("rd n"); r != "EAGAIN" {
		t.Errorf("non-blocking read without data: %s, want EAGAIN", r)
	}
	py.do("nonblock r") // O_NONBLOCK set after the open
	if r := py.do("rd r"); r != "EAGAIN" {
		t.Errorf("read without data after fcntl O_NONBLOCK: %s, want EAGAIN", r)
	}
	dm.ring0.push("x")
	if r := py.do("rd n"); r != "ok:x" {
		t.Errorf("non-blocking read with data: %q", r)
	}
}

// A process sleeping in poll on a dev file wakes when the driver's Notify
// makes it readable; a signal interrupts a read blocked in the driver
// (EINTR) and the file stays usable.
func TestDevFilePollWakesOnNotifyAndSignalInterruptsBlockedRead(t *testing.T) {
	dm := newDevMachine(t)
	s := mount(t, fusefs.Sources{Dev: dm.reg})
	if out, _, err := run(t, "ls", s.Dir()); err != nil || out != "dev\n" {
		t.Errorf("ls of a mount without a tree = %q, %v; want only dev", out, err)
	}
	py := startPy(t)
	if r := py.do("open r " + path(s, "dev/ring0") + " r"); r != "ok" {
		t.Fatalf("open: %s", r)
	}
	// Writable, not readable: a poll for POLLIN must sleep although
	// the driver reports POLLOUT.
	py.send("poll r 0x1 20000")
	eventually(t, "the kernel asks to be woken", func() bool { return s.Watchers() == 1 })
	py.quiet("poll for POLLIN without data", 100*time.Millisecond)
	dm.ring0.push("a")
	if r := py.reply(5 * time.Second); r != "1" {
		t.Errorf("poll after the driver's Notify: revents %s, want %d (POLLIN)", r, pollIn)
	}
	if r := py.do("rd r"); r != "ok:a" {
		t.Errorf("read after poll: %q", r)
	}
	eventually(t, "no watcher is left", func() bool { return s.Watchers() == 0 })

	py.send("rd r")
	py.quiet("a read without data", 100*time.Millisecond)
	py.signal(syscall.SIGUSR1)
	if r := py.reply(5 * time.Second); r != "EINTR" {
		t.Errorf("read interrupted by a signal: %s, want EINTR", r)
	}
	dm.ring0.push("b")
	if r := py.do("rd r"); r != "ok:b" {
		t.Errorf("read after the interrupted one: %q, want the file still usable", r)
	}
}

// After a char device is unregistered, a read on a file still open fails
// with the errno the device chose (ENODEV; EIO for uio), a read blocked in
// it and a poller sleeping on it wake (with that errno, with
// POLLERR|POLLHUP), and its dev/ entry is gone at once although entries
// are cached; every open's Release ran once, none after Unregister.
func TestDevFileAfterUnregisterFailsWithChosenErrnoAndEntryIsGone(t *testing.T) {
	dm := newDevMachine(t)
	s := mount(t, fusefs.Sources{Dev: dm.reg}, fusefs.EntryTimeout(time.Hour))
	ring0, uio0 := path(s, "dev/ring0"), path(s, "dev/uio0")

	py := startPy(t)
	for _, f := range []string{ring0, uio0} {
		if r := py.do("stat " + f); r != "ok:100660" {
			t.Fatalf("stat %s: %s", f, r)
		}
	}
	lookups := s.Lookups()
	for _, f := range []string{ring0, uio0} {
		py.do("stat " + f)
	}
	if n := s.Lookups() - lookups; n != 0 {
		t.Errorf("stat again sent %d lookups; want the entries cached", n)
	}
	if r := py.do("open r " + ring0 + " r"); r != "ok" {
		t.Fatalf("open ring0: %s", r)
	}
	py.send("poll r 0x1 20000")
	eventually(t, "the poller sleeps", func() bool { return s.Watchers() == 1 })
	blocked := startPy(t)
	if r := blocked.do("open u " + uio0 + " r"); r != "ok" {
		t.Fatalf("open uio0: %s", r)
	}
	blocked.send("rd u")
	blocked.quiet("a read of uio0 without data", 100*time.Millisecond)

	dm.ring0.unregister(t)
	if r := py.reply(5 * time.Second); r != "24" {
		t.Errorf("poll when ring0 was unregistered: revents %s, want %d (POLLERR|POLLHUP)", r, pollErr|pollHup)
	}
	if r := py.do("rd r"); r != "ENODEV" {
		t.Errorf("read of ring0 after unregister: %s, want ENODEV", r)
	}
	if r := py.do("poll r 0x1 20000"); r != "24" {
		t.Errorf("poll of the severed ring0: revents %s, want %d", r, pollErr|pollHup)
	}
	if r := py.do("stat " + ring0); r != "ENOENT" {
		t.Errorf("stat of the unregistered ring0: %s, want ENOENT at once", r)
	}
	if r := py.do("open x " + ring0 + " r"); r != "ENOENT" {
		t.Errorf("open of the unregistered ring0: %s, want ENOENT", r)
	}

	dm.uio.unregister(t)
	if r := blocked.reply(5 * time.Second); r != "EIO" {
		t.Errorf("read blocked in uio0 when it was unregistered: %s, want EIO (its chosen errno)", r)
	}
	if r := blocked.do("rd u"); r != "EIO" {
		t.Errorf("read of uio0 after unregister: %s, want EIO", r)
	}
	if r := py.do("stat " + uio0); r != "ENOENT" {
		t.Errorf("stat of the unregistered uio0: %s, want ENOENT at once", r)
	}
	if out, _, err := run(t, "ls", path(s, "dev")); err != nil || out != "" {
		t.Errorf("ls dev after unregister = %q, %v; want it empty", out, err)
	}
	for _, c := range []struct {
		p   *pyproc
		key string
	}{{py, "r"}, {blocked, "u"}} {
		if r := c.p.do("close " + c.key); r != "ok" {
			t.Errorf("close of a severed dev file: %s", r)
		}
	}
	eventually(t, "every handle is released", func() bool { return s.Handles() == 0 })
	if a, b := dm.ring0.releases.Load(), dm.uio.releases.Load(); a != 1 || b != 1 {
		t.Errorf("Release ran %d times for ring0 and %d for uio0; want once each", a, b)
	}
	eventually(t, "no watcher is left", func() bool { return s.Watchers() == 0 })
}

// Closing the mount while a process is blocked reading a dev file
// completes: the read's request is cancelled, and the open is released.
func TestCloseCancelsADevReadBlockedInTheDriver(t *testing.T) {
	dm := newDevMachine(t)
	s := mount(t, fusefs.Sources{Dev: dm.reg})
	py := startPy(t)
	if r := py.do("open r " + path(s, "dev/ring0") + " r"); r != "ok" {
		t.Fatalf("open: %s", r)
	}
	py.send("rd r")
	py.quiet("a read without data", 100*time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close did not return while a read was blocked in a char device")
	}
	t.Logf("the blocked read returned %s", py.reply(10*time.Second))
	if n := dm.ring0.releases.Load(); n != 1 {
		t.Errorf("Release ran %d times after Close; want once", n)
	}
}
