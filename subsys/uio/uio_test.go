package uio_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/subsys/uio"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tcmu is a tcmu-like driver: in Probe it allocates a data area (pages
// modelled with check.State, so a use after they are freed is recorded)
// and registers a uio device exposing it as region 0.
//
// naive is the driver DESIGN.md's "Seed 003" describes without
// late_release: it frees the pages itself in Remove, at unregister, while
// tcmu-runner may still have them mapped. The correct driver hands them to
// the framework as a sever.Region and frees nothing: the framework frees
// them at the last unmap and close.
type tcmu struct {
	t        *testing.T
	log      *check.Log
	core     *device.Core
	owner    *sever.Owner
	dev      *device.Device
	naive    bool
	pages    *check.State[[]byte]
	region   *sever.Region
	uio      *uio.Device
	calls    atomic.Int32 // every callback of the driver that ran
	releases atomic.Int32
	frees    atomic.Int32 // the naive driver's own frees
}

func newTcmu(t *testing.T, naive bool) *tcmu {
	t.Helper()
	d := &tcmu{t: t, log: &check.Log{}, naive: naive}
	d.core = device.NewCore(t.Name(), d.log)
	d.owner = sever.NewOwner("target_core_user", nil, sever.WithLog(d.log))
	bus, err := d.core.NewBus(device.BusConfig{Name: "tcm"})
	if err != nil {
		t.Fatal(err)
	}
	err = bus.RegisterDriver(ctxT(t), &device.Driver{
		Name: "tcmu", IDs: []string{"tcmu"}, Owner: d.owner,
		Probe: func(ctx context.Context, dev *device.Device) error {
			mem := make([]byte, 4096)
			d.pages = check.NewState(d.log, "tcmu: data area", mem)
			r, err := sever.NewRegion("tcmu: data area", mem, sever.WithLog(d.log))
			if err != nil {
				return err
			}
			d.region = r
			d.uio, err = uio.Register(ctx, dev, uio.Info{
				Name: "tcm-user", Version: "2.0", Owner: d.owner,
				Regions:    []*sever.Region{r},
				Open:       func() error { d.calls.Add(1); return nil },
				IrqControl: func(bool) error { d.calls.Add(1); return nil },
				Release:    func() { d.calls.Add(1); d.releases.Add(1) },
			})
			return err
		},
		Remove: func(ctx context.Context, dev *device.Device) {
			d.calls.Add(1)
			if naive {
				d.frees.Add(1)
				d.pages.Free() // the naive free: the daemon may still map these pages
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	d.dev, err = d.core.Register(ctxT(t), device.Config{Name: "tcmu0", Bus: bus, Compatible: "tcmu"})
	if err != nil || d.uio == nil {
		t.Fatalf("Register: %v (uio %v)", err, d.uio)
	}
	return d
}

// dataAreaFrees is how many times the data area was freed: by the naive
// driver itself, or by the framework (0 or 1: a second free is
// check.ReleaseTwice in the log).
func (d *tcmu) dataAreaFrees() int {
	n := int(d.frees.Load())
	if !d.naive && d.region.Freed() {
		n++
	}
	return n
}

// touch is tcmu-runner reading its mapping: the memory must be there (no
// SIGBUS), and pages.Use stands in for the MMU, recording a use of freed
// pages.
func (d *tcmu) touch(m *sever.Mapping) {
	d.t.Helper()
	if m.Bytes() == nil {
		d.t.Fatal("mapping has no memory before Unmap: the daemon would take SIGBUS")
	}
	d.pages.Use("tcmu-runner touching its mapping")
}

func readCount(t *testing.T, b []byte) uint32 {
	t.Helper()
	return binary.LittleEndian.Uint32(b)
}

func TestReadBlocksUntilInterruptAndReturnsTheCount(t *testing.T) {
	d := newTcmu(t, false)
	f, err := d.uio.Open(os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte)
	go func() {
		buf := make([]byte, 4)
		if _, err := f.ReadContext(ctxT(t), buf); err != nil {
			t.Errorf("Read = %v", err)
		}
		got <- buf
	}()
	select {
	case <-got:
		t.Fatal("Read returned before any interrupt")
	case <-time.After(10 * time.Millisecond):
	}
	if !d.uio.Interrupt() {
		t.Fatal("Interrupt not delivered on a live device")
	}
	if n := readCount(t, <-got); n != 1 {
		t.Errorf("Read after one interrupt returned count %d, want 1", n)
	}
	d.uio.Interrupt()
	d.uio.Interrupt()
	buf := make([]byte, 4)
	if _, err := f.Read(buf); err != nil || readCount(t, buf) != 3 {
		t.Errorf("Read after three interrupts = %v, count %d; want 3 at once", err, readCount(t, buf))
	}
	if _, err := f.Read(make([]byte, 3)); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Read of 3 bytes = %v, want EINVAL as uio", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close of f = %v, want nil: a first Close succeeds", err)
	}
	if err := d.dev.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister of dev = %v, want nil: nothing is stuck in the driver", err)
	}
	d.clean()
}

func TestPollReportsInOnlyAfterAnInterruptSinceTheLastRead(t *testing.T) {
	d := newTcmu(t, false)
	f, _ := d.uio.Open(os.O_RDONLY)
	if ev, _ := f.Poll(); ev != 0 {
		t.Errorf("Poll before any interrupt = %v, want 0", ev)
	}
	go func() { time.Sleep(5 * time.Millisecond); d.uio.Interrupt() }()
	if ev, err := f.Wait(ctxT(t), sever.EventIn); ev != sever.EventIn || err != nil {
		t.Errorf("Wait across an interrupt = %v, %v; want IN", ev, err)
	}
	if _, err := f.Read(make([]byte, 4)); err != nil {
		t.Errorf("Read of f = %v, want nil: the data is there to read", err)
	}
	if ev, _ := f.Poll(); ev != 0 {
		t.Errorf("Poll after reading the interrupt = %v, want 0", ev)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close of f = %v, want nil: a first Close succeeds", err)
	}
	if err := d.dev.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister of dev = %v, want nil: nothing is stuck in the driver", err)
	}
	d.clean()
}

