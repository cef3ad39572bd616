package chardev_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
)

func TestOperationsAfterUnregisterReturnTheChosenErrno(t *testing.T) {
	for _, tc := range []struct {
		name  string
		gone  error
		errno syscall.Errno
		text  string
	}{
		{"default", nil, syscall.ENODEV, "chardev: /dev/ring0: no such device"},
		{"uio-like", sever.ErrIO, syscall.EIO, "chardev: /dev/ring0: input/output error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t)
			r := m.region("ring")
			cd := m.register(chardev.Config{
				Name: "ring0", Gone: tc.gone, Regions: []*sever.Region{r},
				Ops: chardev.Ops{
					Read:  func(c *chardev.Call, b []byte) (int, error) { return copy(b, "x"), nil },
					Write: func(c *chardev.Call, b []byte) (int, error) { return len(b), nil },
					Ioctl: func(c *chardev.Call, cmd chardev.Cmd, arg []byte) (int, error) { return 0, nil },
				},
			})
			f := m.open(cd, os.O_RDWR)
			if err := cd.Unregister(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1)
			_, rerr := f.Read(buf)
			_, werr := f.Write(buf)
			_, ierr := f.Ioctl(chardev.IO('r', 1), nil)
			_, merr := f.Mmap(0)
			ev, perr := f.Poll()
			for op, err := range map[string]error{"Read": rerr, "Write": werr, "Ioctl": ierr, "Mmap": merr, "Poll": perr} {
				if !errors.Is(err, tc.errno) {
					t.Errorf("%s after unregister = %v, want the device's chosen errno %v", op, err, tc.errno)
				} else if err.Error() != tc.text {
					t.Errorf("%s after unregister says %q, want it to name the device: %q", op, err, tc.text)
				}
			}
			if ev != sever.EventErr|sever.EventHup {
				t.Errorf("Poll after unregister = %v, want ERR|HUP", ev)
			}
			if _, err := cd.Open(os.O_RDONLY); !errors.Is(err, tc.errno) {
				t.Errorf("Open after unregister = %v, want %v", err, tc.errno)
			}
			if err := f.Close(); err != nil {
				t.Errorf("Close after unregister = %v, want nil: a shell must still close", err)
			}
			if _, err := f.Read(buf); !errors.Is(err, syscall.EBADF) || !errors.Is(err, sever.ErrClosed) {
				t.Errorf("Read after Close = %v, want ErrClosed (EBADF)", err)
			}
			if err := f.Close(); !errors.Is(err, sever.ErrClosed) {
				t.Errorf("second Close = %v, want ErrClosed", err)
			}
			if n := frees(r); n != 1 {
				t.Errorf("region freed %d times after unregister and close, want 1", n)
			}
			m.clean()
		})
	}
}

func TestReleaseRunsOncePerOpenAtCloseOrAtUnregisterNeverAfter(t *testing.T) {
	m := newMachine(t)
	var mu sync.Mutex
	released := map[int]int{}
	next := 0
	guard := &afterGuard{log: m.log}
	cd := m.register(chardev.Config{Name: "ring0", Ops: chardev.Ops{
		Open: func(c *chardev.Call) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			next++
			return next, nil
		},
		Release: func(c *chardev.Call) {
			guard.check("Release")
			mu.Lock()
			released[c.Private().(int)]++
			mu.Unlock()
		},
	}})
	a, b, c := m.open(cd, os.O_RDONLY), m.open(cd, os.O_RDONLY), m.open(cd, os.O_RDONLY)
	if m.owner.Pins() != 3 {
		t.Errorf("owner pins = %d with 3 files open, want 3: each open pins the driver's code", m.owner.Pins())
	}
	closeOK(t, a)
	if released[1] != 1 {
		t.Fatalf("Close of open 1 ran its Release %d times, want 1", released[1])
	}
	if err := m.dev.Unregister(ctxT(t)); err != nil { // the removal path severs the char device
		t.Fatal(err)
	}
	guard.done.Store(true)
	if released[2] != 1 || released[3] != 1 {
		t.Errorf("after unregister, Release of the files still open ran %d and %d times, want 1 each", released[2], released[3])
	}
	if m.owner.Pins() != 0 {
		t.Errorf("owner pins = %d after unregister, want 0: the pins go with the releases", m.owner.Pins())
	}
	closeOK(t, b)
	closeOK(t, c)
	if released[2] != 1 || released[3] != 1 {
		t.Errorf("Close after unregister called Release again: %v", released)
	}
	if err := m.owner.Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Errorf("owner unload with only shells open = %v, want nil", err)
	}
	m.clean()
}

