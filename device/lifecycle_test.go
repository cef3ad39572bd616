package device_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
)

// regs is a driver's private state, reached by consumers through a
// provider handle.
type regs struct {
	freed atomic.Bool
	calls atomic.Int64
}

func TestRemoveRunsOnlyAfterEveryHandleCallDrained(t *testing.T) {
	m := newMachine(t)
	ctx := ctxT(t)
	var (
		prov        *device.Provider[*regs]
		state       = &regs{}
		inRemove    atomic.Bool
		enteredLate atomic.Int64 // calls that began after Remove started
		inside      atomic.Int64
		insideAtRm  atomic.Int64
	)
	m.driver(&device.Driver{
		Name: "slow", IDs: []string{"slow"},
		Probe: func(ctx context.Context, d *device.Device) error {
			p, err := device.NewProvider(d, "regs", state)
			prov = p
			return err
		},
		Remove: func(ctx context.Context, d *device.Device) {
			insideAtRm.Store(inside.Load())
			inRemove.Store(true)
			time.Sleep(50 * time.Millisecond) // a slow controller shutdown
			state.freed.Store(true)
		},
	})
	dev := m.register("slow0", nil, "slow")

	const consumers = 50
	var wg sync.WaitGroup
	started := make(chan struct{}, consumers)
	errs := make(chan error, consumers)
	for i := range consumers {
		h, err := prov.Open(fmt.Sprintf("consumer%d", i))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer closeOK(t, h)
			first := true
			for {
				err := h.Do(func(r *regs) error {
					inside.Add(1)
					defer inside.Add(-1)
					if inRemove.Load() {
						enteredLate.Add(1)
					}
					if r.freed.Load() {
						return errors.New("driver state used after Remove freed it")
					}
					r.calls.Add(1)
					time.Sleep(time.Millisecond) // a slow register access
					return nil
				})
				if first {
					started <- struct{}{}
					first = false
				}
				if errors.Is(err, sever.ErrNoDevice) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range consumers {
		<-started
	}
	if err := dev.Unregister(ctx); err != nil {
		t.Fatalf("Unregister: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("consumer: %v", err)
	}
	if n := insideAtRm.Load(); n != 0 {
		t.Errorf("Remove began with %d handle calls still inside the driver; the removal path must drain them first", n)
	}
	if n := enteredLate.Load(); n != 0 {
		t.Errorf("%d handle calls entered the driver after Remove began", n)
	}
	if state.calls.Load() == 0 {
		t.Error("no consumer call ever reached the driver; the test proved nothing")
	}
	if prov.Handles() != 0 {
		t.Errorf("%d handles still open after every consumer closed", prov.Handles())
	}
	m.clean()
}

func TestProbeFailureReleasesExactlyWhatItAdded(t *testing.T) {
	m := newMachine(t)
	var j journal
	probeErr := errors.New("chip did not answer")
	var sev *device.Provider[int]
	m.driver(&device.Driver{
		Name: "half", IDs: []string{"half"},
		Probe: func(ctx context.Context, d *device.Device) error {
			for _, n := range []string{"clk", "irq", "dma"} {
				if _, err := d.AddResource(n, func() { j.add("release " + n) }); err != nil {
					return err
				}
			}
			g, err := d.OpenGroup("feature")
			if err != nil {
				return err
			}
			if _, err := g.Add("feature-a", func() { j.add("release feature-a") }); err != nil {
				return err
			}
			if _, err := g.Add("feature-b", func() { j.add("release feature-b") }); err != nil {
				return err
			}
			sev, _ = device.NewProvider(d, "regs", 7)
			if _, err := m.core.Register(ctx, device.Config{Name: "child", Parent: d}); err != nil {
				return err
			}
			return probeErr // half-way: the fourth resource was never added
		},
		Remove: func(ctx context.Context, d *device.Device) { j.add("Remove") },
	})
	dev := m.register("half0", nil, "half")
	want := []string{"release feature-b", "release feature-a", "release dma", "release irq", "release clk"}
	if got := j.get(); !slices.Equal(got, want) {
		t.Errorf("failed Probe released %q, want exactly %q (reverse order, Remove not called)", got, want)
	}
	if dev.Driver() != nil || dev.State() != device.StateRegistered {
		t.Errorf("device after failed probe: driver %v state %v, want unbound", dev.Driver(), dev.State())
	}
	if len(dev.Children()) != 0 {
		t.Errorf("child registered by the failed Probe survived: %v", dev.Children())
	}
	if err := sev.Err(); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("provider of the failed Probe still live: %v", err)
	}
	if err := dev.Unregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := j.get(); len(got) != len(want) {
		t.Errorf("Unregister released resources again: %q", got[len(want):])
	}
	m.clean()
}

func TestResourcesReleasedInReverseAfterRemoveExactlyOnce(t *testing.T) {
	m := newMachine(t)
	var j journal
	m.driver(&device.Driver{
		Name: "res", IDs: []string{"res"},
		Probe: func(ctx context.Context, d *device.Device) error {
			if _, err := d.AddResource("a", func() { j.add("a") }); err != nil {
				return err
			}
			r, err := d.AddResource("b", func() { j.add("b") })
			if err != nil {
				return err
			}
			if _, err := d.AddResource("c", func() { j.add("c") }); err != nil {
				return err
			}
			r.Release() // explicit: runs now, not again
			f, err := d.AddResource("d", func() { j.add("d") })
			if err != nil {
				return err
			}
			f.Forget() // never runs
			return nil
		},
		Remove: func(ctx context.Context, d *device.Device) { j.add("Remove") },
	})
	dev := m.register("res0", nil, "res")
	if err := dev.Unbind(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got, want := j.get(), []string{"b", "Remove", "c", "a"}; !slices.Equal(got, want) {
		t.Errorf("callbacks %q, want %q", got, want)
	}
	unregisterOK(t, dev)
	m.clean()
}

func TestUnloadTryRefusesWhileBoundAndForceUnbindsFirst(t *testing.T) {
	m := newMachine(t)
	ctx := ctxT(t)
	var j journal
	exit := func() { j.add("exit") }
	owner := sever.NewOwner("gpio_cp2112", exit, sever.WithLog(m.log))
	m.driver(&device.Driver{
		Name: "cp2112", IDs: []string{"cp2112"}, Owner: owner,
		Probe:  func(ctx context.Context, d *device.Device) error { j.add("Probe " + d.Name()); return nil },
		Remove: func(ctx context.Context, d *device.Device) { j.add("Remove " + d.Name()) },
	})
	a := m.register("a", nil, "cp2112")
	b := m.register("b", nil, "cp2112")
	if owner.Pins() != 2 {
		t.Fatalf("two bound devices hold %d pins on their driver's owner, want 2", owner.Pins())
	}

	err := owner.Unload(ctx, sever.UnloadTry)
	if !errors.Is(err, sever.ErrBusy) || !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("UnloadTry with bound devices: %v, want EBUSY", err)
	}
	if a.Driver() == nil || b.Driver() == nil || owner.State() != sever.OwnerLive {
		t.Fatal("a refused UnloadTry changed something")
	}

	if err := owner.Unload(ctx, sever.UnloadForce); err != nil {
		t.Fatalf("UnloadForce: %v", err)
	}
	got := j.get()
	if i := slices.Index(got, "exit"); i != len(got)-1 || !slices.Contains(got, "Remove a") || !slices.Contains(got, "Remove b") {
		t.Errorf("UnloadForce callbacks %q: want both Removes before exit", got)
	}
	if a.Driver() != nil || b.Driver() != nil {
		t.Error("devices still bound after their driver's owner unloaded")
	}
	if len(m.bus.Drivers()) != 0 {
		t.Error("driver still registered after its owner unloaded")
	}
	// The devices remain; a new driver could bind them.
	unregisterOK(t, a)
	unregisterOK(t, b)
	m.clean()
}

func TestUnloadTrySucceedsOnceDevicesAreGone(t *testing.T) {
	m := newMachine(t)
	ctx := ctxT(t)
	owner := sever.NewOwner("mod", nil, sever.WithLog(m.log))
	m.driver(&device.Driver{Name: "d", IDs: []string{"x"}, Owner: owner})
	dev := m.register("x0", nil, "x")
	unregisterOK(t, dev)
	if owner.Pins() != 0 {
		t.Fatalf("unregistered device still pins its driver's owner (%d pins)", owner.Pins())
	}
	if err := owner.Unload(ctx, sever.UnloadTry); err != nil {
		t.Fatalf("UnloadTry with no bound devices: %v", err)
	}
	m.clean()
}

// supplierConsumer sets up a supplier driver publishing a provider and a
// consumer driver holding a handle on it, linked in mode.
func supplierConsumer(t *testing.T, m *machine, mode device.LinkMode, j *journal) (sup, con *device.Device, h **device.Handle[*regs]) {
	t.Helper()
	var prov *device.Provider[*regs]
	var handle *device.Handle[*regs]
	m.driver(&device.Driver{
		Name: "supplier", IDs: []string{"supplier"},
		Probe: func(ctx context.Context, d *device.Device) error {
			var err error
			prov, err = device.NewProvider(d, "regs", &regs{})
			return err
		},
		Remove: func(ctx context.Context, d *device.Device) { j.add("supplier Remove") },
	})
	m.driver(&device.Driver{
		Name: "consumer", IDs: []string{"consumer"},
		Probe: func(ctx context.Context, d *device.Device) error {
			var err error
			handle, err = prov.Open(d.Name())
			if err != nil {
				return err
			}
			_, err = d.AddResource("handle", func() {
				if err := handle.Close(); err != nil { // a first Close succeeds: the journal's check catches it
					j.add("consumer handle Close: " + err.Error())
				}
				j.add("consumer handle closed")
			})
			return err
		},
		Remove: func(ctx context.Context, d *device.Device) { j.add("consumer Remove") },
	})
	sup = m.register("sup", nil, "supplier")
	// The consumer is registered first, unbound, so the link exists
	// before it probes.
	con, err := m.core.Register(ctxT(t), device.Config{Name: "con", Bus: m.bus})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.core.AddLink(con, sup, mode); err != nil {
		t.Fatal(err)
	}
	drv := m.bus.Drivers()[1]
	if err := con.Bind(ctxT(t), drv); err != nil {
		t.Fatal(err)
	}
	return sup, con, &handle
}

func TestSupplierRemovalUnbindsManagedConsumerFirst(t *testing.T) {
	m := newMachine(t)
	var j journal
	sup, con, _ := supplierConsumer(t, m, device.LinkManaged, &j)
	if err := sup.Unregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	want := []string{"consumer Remove", "consumer handle closed", "supplier Remove"}
	if got := j.get(); !slices.Equal(got, want) {
		t.Errorf("callbacks %q, want %q: a managed consumer is unbound before its supplier's Remove", got, want)
	}
	if con.Driver() != nil {
		t.Error("managed consumer still bound after its supplier was removed")
	}
	unregisterOK(t, con)
	m.clean()
}

func TestSupplierRemovalLeavesStatelessConsumerBoundWithENODEV(t *testing.T) {
	m := newMachine(t)
	var j journal
	sup, con, h := supplierConsumer(t, m, device.LinkStateless, &j)
	if err := sup.Unregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got, want := j.get(), []string{"supplier Remove"}; !slices.Equal(got, want) {
		t.Errorf("callbacks %q, want %q: a stateless consumer is not unbound", got, want)
	}
	if con.Driver() == nil {
		t.Fatal("stateless consumer was unbound with its supplier")
	}
	err := (*h).Do(func(*regs) error { t.Error("call reached a removed supplier"); return nil })
	if !errors.Is(err, syscall.ENODEV) || !strings.Contains(err.Error(), "/devices/sup") {
		t.Errorf("consumer call after supplier removal: %v, want ENODEV naming the supplier", err)
	}
	if err := con.Unregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := j.get(); got[len(got)-1] != "consumer handle closed" {
		t.Errorf("consumer's handle on the gone supplier was not closed by its devres: %q", got)
	}
	m.clean()
}

func TestManagedConsumerProbeWaitsForSupplier(t *testing.T) {
	m := newMachine(t)
	ctx := ctxT(t)
	var j journal
	m.driver(&device.Driver{Name: "c", IDs: []string{"c"}, Probe: func(context.Context, *device.Device) error { j.add("consumer Probe"); return nil }})
	sup := m.register("sup", nil, "s") // no driver for it yet
	con, _ := m.core.Register(ctx, device.Config{Name: "con", Bus: m.bus})
	if _, err := m.core.AddLink(con, sup, device.LinkManaged); err != nil {
		t.Fatalf("setup: AddLink failed: %v", err)
	}
	err := con.Bind(ctx, m.bus.Drivers()[0])
	if !errors.Is(err, device.ErrProbeDeferred) || !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("probe with unbound managed supplier: %v, want ErrProbeDeferred", err)
	}
	m.driver(&device.Driver{Name: "s", IDs: []string{"s"}, Probe: func(context.Context, *device.Device) error { j.add("supplier Probe"); return nil }})
	if got, want := j.get(), []string{"supplier Probe", "consumer Probe"}; !slices.Equal(got, want) {
		t.Errorf("probes %q, want %q: a deferred consumer probes when its supplier binds", got, want)
	}
	if err := m.core.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v, want nil: no callback is stuck", err)
	}
	m.clean()
}

