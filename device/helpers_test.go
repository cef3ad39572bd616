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

func ctxT(t *testing.T) context.Context {
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
