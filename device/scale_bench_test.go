package device_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
)

// The scale benchmarks of issue 13 target 3. Each reports ns per child (or
// handle): the figure that must stay flat as n grows for the operation to
// be linear. They use only the package's exported API, so the same file
// measures an older tree for comparison.

// cpuNow returns the process's CPU time, user and system, every thread
// (the collector's too). Unlike wall time it is not inflated by other
// processes on a shared machine, so it is reported beside it.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru) // RUSAGE_SELF into a valid struct cannot fail (EINVAL, EFAULT only)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var scaleSizes = []int{100, 1_000, 10_000, 100_000}

// usbHub registers a hub (the root device of a "usb" bus, bound to a hub
// driver) with n child devices on the same bus, as a USB hub with n
// interfaces enumerated under it.
func usbHub(b *testing.B, n int) (*device.Core, *device.Device) {
	b.Helper()
	log := &check.Log{}
	c := device.NewCore("scale", log)
	bus, err := c.NewBus(device.BusConfig{Name: "usb"})
	if err != nil {
		b.Fatal(err)
	}
	if err := bus.RegisterDriver(context.Background(), &device.Driver{Name: "hub", IDs: []string{"hub"}}); err != nil {
		b.Fatal(err)
	}
	hub, err := c.Register(context.Background(), device.Config{Name: "usb1", Bus: bus, Compatible: "hub"})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := c.Register(context.Background(), device.Config{Name: "1-" + strconv.Itoa(i), Parent: hub, Bus: bus, Compatible: "iface"}); err != nil {
			b.Fatal(err)
		}
	}
	return c, hub
}

// BenchmarkScaleUnplug unplugs a hub with n children: one Unregister that
// removes every child, newest first, through the removal path.
func BenchmarkScaleUnplug(b *testing.B) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("children=%d", n), func(b *testing.B) {
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				_, hub := usbHub(b, n)
				runtime.GC()
				b.StartTimer()
				c0 := cpuNow()
				if err := hub.Unregister(context.Background()); err != nil {
					b.Fatal(err)
				}
				cpu += cpuNow() - c0
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/child")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/child")
		})
	}
}

// BenchmarkScaleRegister registers n children under one hub.
func BenchmarkScaleRegister(b *testing.B) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("children=%d", n), func(b *testing.B) {
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				_, hub := usbHub(b, 0)
				bus := hub.Bus()
				c := hub.Core()
				runtime.GC()
				b.StartTimer()
				c0 := cpuNow()
				for j := range n {
					if _, err := c.Register(context.Background(), device.Config{Name: "1-" + strconv.Itoa(j), Parent: hub, Bus: bus, Compatible: "iface"}); err != nil {
						b.Fatal(err)
					}
				}
				cpu += cpuNow() - c0
				b.StopTimer()
				if err := hub.Unregister(context.Background()); err != nil {
					b.Fatalf("Unregister of the hub = %v, want nil: no callback is stuck", err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/child")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/child")
		})
	}
}

// BenchmarkScaleUnplugHandles unplugs a device whose provider has n open
// consumer handles: each is revoked (its consumer sees ErrNoDevice) and
// none is waited for.
func BenchmarkScaleUnplugHandles(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("handles=%d", n), func(b *testing.B) {
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dev, hs := providerWithHandles(b, n)
				runtime.GC()
				b.StartTimer()
				c0 := cpuNow()
				if err := dev.Unregister(context.Background()); err != nil {
					b.Fatal(err)
				}
				cpu += cpuNow() - c0
				b.StopTimer()
				for _, h := range hs {
					if err := h.Close(); err != nil {
						b.Fatalf("Close of a handle = %v, want nil: a first Close succeeds", err)
					}
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/handle")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/handle")
		})
	}
}

func providerWithHandles(b *testing.B, n int) (*device.Device, []*device.Handle[*counter]) {
	b.Helper()
	log := &check.Log{}
	c := device.NewCore("scale", log)
	bus, _ := c.NewBus(device.BusConfig{Name: "platform"})
	owner := sever.NewOwner("scale", nil, sever.WithLog(log))
	var prov *device.Provider[*counter]
	err := bus.RegisterDriver(context.Background(), &device.Driver{Name: "p", IDs: []string{"p"}, Owner: owner,
		Probe: func(ctx context.Context, d *device.Device) (err error) {
			prov, err = device.NewProvider(d, "counter", &counter{})
			d.SetDriverData(prov)
			return err
		}})
	if err != nil {
		b.Fatal(err)
	}
	dev, err := c.Register(context.Background(), device.Config{Name: "p0", Bus: bus, Compatible: "p"})
	if err != nil || prov == nil {
		b.Fatal("provider not bound: ", err)
	}
	hs := make([]*device.Handle[*counter], n)
	for i := range hs {
		if hs[i], err = prov.Open("c"); err != nil {
			b.Fatal(err)
		}
	}
	return dev, hs
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkScaleMemIdleDevice reports the heap kept per registered, idle
// child device (its tree node, its directory and attributes in kernfs, its
// bus entry), from runtime.MemStats.
func BenchmarkScaleMemIdleDevice(b *testing.B) {
	const n = 10_000
	for i := 0; i < b.N; i++ {
		before := heapInUse()
		c, hub := usbHub(b, n)
		after := heapInUse()
		b.ReportMetric(float64(int64(after)-int64(before))/n, "B/device")
		if err := hub.Unregister(context.Background()); err != nil {
			b.Fatalf("Unregister of the hub = %v, want nil: no callback is stuck", err)
		}
		runtime.KeepAlive(c)
	}
}

// BenchmarkScaleMemOpenHandle reports the heap kept per open consumer
// handle (a shell of the provider's scope).
func BenchmarkScaleMemOpenHandle(b *testing.B) {
	const n = 10_000
	for i := 0; i < b.N; i++ {
		dev, _ := providerWithHandles(b, 0)
		prov := dev.DriverData().(*device.Provider[*counter])
		hs := make([]*device.Handle[*counter], n) // not counted
		before := heapInUse()
		for j := range hs {
			var err error
			if hs[j], err = prov.Open("c"); err != nil {
				b.Fatal(err)
			}
		}
		after := heapInUse()
		b.ReportMetric(float64(int64(after)-int64(before))/n, "B/handle")
		if err := dev.Unregister(context.Background()); err != nil {
			b.Fatalf("Unregister = %v, want nil: no callback is stuck", err)
		}
		for _, h := range hs {
			if err := h.Close(); err != nil {
				b.Fatalf("Close of a handle = %v, want nil: a first Close succeeds", err)
			}
		}
	}
}

// BenchmarkScaleUndoDrop adds n managed resources to a device and then
// releases each early (Resource.Release), oldest first, as a driver
// freeing buffers one by one does: each release takes its entry off the
// device's undo list, which must cost the same whatever the list's length.
func BenchmarkScaleUndoDrop(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				c := device.NewCore("scale", &check.Log{})
				dev, err := c.Register(context.Background(), device.Config{Name: "d"})
				if err != nil {
					b.Fatal(err)
				}
				rs := make([]*device.Resource, n)
				runtime.GC()
				b.StartTimer()
				c0 := cpuNow()
				for j := range rs {
					if rs[j], err = dev.AddResource("r", func() {}); err != nil {
						b.Fatal(err)
					}
				}
				for _, r := range rs {
					r.Release()
				}
				cpu += cpuNow() - c0
				b.StopTimer()
				if err := dev.Unregister(context.Background()); err != nil {
					b.Fatalf("Unregister = %v, want nil: no callback is stuck", err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/entry")
		})
	}
}