func TestUnregisterWakesABlockedReaderWithEIOAndAPollerWithErrHup(t *testing.T) {
	d := newTcmu(t, false)
	reader, _ := d.uio.Open(os.O_RDONLY)
	poller, _ := d.uio.Open(os.O_RDONLY)
	readErr := make(chan error)
	go func() {
		_, err := reader.ReadContext(ctxT(t), make([]byte, 4))
		readErr <- err
	}()
	pollEv := make(chan sever.Events)
	go func() {
		ev, _ := poller.Wait(ctxT(t), sever.EventIn)
		pollEv <- ev
	}()
	time.Sleep(10 * time.Millisecond)
	if err := d.dev.Unregister(ctxT(t)); err != nil { // the unplug
		t.Fatal(err)
	}
	if err := <-readErr; !errors.Is(err, syscall.EIO) || err.Error() != "chardev: /dev/uio0: input/output error" {
		t.Errorf("blocked Read woken by unregister = %v, want EIO naming /dev/uio0", err)
	}
	if ev := <-pollEv; ev != sever.EventErr|sever.EventHup {
		t.Errorf("poller woken by unregister saw %v, want ERR|HUP", ev)
	}
	if d.uio.Interrupt() {
		t.Error("Interrupt delivered after unregister")
	}
	if n := d.releases.Load(); n != 2 {
		t.Errorf("Release ran %d times at unregister for 2 open files, want 2", n)
	}
	if err := reader.Close(); err != nil {
		t.Errorf("Close of reader = %v, want nil: a first Close succeeds", err)
	}
	if err := poller.Close(); err != nil {
		t.Errorf("Close of poller = %v, want nil: a first Close succeeds", err)
	}
	if n := d.releases.Load(); n != 2 {
		t.Errorf("Close after unregister called Release again (%d)", n)
	}
	d.clean()
}

