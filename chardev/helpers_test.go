package chardev_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
)

// machine is a test's simulated machine: a core with its own log, a driver
// module, and one device "dev0" whose code is that module's.
type machine struct {
	t     *testing.T
	log   *check.Log
	core  *device.Core
	owner *sever.Owner
	dev   *device.Device
}

func newMachine(t *testing.T) *machine {
	t.Helper()
	log := &check.Log{}
	c := device.NewCore(t.Name(), log)
	owner := sever.NewOwner("drv", nil, sever.WithLog(log))
	dev, err := c.Register(ctxT(t), device.Config{Name: "dev0", Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	return &machine{t: t, log: log, core: c, owner: owner, dev: dev}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (m *machine) register(cfg chardev.Config) *chardev.Cdev {
	m.t.Helper()
	cd, err := chardev.Register(m.dev, cfg)
	if err != nil {
		m.t.Fatalf("Register %s: %v", cfg.Name, err)
	}
	return cd
}

func (m *machine) open(cd *chardev.Cdev, flag int) *chardev.File {
	m.t.Helper()
	f, err := cd.Open(flag)
	if err != nil {
		m.t.Fatalf("Open %s: %v", cd, err)
	}
	return f
}

func (m *machine) region(name string) *sever.Region {
	m.t.Helper()
	r, err := sever.NewRegion(name, make([]byte, 4096), sever.WithLog(m.log))
	if err != nil {
		m.t.Fatal(err)
	}
	return r
}

// frees is how many times r's memory has been freed: 0 or 1 (a second
// free is check.ReleaseTwice in the machine's log, which clean reports).
func frees(r *sever.Region) int32 {
	if r.Freed() {
		return 1
	}
	return 0
}

// clean fails the test if the machine's log recorded anything by quiesce:
// a Release or Free never run, a callback after unregister, a fault.
func (m *machine) clean() {
	m.t.Helper()
	for _, v := range m.log.Quiesce(ctxT(m.t)) {
		m.t.Errorf("contract violation: %v\n%s", v, v.Stack)
	}
}

// afterGuard is the driver's instrument for "no callback after Unregister
// returns": every callback calls check, which records CallbackAfterSever
// once done has been set.
type afterGuard struct {
	log  *check.Log
	done atomic.Bool
}

func (g *afterGuard) check(site string) {
	if g.done.Load() {
		g.log.Record(check.Violation{Class: check.CallbackAfterSever, Object: "driver", Detail: site + " called after Unregister returned"})
	}
}

// closeOK closes f and fails the test if Close does: a file's first Close
// succeeds, its device gone or not.
func closeOK(t testing.TB, f interface{ Close() error }) {
	t.Helper()
	if err := f.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

// unregisterOK unregisters d, a device or a char device, and fails the test
// if that fails: where these tests call it, no call is stuck in the driver.
func unregisterOK(t testing.TB, d interface{ Unregister(context.Context) error }) {
	t.Helper()
	if err := d.Unregister(ctxT(t)); err != nil {
		t.Errorf("unregister: %v", err)
	}
}
