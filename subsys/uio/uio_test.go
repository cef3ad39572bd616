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
// naive is the driver seed 003 describes without late_release: it keeps
// the pages itself and frees them in Remove, at unregister, while
// tcmu-runner may still have them mapped. The correct driver hands them to
// the framework as a sever.Region whose Free frees them.
type tcmu struct {
	t        *testing.T
	log      *check.Log
	core     *device.Core
	owner    *sever.Owner
	dev      *device.Device
	naive    bool
	pages    *check.State[[]byte]
	uio      *uio.Device
	releases atomic.Int32
	frees    atomic.Int32
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
			var free func([]byte)
			if !naive {
				free = func([]byte) { d.frees.Add(1); d.pages.Free() }
			}
			r, err := sever.NewRegion("tcmu: data area", mem, free, d.owner, sever.WithLog(d.log))
			if err != nil {
				return err
			}
			d.uio, err = uio.Register(ctx, dev, uio.Info{
				Name: "tcm-user", Version: "2.0", Owner: d.owner,
				Regions: []*sever.Region{r},
				Release: func() { d.releases.Add(1) },
			})
			return err
		},
		Remove: func(ctx context.Context, dev *device.Device) {
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
	f.Close()
	d.dev.Unregister(ctxT(t))
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
	f.Read(make([]byte, 4))
	if ev, _ := f.Poll(); ev != 0 {
		t.Errorf("Poll after reading the interrupt = %v, want 0", ev)
	}
	f.Close()
	d.dev.Unregister(ctxT(t))
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
	reader.Close()
	poller.Close()
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
	f.Close()
	d.dev.Unregister(ctxT(t))
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
	m.Unmap()
	f.Close()
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
	if n := d.frees.Load(); n != 1 {
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

func TestMappedRegionKeepsTheOwnerLoaded(t *testing.T) {
	d := newTcmu(t, false)
	f, _ := d.uio.Open(os.O_RDWR)
	m, _ := f.Mmap(0)
	f.Close()
	d.dev.Unregister(ctxT(t))
	if err := d.owner.Unload(ctxT(t), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("UnloadTry while the region is mapped = %v, want EBUSY: its Free is the owner's code", err)
	}
	m.Unmap()
	if err := d.owner.Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Errorf("UnloadTry after the last unmap = %v, want nil", err)
	}
	d.clean()
}

func (d *tcmu) clean() {
	d.t.Helper()
	for _, v := range d.log.Quiesce(ctxT(d.t)) {
		d.t.Errorf("contract violation: %v\n%s", v, v.Stack)
	}
}