func TestWriteTurnsTheInterruptOffAndOn(t *testing.T) {
	d := newTcmu(t, false)
	f, _ := d.uio.Open(os.O_RDWR)
	if _, err := f.Write([]byte{0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if d.uio.Interrupt() {
		t.Error("Interrupt delivered while the process had turned it off")
	}
	if _, err := f.Write([]byte{1, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if !d.uio.Interrupt() {
		t.Error("Interrupt not delivered after the process turned it back on")
	}
	if _, err := f.Write([]byte{1}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Write of 1 byte = %v, want EINVAL", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close of f = %v, want nil: a first Close succeeds", err)
	}
	if err := d.dev.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister of dev = %v, want nil: nothing is stuck in the driver", err)
	}
	d.clean()
}

// runDaemon plays tcmu-runner through a hot-unplug: map the data area,
// wait for an interrupt, see the device go (EIO), touch the mapping once
// more while winding down, unmap and close.
func (d *tcmu) runDaemon() {
	t := d.t
	f, err := d.uio.Open(os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.Mmap(0)
	if err != nil {
		t.Fatal(err)
	}
	d.touch(m)
	d.uio.Interrupt()
	if _, err := f.Read(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := d.dev.Unregister(ctxT(t)); err != nil { // the kernel removes the device
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 4)); !errors.Is(err, syscall.EIO) {
		t.Errorf("Read after unregister = %v, want EIO", err)
	}
	d.touch(m) // still mapped: the daemon finishes its last command
	if err := m.Unmap(); err != nil {
		t.Errorf("the daemon's Unmap after the unplug = %v, want nil", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("the daemon's Close after the unplug = %v, want nil", err)
	}
}

func TestNaiveTcmuFreeingPagesAtUnregisterIsUseAfterFree(t *testing.T) {
	d := newTcmu(t, true)
	d.runDaemon()
	d.log.Quiesce(ctxT(t))
	if n := d.log.Count(check.UseAfterFree); n != 1 {
		t.Errorf("checker recorded %d uses after free, want 1: the daemon touched pages the naive driver freed at unregister", n)
	}
}

func TestTcmuHandingPagesToARegionStaysCleanAndFreesThemOnce(t *testing.T) {
	d := newTcmu(t, false)
	d.runDaemon()
	if n := d.dataAreaFrees(); n != 1 {
		t.Errorf("data area freed %d times, want once after unregister, unmap and close", n)
	}
	if n := d.releases.Load(); n != 1 {
		t.Errorf("Release ran %d times for one open, want 1 (at unregister, not at the later close)", n)
	}
	if err := d.owner.Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Errorf("unloading tcmu after the daemon let go = %v, want nil", err)
	}
	d.clean()
}

// Rule: a mapped region pins no owner. Once the device is unregistered a
// try-unload succeeds while the daemon still maps the data area, the
// mapping stays valid, and the framework frees the memory at the unmap.
func TestMappedRegionPinsNoOwner(t *testing.T) {
	d := newTcmu(t, false)
	f, _ := d.uio.Open(os.O_RDWR)
	m, _ := f.Mmap(0)
	if err := f.Close(); err != nil {
		t.Errorf("Close of f = %v, want nil: a first Close succeeds", err)
	}
	if err := d.dev.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister of dev = %v, want nil: nothing is stuck in the driver", err)
	}
	if err := d.owner.Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Errorf("UnloadTry with only a mapping of the unregistered device left = %v, want nil", err)
	}
	d.touch(m)
	if d.dataAreaFrees() != 0 {
		t.Error("data area freed while mapped")
	}
	if err := m.Unmap(); err != nil {
		t.Errorf("Unmap of m = %v, want nil: a mapping's first Unmap succeeds", err)
	}
	if n := d.dataAreaFrees(); n != 1 {
		t.Errorf("data area freed %d times at the last unmap, want 1", n)
	}
	d.clean()
}

// Rule: a forced unload of the driver's module with /dev/uio0 open and
// mapped by a process that is busy elsewhere returns without waiting for
// that process; the open becomes a shell returning EIO, the mapping stays
// valid, no callback of the driver runs after the unload, and the
// framework frees the memory once, at the later unmap and close.
func TestForceUnloadWithUioOpenAndMappedReturnsPromptly(t *testing.T) {
	d := newTcmu(t, false)
	f, err := d.uio.Open(os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.Mmap(0)
	if err != nil {
		t.Fatal(err)
	}
	copy(m.Bytes(), "cmd1")
	// A deadline far beyond what the unload needs: reaching it means the
	// unload waited for the process.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.owner.Unload(ctx, sever.UnloadForce); err != nil {
		t.Fatalf("force unload with uio0 open and mapped = %v; it must not wait for the process", err)
	}
	if d.owner.State() != sever.OwnerGone {
		t.Fatalf("owner %v after the force unload returned, want gone", d.owner.State())
	}
	calls := d.calls.Load()
	if n := d.releases.Load(); n != 1 {
		t.Errorf("Release ran %d times by the unload, want 1 (at the sever)", n)
	}
	if _, err := f.Read(make([]byte, 4)); !errors.Is(err, syscall.EIO) {
		t.Errorf("Read after the unload = %v, want EIO", err)
	}
	if _, err := f.Write([]byte{1, 0, 0, 0}); !errors.Is(err, syscall.EIO) {
		t.Errorf("Write after the unload = %v, want EIO", err)
	}
	d.touch(m)
	if string(m.Bytes()[:4]) != "cmd1" || d.dataAreaFrees() != 0 {
		t.Errorf("mapping after the unload: %v, frees %d; want the memory intact and unfreed", m.Bytes()[:4], d.dataAreaFrees())
	}
	if err := m.Unmap(); err != nil {
		t.Errorf("Unmap of m = %v, want nil: a mapping's first Unmap succeeds", err)
	}
	if d.dataAreaFrees() != 0 {
		t.Error("data area freed with the file still open")
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close of f = %v, want nil: a first Close succeeds", err)
	}
	if n := d.dataAreaFrees(); n != 1 {
		t.Errorf("data area freed %d times at the last unmap and close, want 1", n)
	}
	if n := d.calls.Load(); n != calls {
		t.Errorf("%d driver callbacks ran after the unload returned, want none", n-calls)
	}
	d.clean()
}

func (d *tcmu) clean() {
	d.t.Helper()
	for _, v := range d.log.Quiesce(ctxT(d.t)) {
		d.t.Errorf("contract violation: %v\n%s", v, v.Stack)
	}
}