func TestLinkFromAncestorIsRefused(t *testing.T) {
	m := newMachine(t)
	p := m.register("p", nil, "")
	c := m.register("c", p, "")
	if _, err := m.core.AddLink(p, c, device.LinkManaged); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("a parent consuming its own child: %v, want EINVAL (it would deadlock removal)", err)
	}
	if err := m.core.Shutdown(ctxT(t)); err != nil {
		t.Errorf("Shutdown = %v, want nil: no callback is stuck", err)
	}
	m.clean()
}

func TestChildrenRemovedBottomUpBeforeParentRemove(t *testing.T) {
	m := newMachine(t)
	var j journal
	rm := func(ctx context.Context, d *device.Device) { j.add("Remove " + d.Name()) }
	m.driver(&device.Driver{
		Name: "hub", IDs: []string{"hub"}, Remove: rm,
		Probe: func(ctx context.Context, d *device.Device) error {
			if _, err := m.core.Register(ctx, device.Config{Name: "adapter", Parent: d, Bus: m.bus, Compatible: "adapter"}); err != nil {
				return err
			}
			_, err := m.core.Register(ctx, device.Config{Name: "gpiochip", Parent: d, Bus: m.bus, Compatible: "leaf"})
			return err
		},
	})
	m.driver(&device.Driver{
		Name: "adapter", IDs: []string{"adapter"}, Remove: rm,
		Probe: func(ctx context.Context, d *device.Device) error {
			_, err := m.core.Register(ctx, device.Config{Name: "client", Parent: d, Bus: m.bus, Compatible: "leaf"})
			return err
		},
	})
	m.driver(&device.Driver{Name: "leaf", IDs: []string{"leaf"}, Remove: rm})
	hub := m.register("hub", nil, "hub")
	if err := hub.Unregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	want := []string{"Remove gpiochip", "Remove client", "Remove adapter", "Remove hub"}
	if got := j.get(); !slices.Equal(got, want) {
		t.Errorf("removal order %q, want %q (children first, bottom-up, newest first)", got, want)
	}
	m.clean()
}

