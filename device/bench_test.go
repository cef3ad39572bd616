package device_test

import (
	"context"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
)

type counter struct{ n int64 }

//go:noinline
func (c *counter) read() error { c.n++; return nil }

// benchProvider binds a driver publishing a *counter and returns a handle.
func benchProvider(b *testing.B) (*device.Handle[*counter], func()) {
	log := &check.Log{}
	c := device.NewCore("bench", log)
	bus, _ := c.NewBus(device.BusConfig{Name: "platform"})
	owner := sever.NewOwner("bench", nil, sever.WithLog(log))
	var prov *device.Provider[*counter]
	if err := bus.RegisterDriver(context.Background(), &device.Driver{Name: "b", IDs: []string{"b"}, Owner: owner,
		Probe: func(ctx context.Context, d *device.Device) (err error) {
			prov, err = device.NewProvider(d, "counter", &counter{})
			return err
		}}); err != nil {
		b.Fatalf("setup: RegisterDriver failed: %v", err)
	}
	dev, _ := c.Register(context.Background(), device.Config{Name: "b0", Bus: bus, Compatible: "b"})
	h, err := prov.Open("bench")
	if err != nil {
		b.Fatal(err)
	}
	return h, func() { closeOK(b, h); unregisterOK(b, dev) }
}

// BenchmarkDirectCall is the baseline: a consumer calling the provider's
// method with no lifetime protection.
func BenchmarkDirectCall(b *testing.B) {
	c := &counter{}
	fn := func(c *counter) error { return c.read() }
	for b.Loop() {
		if err := fn(c); err != nil {
			b.Fatalf("direct call = %v, want nil: read never fails", err)
		}
	}
}

// BenchmarkHandleDo is the same call through a consumer handle: enter the
// provider's active reference, check the owner, run, exit.
func BenchmarkHandleDo(b *testing.B) {
	h, done := benchProvider(b)
	defer done()
	fn := func(c *counter) error { return c.read() }
	for b.Loop() {
		if err := h.Do(fn); err != nil {
			b.Fatalf("Do = %v, want nil: the provider is live", err)
		}
	}
}

// BenchmarkHandleDoParallel has every P call through its own handle on the
// same provider: the active reference's per-CPU shards keep them apart.
func BenchmarkHandleDoParallel(b *testing.B) {
	h, done := benchProvider(b)
	defer done()
	b.RunParallel(func(pb *testing.PB) {
		fn := func(c *counter) error { return nil }
		for pb.Next() {
			if err := h.Do(fn); err != nil {
				b.Errorf("Do = %v, want nil: the provider is live", err)
				return
			}
		}
	})
}
