package hostdev_test

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/sever-dev/sever/hostdev"
)

// BenchmarkRead reads /dev/zero, a character device that always has data,
// through a hostdev handle and through a plain os.File, so that the
// difference is the handle's cost: the active reference entered and left
// around each read and the error classification.
func BenchmarkRead(b *testing.B) {
	for _, size := range []int{64, 4096} {
		b.Run(fmt.Sprintf("handle/%d", size), func(b *testing.B) {
			f, err := hostdev.Open("/dev/zero", os.O_RDONLY)
			if err != nil {
				b.Skipf("no /dev/zero: %v", err)
			}
			defer func() { _ = f.Close() }() // /dev/zero, only read
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := f.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("osfile/%d", size), func(b *testing.B) {
			f, err := os.Open("/dev/zero")
			if err != nil {
				b.Skipf("no /dev/zero: %v", err)
			}
			defer func() { _ = f.Close() }() // /dev/zero, only read
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := f.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadInterleaved times the same two reads as BenchmarkRead in
// alternating batches of 1,000 — handle, os.File, handle, … — 1 ms or so
// apart, and reports the median of the per-pair ratios with the medians of
// each: on a shared machine whose load swings from one second to the next,
// only readings taken this close together compare. b.N is the number of
// pairs.
func BenchmarkReadInterleaved(b *testing.B) {
	const batch = 1000
	h, err := hostdev.Open("/dev/zero", os.O_RDONLY)
	if err != nil {
		b.Skipf("no /dev/zero: %v", err)
	}
	defer func() { _ = h.Close() }() // as o
	o, err := os.Open("/dev/zero")
	if err != nil {
		b.Skipf("no /dev/zero: %v", err)
	}
	defer func() { _ = o.Close() }() // /dev/zero, only read
	buf := make([]byte, 64)
	var hs, os_, ratios []float64
	for b.Loop() {
		t0 := time.Now()
		for range batch {
			if _, err := h.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		for range batch {
			if _, err := o.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
		t2 := time.Now()
		hn, on := float64(t1.Sub(t0))/batch, float64(t2.Sub(t1))/batch
		hs, os_, ratios = append(hs, hn), append(os_, on), append(ratios, hn/on)
	}
	b.ReportMetric(median(hs), "handle-ns/read")
	b.ReportMetric(median(os_), "osfile-ns/read")
	b.ReportMetric(median(ratios), "ratio")
	b.ReportMetric(0, "ns/op")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