func TestProbePanicIsRecordedAsDriverFaultAndUndone(t *testing.T) {
	m := newMachine(t)
	var released atomic.Bool
	m.driver(&device.Driver{
		Name: "buggy", IDs: []string{"buggy"},
		Probe: func(ctx context.Context, d *device.Device) error {
			if _, err := d.AddResource("buf", func() { released.Store(true) }); err != nil {
				return err
			}
			var p *regs
			p.calls.Add(1) // nil dereference
			return nil
		},
	})
	dev := m.register("buggy0", nil, "buggy")
	if dev.Driver() != nil {
		t.Error("a Probe that panicked left its driver bound")
	}
	if !released.Load() {
		t.Error("a Probe that panicked did not have its resources released")
	}
	if m.log.Count(check.DriverFault) != 1 {
		t.Errorf("log has %d driver faults, want 1: %v", m.log.Count(check.DriverFault), m.log.Violations())
	}
	unregisterOK(t, dev)
}

// TestBrokenDriverLeakingAReferenceIsReported is the checker's proof: a
// driver that takes a reference to its device and never puts it is caught
// by Unregister's audit, which names the holder and the stack that took it.
func TestBrokenDriverLeakingAReferenceIsReported(t *testing.T) {
	m := newMachine(t, sever.WithTracking())
	m.driver(&device.Driver{
		Name: "leaky", IDs: []string{"leaky"},
		Probe: func(ctx context.Context, d *device.Device) error {
			leakyProbeTakesReference(d) // a timer that will never be canceled
			return nil
		},
	})
	dev := m.register("leaky0", nil, "leaky")
	err := dev.Unregister(ctxT(t))
	var he *sever.HoldersError
	if !errors.As(err, &he) || !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("Unregister with a leaked reference: %v, want a HoldersError wrapping EBUSY", err)
	}
	vs := m.log.Violations()
	if len(vs) != 1 || vs[0].Class != check.ReferenceAfterUnregister {
		t.Fatalf("log: %v, want one ReferenceAfterUnregister", vs)
	}
	v := vs[0]
	if v.Object != "/devices/leaky0" || len(v.Holders) != 1 ||
		!strings.Contains(v.Holders[0], "leaky timer") || !strings.Contains(v.Holders[0], "leakyProbeTakesReference") {
		t.Errorf("violation does not name the holder and its stack:\n%v", v)
	}
	if dev.State() != device.StateRemoved {
		t.Error("a failed audit left the device registered; removal must complete anyway")
	}
	dev.Put("leaky timer")
}

