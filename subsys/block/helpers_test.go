package block_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/subsys/block"
)

// machine is a test's simulated machine: a core with its own log and one
// device ("host0") for disks to be created for.
type machine struct {
	t      *testing.T
	log    *check.Log
	core   *device.Core
	parent *device.Device
}

func newMachine(t *testing.T) *machine {
	t.Helper()
	log := &check.Log{}
	c := device.NewCore(t.Name(), log)
	p, err := c.Register(ctxT(t), device.Config{Name: "host0"})
	if err != nil {
		t.Fatalf("Register host0: %v", err)
	}
	return &machine{t: t, log: log, core: c, parent: p}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// addDisk adds a disk served by drv under the machine's host0.
func (m *machine) addDisk(cfg block.DiskConfig) *block.Disk {
	m.t.Helper()
	d, err := block.AddDisk(ctxT(m.t), m.parent, cfg)
	if err != nil {
		m.t.Fatalf("AddDisk %s: %v", cfg.Name, err)
	}
	return d
}

// clean fails the test if the machine's log recorded anything.
func (m *machine) clean() {
	m.t.Helper()
	for _, v := range m.log.Quiesce(ctxT(m.t)) {
		m.t.Errorf("contract violation: %v\n%s", v, v.Stack)
	}
}

// read returns the content of the attribute at path, opened and read
// through the machine's kernfs.
func (m *machine) read(path string) string {
	m.t.Helper()
	f, err := m.core.Sysfs().Open(path, os.O_RDONLY)
	if err != nil {
		m.t.Fatalf("Open %s: %v", path, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		m.t.Fatalf("Read %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		m.t.Fatalf("Close %s: %v", path, err)
	}
	return string(b)
}

// write writes s to the attribute at path and returns the write's error.
func (m *machine) write(path, s string) error {
	m.t.Helper()
	f, err := m.core.Sysfs().Open(path, os.O_WRONLY)
	if err != nil {
		m.t.Fatalf("Open %s for writing: %v", path, err)
	}
	_, err = f.Write([]byte(s))
	if cerr := f.Close(); cerr != nil {
		m.t.Errorf("Close %s after writing: %v", path, cerr)
	}
	return err
}

// ram is a RAM disk driver instrumented for the tests: it counts its
// calls, can hold each call until the test releases it, and fails the test
// if it runs once the Del the test marked with deleted has returned — the
// promise that lets a real driver free its state and unload.
type ram struct {
	t       testing.TB
	hold    chan struct{} // if non-nil, every call waits until it is closed
	calls   atomic.Int64
	deleted atomic.Bool
	mu      sync.Mutex
	data    []byte
}

func newRAM(t testing.TB, sectors int64) *ram {
	return &ram{t: t, data: make([]byte, sectors*block.SectorSize)}
}

func (r *ram) QueueRq(ctx context.Context, rq *blockq.Request) error {
	if r.deleted.Load() {
		r.t.Errorf("QueueRq(%v at %d) called after Del returned", rq.Op, rq.Sector)
	}
	defer func() {
		if r.deleted.Load() {
			r.t.Errorf("QueueRq(%v at %d) still running after Del returned", rq.Op, rq.Sector)
		}
	}()
	r.calls.Add(1)
	if r.hold != nil {
		select {
		case <-r.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	off := rq.Sector * block.SectorSize
	switch rq.Op {
	case blockq.OpRead:
		copy(rq.Data, r.data[off:])
	case blockq.OpWrite:
		copy(r.data[off:], rq.Data)
	case blockq.OpDiscard:
		clear(r.data[off : off+int64(len(rq.Data))])
	}
	return nil
}

// del deletes d and marks r deleted the moment Del returns nil.
func del(t *testing.T, d *block.Disk, r *ram) {
	t.Helper()
	if err := d.Del(ctxT(t)); err != nil {
		t.Fatalf("Del: %v", err)
	}
	r.deleted.Store(true)
}

func sectors(n int) []byte { return make([]byte, n*block.SectorSize) }

// submit runs Submit of a fresh request on its own goroutine.
func submit(ctx context.Context, d *block.Disk, op blockq.Op, sector int64) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- d.Submit(ctx, &blockq.Request{Op: op, Sector: sector, Data: sectors(1)}) }()
	return ch
}

func isNoDevice(err error) bool {
	return errors.Is(err, sever.ErrNoDevice) && errors.Is(err, syscall.ENODEV)
}

func isNotExist(err error) bool {
	return errors.Is(err, sever.ErrNotExist) && errors.Is(err, syscall.ENOENT)
}

// ready returns ch's result, which must be there.
func ready(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	default:
		t.Fatalf("%s still waiting; want it returned", what)
		return nil
	}
}

func pending(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s returned (%v); want it still waiting", what, err)
	default:
	}
}

// fields splits an attribute's content into its numbers' text.
func fields(s string) []string { return strings.Fields(s) }

// gone checks that every path fails Lookup with ENOENT.
func (m *machine) gone(paths ...string) {
	m.t.Helper()
	for _, p := range paths {
		if n, err := m.core.Sysfs().Lookup(p); !isNotExist(err) {
			m.t.Errorf("Lookup(%s) = %v, %v after the disk was deleted; want ENOENT", p, n, err)
		}
	}
}
