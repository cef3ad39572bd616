package i2c_test

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/subsys/i2c"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// slowBus is an adapter whose transfers wait for a signal.
type slowBus struct {
	inXfer  chan struct{}
	release chan struct{}
	removed atomic.Bool
	late    atomic.Int64
}

func (b *slowBus) Xfer(ctx context.Context, msgs []i2c.Msg) (int, error) {
	if b.removed.Load() {
		b.late.Add(1)
	}
	select {
	case b.inXfer <- struct{}{}:
		<-b.release
	default:
	}
	return len(msgs), nil
}

func expander(t *testing.T, algo i2c.Algorithm, clientRemove func()) (*check.Log, *device.Core, *device.Device, *i2c.Adapter) {
	t.Helper()
	log := &check.Log{}
	c := device.NewCore(t.Name(), log)
	bus, _ := c.NewBus(device.BusConfig{Name: "usb"})
	var adap *i2c.Adapter
	if err := i2c.Bus(c).RegisterDriver(context.Background(), &device.Driver{Name: "eeprom", IDs: []string{"at24"},
		Remove: func(context.Context, *device.Device) { clientRemove() }}); err != nil {
		t.Fatalf("setup: RegisterDriver failed: %v", err)
	}
	if err := bus.RegisterDriver(context.Background(), &device.Driver{Name: "cp2112", IDs: []string{"cp2112"},
		Probe: func(ctx context.Context, d *device.Device) (err error) {
			if adap, err = i2c.AddAdapter(ctx, d, algo); err != nil {
				return err
			}
			_, err = adap.NewClient(ctx, "0-0050", "at24", 0x50)
			return err
		}}); err != nil {
		t.Fatalf("setup: RegisterDriver failed: %v", err)
	}
	dev, _ := c.Register(context.Background(), device.Config{Name: "1-1", Bus: bus, Compatible: "cp2112"})
	if adap == nil {
		t.Fatal("no adapter")
	}
	return log, c, dev, adap
}

func TestAdapterRemovalDrainsTransfersButNeverWaitsForReferences(t *testing.T) {
	algo := &slowBus{inXfer: make(chan struct{}, 1), release: make(chan struct{})}
	var clientRemoved atomic.Bool
	log, c, dev, adap := expander(t, algo, func() { clientRemoved.Store(true) })
	ctx := context.Background()

	held, err := i2c.GetAdapter(c, adap.Nr(), "sensor-daemon") // never put during removal
	if err != nil {
		t.Fatal(err)
	}
	inflight := make(chan error)
	go func() { _, err := held.Transfer(ctx, []i2c.Msg{{Addr: 0x20}}); inflight <- err }()
	<-algo.inXfer

	unreg := make(chan error)
	go func() { unreg <- dev.Unregister(ctx) }()
	select {
	case err := <-unreg:
		t.Fatalf("adapter removal returned (%v) while a transfer was in flight", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(algo.release)
	if err := <-inflight; err != nil {
		t.Errorf("the transfer in flight at removal: %v, want it to complete", err)
	}
	select {
	case err := <-unreg:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("adapter removal blocked on a consumer holding a reference (wait_for_completion on users)")
	}
	algo.removed.Store(true)
	if !clientRemoved.Load() {
		t.Error("client driver was not removed with its adapter")
	}
	if _, err := held.Transfer(ctx, []i2c.Msg{{Addr: 0x20}}); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("transfer after removal: %v, want ENODEV", err)
	}
	if algo.late.Load() != 0 {
		t.Errorf("%d transfers reached the adapter after its removal", algo.late.Load())
	}
	if _, err := i2c.GetAdapter(c, adap.Nr(), "late"); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("GetAdapter of a removed adapter: %v, want ENODEV", err)
	}
	if adap.Users() != 1 {
		t.Errorf("adapter has %d users, want 1 (the consumer's shell; the client's reference was put)", adap.Users())
	}
	if err := held.Put(); err != nil {
		t.Errorf("Put of a shell: %v", err)
	}
	if err := held.Put(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("second Put: %v, want EBADF", err)
	}
	for _, v := range log.Quiesce(ctx) {
		t.Errorf("violation: %v", v)
	}
}

type echo struct{}

func (echo) Xfer(ctx context.Context, msgs []i2c.Msg) (int, error) { return len(msgs), nil }

func TestClientTransfersThroughItsAdapter(t *testing.T) {
	_, c, dev, _ := expander(t, echo{}, func() {})
	var cl *i2c.Client
	for _, d := range i2c.Bus(c).Devices() {
		cl = i2c.ClientOf(d)
	}
	if n, err := cl.Transfer(context.Background(), []i2c.Msg{{}, {}}); n != 2 || err != nil || cl.Addr() != 0x50 {
		t.Errorf("client transfer: %d, %v", n, err)
	}
	if err := dev.Unregister(context.Background()); err != nil {
		t.Errorf("Unregister of dev = %v, want nil: nothing is stuck in the driver", err)
	}
	if _, err := cl.Transfer(context.Background(), []i2c.Msg{{}}); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("client transfer after unplug: %v, want ENODEV", err)
	}
}