func leakyProbeTakesReference(d *device.Device) { d.Get("leaky timer") }

func TestHandleCloseIsIdempotentOrEBADF(t *testing.T) {
	m := newMachine(t)
	var prov *device.Provider[int]
	m.driver(&device.Driver{Name: "p", IDs: []string{"p"}, Probe: func(ctx context.Context, d *device.Device) (err error) {
		prov, err = device.NewProvider(d, "v", 42)
		return err
	}})
	dev := m.register("p0", nil, "p")
	h, _ := prov.Open("t")
	var got int
	if err := h.Do(func(v int) error { got = v; return nil }); err != nil || got != 42 {
		t.Fatalf("Do on a live provider: %d, %v", got, err)
	}
	unregisterOK(t, dev)
	if _, err := prov.Open("late"); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Open on a removed provider: %v, want ENODEV", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("first Close of a shell: %v, want nil", err)
	}
	if err := h.Close(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("second Close: %v, want EBADF", err)
	}
	if err := h.Do(func(int) error { return nil }); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Do after Close: %v, want EBADF", err)
	}
	m.clean()
}

func TestHandleCallIntoPanickingProviderIsDriverFault(t *testing.T) {
	m := newMachine(t)
	var prov *device.Provider[*regs]
	m.driver(&device.Driver{Name: "p", IDs: []string{"p"}, Probe: func(ctx context.Context, d *device.Device) (err error) {
		prov, err = device.NewProvider(d, "v", &regs{})
		return err
	}})
	dev := m.register("p0", nil, "p")
	h, _ := prov.Open("t")
	err := h.Do(func(*regs) error { panic("register window unmapped") })
	if !errors.Is(err, syscall.EIO) || m.log.Count(check.DriverFault) != 1 {
		t.Errorf("panicking provider call: %v and %d faults, want EIO and 1 DriverFault", err, m.log.Count(check.DriverFault))
	}
	// The access was exited: removal does not hang on it.
	if err := dev.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister after a recovered panic: %v", err)
	}
	closeOK(t, h)
}