func TestUnregisterDrainsTheReadInFlight(t *testing.T) {
	m := newMachine(t)
	inside, proceed := make(chan struct{}), make(chan struct{})
	var returned atomic.Bool
	cd := m.register(chardev.Config{Name: "slow0", Ops: chardev.Ops{
		Read: func(c *chardev.Call, b []byte) (int, error) {
			close(inside)
			<-proceed
			returned.Store(true)
			return 0, nil
		},
	}})
	f := m.open(cd, os.O_RDONLY)
	readErr := make(chan error, 1)
	go func() {
		_, err := f.Read(make([]byte, 1))
		readErr <- err
	}()
	<-inside
	done := make(chan error)
	go func() { done <- cd.Unregister(ctxT(t)) }()
	select {
	case err := <-done:
		t.Fatalf("Unregister returned (%v) while a Read was inside the driver", err)
	case <-time.After(20 * time.Millisecond):
	}
	if _, err := cd.Open(os.O_RDONLY); err == nil {
		t.Error("Open succeeded while the device was being unregistered")
	}
	close(proceed)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !returned.Load() {
		t.Error("Unregister returned before the Read in flight did")
	}
	if err := <-readErr; err != nil {
		t.Errorf("the Read drained by Unregister = %v, want the driver's nil", err)
	}
	closeOK(t, f)
	m.clean()
}

func TestUnregisterPastDeadlineReportsTheStuckCall(t *testing.T) {
	m := newMachine(t)
	inside, proceed := make(chan struct{}), make(chan struct{})
	cd := m.register(chardev.Config{Name: "stuck0", Ops: chardev.Ops{
		Read: func(c *chardev.Call, b []byte) (int, error) { close(inside); <-proceed; return 0, nil },
	}})
	f := m.open(cd, os.O_RDONLY)
	read := make(chan struct{})
	go func() {
		// What the stuck Read returns is not this test's question; the
		// Unregister that gave up on it is.
		_, _ = f.Read(make([]byte, 1))
		close(read)
	}()
	<-inside
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	var he *sever.HoldersError
	if err := cd.Unregister(ctx); !errors.As(err, &he) || he.Held != 1 {
		t.Errorf("Unregister past its deadline = %v, want a HoldersError naming 1 call inside", err)
	}
	if n := m.log.Count(check.SeverTimeout); n != 1 {
		t.Errorf("SeverTimeout recorded %d times, want 1", n)
	}
	close(proceed)
	<-read
	if err := cd.Unregister(ctxT(t)); err != nil {
		t.Errorf("a later Unregister = %v, want it to finish the job", err)
	}
	closeOK(t, f)
	m.log.Quiesce(ctxT(t))
}

