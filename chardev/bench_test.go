package chardev_test

import (
	"context"
	"os"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
)

//go:noinline
func benchRead(c *chardev.Call, b []byte) (int, error) {
	if len(b) > 0 {
		b[0] = 'x'
	}
	return len(b), nil
}

// benchDevice registers a char device whose Read is benchRead on a machine
// with a checked owner, and returns it with its teardown.
func benchDevice(b *testing.B) (*chardev.Cdev, func()) {
	log := &check.Log{}
	c := device.NewCore("bench", log)
	owner := sever.NewOwner("bench", nil, sever.WithLog(log))
	dev, err := c.Register(context.Background(), device.Config{Name: "bench0", Owner: owner})
	if err != nil {
		b.Fatal(err)
	}
	cd, err := chardev.Register(dev, chardev.Config{Name: "bench0", Ops: chardev.Ops{Read: benchRead}})
	if err != nil {
		b.Fatal(err)
	}
	return cd, func() {
		if err := dev.Unregister(context.Background()); err != nil {
			b.Errorf("unregister: %v", err)
		}
	}
}

// BenchmarkDirectRead is the baseline: the driver's read function called
// with no lifetime protection.
func BenchmarkDirectRead(b *testing.B) {
	buf := make([]byte, 4)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := benchRead(nil, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFileRead is a char-device read round trip: one Open, then Read
// in a loop through the File (lock, active reference, owner check,
// recover, the driver's function).
func BenchmarkFileRead(b *testing.B) {
	cd, done := benchDevice(b)
	defer done()
	f, err := cd.Open(os.O_RDONLY)
	if err != nil {
		b.Fatal(err)
	}
	defer closeOK(b, f)
	buf := make([]byte, 4)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFileReadParallel reads from every P, each through its own open,
// as separate processes would.
func BenchmarkFileReadParallel(b *testing.B) {
	cd, done := benchDevice(b)
	defer done()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		f, err := cd.Open(os.O_RDONLY)
		if err != nil {
			b.Error(err)
			return
		}
		defer closeOK(b, f)
		buf := make([]byte, 4)
		for pb.Next() {
			if _, err := f.Read(buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkOpenClose is an open and close of the device (Open and Release
// callbacks absent): the per-open shell, queue, Ref and Pending.
func BenchmarkOpenClose(b *testing.B) {
	cd, done := benchDevice(b)
	defer done()
	b.ReportAllocs()
	for b.Loop() {
		f, err := cd.Open(os.O_RDONLY)
		if err != nil {
			b.Fatal(err)
		}
		closeOK(b, f)
	}
}
