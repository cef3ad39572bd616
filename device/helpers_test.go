package device_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
)

// machine is a test's simulated machine: a core with its own log and a
// "platform" bus whose drivers match devices by Compatible.
type machine struct {
	t    *testing.T
	log  *check.Log
	core *device.Core
	bus  *device.Bus
}

func newMachine(t *testing.T, opts ...sever.Option) *machine {
	t.Helper()
	log := &check.Log{}
	c := device.NewCore(t.Name(), log, opts...)
	bus, err := c.NewBus(device.BusConfig{Name: "platform"})
	if err != nil {
		t.Fatal(err)
	}
	return &machine{t: t, log: log, core: c, bus: bus}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (m *machine) register(name string, parent *device.Device, compatible string) *device.Device {
	m.t.Helper()
	d, err := m.core.Register(ctxT(m.t), device.Config{Name: name, Parent: parent, Bus: m.bus, Compatible: compatible})
	if err != nil {
		m.t.Fatalf("Register %s: %v", name, err)
	}
	return d
}

func (m *machine) driver(drv *device.Driver) *device.Driver {
	m.t.Helper()
	if err := m.bus.RegisterDriver(ctxT(m.t), drv); err != nil {
		m.t.Fatalf("RegisterDriver %s: %v", drv.Name, err)
	}
	return drv
}

// clean fails the test if the machine's log recorded anything.
func (m *machine) clean() {
	m.t.Helper()
	for _, v := range m.log.Quiesce(ctxT(m.t)) {
		m.t.Errorf("contract violation: %v\n%s", v, v.Stack)
	}
}

// journal records callback order.
type journal struct {
	mu sync.Mutex
	ev []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	j.ev = append(j.ev, s)
	j.mu.Unlock()
}

func (j *journal) get() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.ev...)
}

// closeOK closes f, a handle or an open file, and fails the test if that
// fails: a first Close succeeds, whether its device, node or provider is
// still there or not.
func closeOK(t testing.TB, f interface{ Close() error }) {
	t.Helper()
	if err := f.Close(); err != nil {
		t.Errorf("Close = %v, want nil: a first Close succeeds", err)
	}
}

// unregisterOK unregisters d and fails the test if that fails: where these
// tests call it, no callback is stuck in the driver and no reference to
// the device's shell is left.
func unregisterOK(t testing.TB, d *device.Device) {
	t.Helper()
	if err := d.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister of %s = %v, want nil: no callback is stuck and no reference is left", d, err)
	}
}

// onlyMisuse quiesces m's log and fails t for any violation but the
// misuse the test provoked.
func onlyMisuse(t *testing.T, m *machine) {
	t.Helper()
	for _, v := range m.log.Quiesce(ctxT(t)) {
		if v.Class != check.Misuse {
			t.Errorf("recorded besides the misuse: %v", v)
		}
	}
}