func TestUnbindThenRebind(t *testing.T) {
	m := newMachine(t)
	ctx := ctxT(t)
	var probes atomic.Int32
	drv := m.driver(&device.Driver{Name: "r", IDs: []string{"r"}, Probe: func(context.Context, *device.Device) error { probes.Add(1); return nil }})
	dev := m.register("r0", nil, "r")
	if err := dev.Bind(ctx, drv); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("Bind of a bound device: %v, want EBUSY", err)
	}
	if err := dev.Unbind(ctx); err != nil {
		t.Errorf("Unbind = %v, want nil: no callback is stuck", err)
	}
	if err := dev.Bind(ctx, drv); err != nil || probes.Load() != 2 || dev.Driver() != drv {
		t.Errorf("rebind: %v, %d probes", err, probes.Load())
	}
	unregisterOK(t, dev)
	if err := dev.Unregister(ctx); err != nil {
		t.Errorf("second Unregister: %v, want nil", err)
	}
	if _, err := m.core.Register(ctx, device.Config{Name: "x", Parent: dev}); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Register under a removed parent: %v, want ENODEV", err)
	}
	m.clean()
}

func TestConcurrentUnregisterAndDriverUnregister(t *testing.T) {
	for range 20 {
		m := newMachine(t)
		ctx := ctxT(t)
		var removes atomic.Int32
		owner := sever.NewOwner("m", nil, sever.WithLog(m.log))
		drv := m.driver(&device.Driver{Name: "r", IDs: []string{"r"}, Owner: owner,
			Remove: func(context.Context, *device.Device) { removes.Add(1) }})
		var devs []*device.Device
		for i := range 8 {
			devs = append(devs, m.register(fmt.Sprint("r", i), nil, "r"))
		}
		var wg sync.WaitGroup
		for _, d := range devs {
			wg.Go(func() { unregisterOK(t, d) })
		}
		wg.Go(func() {
			if err := m.bus.UnregisterDriver(ctx, drv); err != nil {
				t.Errorf("UnregisterDriver = %v, want nil: no callback is stuck", err)
			}
		})
		wg.Wait()
		if removes.Load() != 8 || owner.Pins() != 0 {
			t.Fatalf("%d Removes for 8 bound devices, %d pins left; want 8 and 0", removes.Load(), owner.Pins())
		}
		m.clean()
	}
}

// Rule: provider code waiting inside a handle's Do on the Provider's
// Context is released by the unplug, which waits for no blocked wait.
func TestUnplugCancelsTheContextOfAWaitingHandleCall(t *testing.T) {
	m := newMachine(t)
	var prov *device.Provider[*regs]
	m.driver(&device.Driver{
		Name: "deaf", IDs: []string{"deaf"},
		Probe: func(ctx context.Context, d *device.Device) error {
			p, err := device.NewProvider(d, "regs", &regs{})
			prov = p
			return err
		},
	})
	dev := m.register("deaf0", nil, "deaf")
	h, err := prov.Open("consumer")
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, h)
	in := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- h.Do(func(*regs) error {
			close(in)
			<-prov.Context().Done() // a reply the unplugged device never sends
			return context.Cause(prov.Context())
		})
	}()
	<-in
	if err := dev.Unregister(ctxT(t)); err != nil {
		t.Fatalf("Unregister waited for the blocked call: %v", err)
	}
	if err := <-done; !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("the blocked call ended with %v, want ErrNoDevice", err)
	}
}
