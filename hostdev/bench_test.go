package hostdev_test

import (
	"fmt"
	"os"
	"testing"

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
			defer f.Close()
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
			defer f.Close()
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