func TestBlockedReadWakesOnNotifyAndOnUnregister(t *testing.T) {
	m := newMachine(t)
	var avail atomic.Int32
	cd := m.register(chardev.Config{Name: "ring0", Gone: sever.ErrIO, Ops: chardev.Ops{
		Read: func(c *chardev.Call, b []byte) (int, error) {
			if avail.Add(-1) < 0 {
				avail.Add(1)
				return 0, sever.ErrWouldBlock
			}
			return copy(b, "d"), nil
		},
	}})
	f := m.open(cd, os.O_RDONLY)
	nb := m.open(cd, os.O_RDONLY|syscall.O_NONBLOCK)
	if _, err := nb.Read(make([]byte, 1)); !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("non-blocking Read with nothing to read = %v, want EAGAIN", err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := f.ReadContext(ctxT(t), make([]byte, 1))
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("Read returned %v with nothing to read; want it to block", err)
	case <-time.After(10 * time.Millisecond):
	}
	avail.Add(1)
	cd.Notify(sever.EventIn)
	if err := <-got; err != nil {
		t.Fatalf("Read after Notify = %v, want data", err)
	}

	go func() {
		_, err := f.ReadContext(ctxT(t), make([]byte, 1))
		got <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, err := nb.ReadContext(ctx, make([]byte, 1)); !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("non-blocking ReadContext = %v, want EAGAIN", err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := cd.Unregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-got; !errors.Is(err, syscall.EIO) {
		t.Errorf("blocked Read woken by unregister = %v, want the chosen EIO", err)
	}
	closeOK(t, f)
	closeOK(t, nb)
	m.clean()
}

func TestReadHonoursItsContextAndClose(t *testing.T) {
	m := newMachine(t)
	cd := m.register(chardev.Config{Name: "ring0", Ops: chardev.Ops{
		Read: func(c *chardev.Call, b []byte) (int, error) { return 0, sever.ErrWouldBlock },
	}})
	f := m.open(cd, os.O_RDONLY)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, err := f.ReadContext(ctx, make([]byte, 1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Read past its deadline = %v, want DeadlineExceeded", err)
	}
	got := make(chan error)
	go func() {
		_, err := f.ReadContext(ctxT(t), make([]byte, 1))
		got <- err
	}()
	time.Sleep(5 * time.Millisecond)
	closeOK(t, f)
	if err := <-got; !errors.Is(err, sever.ErrClosed) {
		t.Errorf("Read blocked across Close = %v, want ErrClosed", err)
	}
	unregisterOK(t, cd)
	m.clean()
}

func TestPollerWakesWithErrHupOnUnregister(t *testing.T) {
	m := newMachine(t)
	var ready atomic.Bool
	cd := m.register(chardev.Config{Name: "ring0", Ops: chardev.Ops{
		Poll: func(c *chardev.Call) sever.Events {
			if ready.Load() {
				return sever.EventIn
			}
			return 0
		},
	}})
	f := m.open(cd, os.O_RDONLY)
	if ev, err := f.Poll(); ev != 0 || err != nil {
		t.Errorf("Poll of an idle device = %v, %v; want 0, nil", ev, err)
	}
	ready.Store(true)
	cd.Notify(sever.EventIn)
	if ev, err := f.Wait(ctxT(t), sever.EventIn); ev != sever.EventIn || err != nil {
		t.Errorf("Wait of a ready device = %v, %v; want IN", ev, err)
	}
	ready.Store(false)
	got := make(chan sever.Events)
	go func() {
		ev, err := f.Wait(ctxT(t), sever.EventIn)
		if !errors.Is(err, syscall.ENODEV) {
			t.Errorf("Wait woken by unregister returned %v, want ENODEV", err)
		}
		got <- ev
	}()
	time.Sleep(5 * time.Millisecond)
	unregisterOK(t, m.dev)
	if ev := <-got; ev != sever.EventErr|sever.EventHup {
		t.Errorf("poller woken by unregister saw %v, want ERR|HUP", ev)
	}
	closeOK(t, f)
	m.clean()
}

func TestDriverPanicIsRecordedAsDriverFaultAndReturnsEIO(t *testing.T) {
	m := newMachine(t)
	cd := m.register(chardev.Config{Name: "bad0", Ops: chardev.Ops{
		Read:    func(c *chardev.Call, b []byte) (int, error) { panic("driver bug") },
		Release: func(c *chardev.Call) { panic("release bug") },
	}})
	f := m.open(cd, os.O_RDONLY)
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, syscall.EIO) {
		t.Errorf("Read whose driver panicked = %v, want EIO", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close whose Release panicked = %v, want nil", err)
	}
	if n := m.log.Count(check.DriverFault); n != 2 {
		t.Errorf("DriverFault recorded %d times, want 2 (Read, Release)", n)
	}
	if m.owner.Pins() != 0 {
		t.Errorf("a panicking Release kept its owner pin: %d pins", m.owner.Pins())
	}
	unregisterOK(t, cd)
	m.log.Quiesce(ctxT(t))
	if n := m.log.Count(check.ReleaseNeverRun); n != 0 {
		t.Errorf("a panicking Release counted as never run (%d)", n)
	}
}

func TestIoctlCopiesTheArgumentOnlyInItsDirection(t *testing.T) {
	m := newMachine(t)
	var seen []byte
	cd := m.register(chardev.Config{Name: "ctl0", Ops: chardev.Ops{
		Ioctl: func(c *chardev.Call, cmd chardev.Cmd, arg []byte) (int, error) {
			seen = append([]byte(nil), arg...)
			for i := range arg {
				arg[i] = 0xAA
			}
			if cmd.Nr() == 9 {
				return 0, syscall.ENOTTY
			}
			return 7, nil
		},
	}})
	f := m.open(cd, os.O_RDWR)
	in := []byte{1, 2, 3, 4}
	if r, err := f.Ioctl(chardev.IOW('c', 1, 4), in); r != 7 || err != nil || string(seen) != "\x01\x02\x03\x04" || in[0] != 1 {
		t.Errorf("IOW: r=%d err=%v driver saw %v caller has %v; want the argument in, nothing back", r, err, seen, in)
	}
	out := []byte{1, 2}
	if _, err := f.Ioctl(chardev.IOR('c', 2, 2), out); err != nil || string(seen) != "\x00\x00" || out[0] != 0xAA {
		t.Errorf("IOR: err=%v driver saw %v caller got %v; want nothing in, the result back", err, seen, out)
	}
	if _, err := f.Ioctl(chardev.IOWR('c', 3, 8), make([]byte, 4)); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("ioctl with an argument of the wrong size = %v, want EINVAL", err)
	}
	if _, err := f.Ioctl(chardev.IO('c', 9), nil); !errors.Is(err, syscall.ENOTTY) {
		t.Errorf("unknown ioctl = %v, want ENOTTY", err)
	}
	if c := chardev.IOWR('u', 3, 8); uint32(c) != 0xc0087503 || c.String() != `IOWR('u', 3, 8)` {
		t.Errorf("IOWR('u', 3, 8) = %#x %v, want Linux's _IOWR value 0xc0087503", uint32(c), c)
	}
	closeOK(t, f)
	unregisterOK(t, cd)
	m.clean()
}

func TestRegistryIsPerMachineAndFreesNameAndNumberAtUnregister(t *testing.T) {
	a, b := newMachine(t), newMachine(t)
	ca := a.register(chardev.Config{Name: "tty0"})
	cb := b.register(chardev.Config{Name: "tty0"})
	if ca.Devt() != cb.Devt() {
		t.Errorf("two machines' first devices got %v and %v: their numbers should not interfere", ca.Devt(), cb.Devt())
	}
	if _, err := chardev.Register(a.dev, chardev.Config{Name: "tty0"}); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("duplicate name on one machine = %v, want EEXIST", err)
	}
	f, err := chardev.RegistryOf(a.core).Open("/dev/tty0", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	unregisterOK(t, ca)
	if _, err := chardev.RegistryOf(a.core).Open("tty0", os.O_RDONLY); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("open by name after unregister = %v, want ENOENT", err)
	}
	again := a.register(chardev.Config{Name: "tty0"}) // the device plugged in again, old file still open
	if again.Devt().Major == 0 {
		t.Errorf("re-registered device has no major: %v", again.Devt())
	}
	if names := chardev.RegistryOf(b.core).Names(); len(names) != 1 || names[0] != "tty0" {
		t.Errorf("machine b's dev/ = %v, want [tty0]", names)
	}
	closeOK(t, f)
	unregisterOK(t, again)
	unregisterOK(t, cb)
	a.clean()
	b.clean()
}

func TestSharedMajorHandsOutMinors(t *testing.T) {
	m := newMachine(t)
	major, err := chardev.RegistryOf(m.core).AllocMajor("ring")
	if err != nil {
		t.Fatal(err)
	}
	c0 := m.register(chardev.Config{Name: "ring0", Major: major})
	c1 := m.register(chardev.Config{Name: "ring1", Major: major})
	if c0.Devt() != (chardev.Devt{Major: major, Minor: 0}) || c1.Devt() != (chardev.Devt{Major: major, Minor: 1}) {
		t.Errorf("devices on a shared major got %v and %v, want %d:0 and %d:1", c0.Devt(), c1.Devt(), major, major)
	}
	unregisterOK(t, c0)
	if c2 := m.register(chardev.Config{Name: "ring2", Major: major}); c2.Devt().Minor != 0 {
		t.Errorf("minor freed at unregister was not reused: got %v", c2.Devt())
	}
	unregisterOK(t, m.dev)
	m.clean()
}

func TestUnbindSeversTheCharDeviceItsProbeRegistered(t *testing.T) {
	log := &check.Log{}
	c := device.NewCore(t.Name(), log)
	bus, _ := c.NewBus(device.BusConfig{Name: "platform"})
	owner := sever.NewOwner("ringdrv", nil, sever.WithLog(log))
	var order []string
	var cd *chardev.Cdev
	if err := bus.RegisterDriver(ctxT(t), &device.Driver{
		Name: "ring", IDs: []string{"ring"}, Owner: owner,
		Probe: func(ctx context.Context, d *device.Device) (err error) {
			cd, err = chardev.Register(d, chardev.Config{Name: "ring0", Ops: chardev.Ops{
				Read:    func(c *chardev.Call, b []byte) (int, error) { return 0, nil },
				Release: func(c *chardev.Call) { order = append(order, "Release") },
			}})
			return err
		},
		Remove: func(ctx context.Context, d *device.Device) { order = append(order, "Remove") },
	}); err != nil {
		t.Fatal(err)
	}
	d, err := c.Register(ctxT(t), device.Config{Name: "ring", Bus: bus, Compatible: "ring"})
	if err != nil || cd == nil {
		t.Fatalf("Register: %v (char device %v)", err, cd)
	}
	f, err := cd.Open(os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Unbind(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if len(order) != 2 || order[0] != "Release" || order[1] != "Remove" {
		t.Errorf("unbind ran %v, want [Release Remove]: files are severed before the driver's Remove", order)
	}
	if _, err := f.Read(nil); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Read after unbind = %v, want ENODEV", err)
	}
	closeOK(t, f)
	unregisterOK(t, d)
	if err := owner.Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Errorf("unload after unbind = %v, want nil", err)
	}
	for _, v := range log.Quiesce(ctxT(t)) {
		t.Errorf("contract violation: %v", v)
	}
}

func TestOpenPinsTheOwnerAndForcedUnloadSeversTheDevice(t *testing.T) {
	m := newMachine(t)
	var releases atomic.Int32
	cd := m.register(chardev.Config{Name: "ring0", Ops: chardev.Ops{
		Release: func(c *chardev.Call) { releases.Add(1) },
	}})
	f := m.open(cd, os.O_RDONLY)
	if err := m.owner.Unload(ctxT(t), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("UnloadTry with a file open = %v, want EBUSY", err)
	}
	if err := m.owner.Unload(ctxT(t), sever.UnloadForce); err != nil {
		t.Fatalf("UnloadForce with a file open = %v, want nil: unload never waits for a close", err)
	}
	if releases.Load() != 1 {
		t.Errorf("forced unload ran Release %d times, want 1", releases.Load())
	}
	if _, err := f.Read(nil); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Read after the owner unloaded = %v, want ENODEV", err)
	}
	if err := f.Close(); err != nil || releases.Load() != 1 {
		t.Errorf("Close after unload = %v with %d releases; want nil and no new call", err, releases.Load())
	}
	unregisterOK(t, m.dev)
	m.clean()
}
