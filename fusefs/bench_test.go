package fusefs_test

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sever-dev/sever/fusefs"
	"github.com/sever-dev/sever/kernfs"
)

// benchLoop is one process doing n open/read/close cycles of a file and
// printing the nanoseconds they took, so process start-up is not counted.
const benchLoop = `
import os, sys, time
p, n = sys.argv[1], int(sys.argv[2])
t = time.perf_counter_ns()
for _ in range(n):
    fd = os.open(p, os.O_RDONLY); os.read(fd, 4096); os.close(fd)
print(time.perf_counter_ns() - t)
`

func loopNs(b *testing.B, file string, n int) float64 {
	b.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		b.Skipf("no python3: %v", err)
	}
	out, err := exec.Command(py, "-c", benchLoop, file, strconv.Itoa(n)).Output()
	if err != nil {
		b.Fatalf("python loop on %s: %v", file, err)
	}
	ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		b.Fatal(err)
	}
	return ns / float64(n)
}

// BenchmarkOpenReadClose compares a process's open/read/close of an
// attribute through the mount with the same on a tmpfs file. Each of the
// b.N cycles calls the provider's Open, Show and Release. With entries
// cached (the default) the kernel resolves sys/devices/dev0/value from its
// dentry cache; with EntryTimeout(0) every open also looks up each path
// component.
func BenchmarkOpenReadClose(b *testing.B) {
	for _, c := range []struct {
		name  string
		entry time.Duration
	}{{"entries=cached", fusefs.DefaultEntryTimeout}, {"entries=uncached", 0}} {
		b.Run(c.name, func(b *testing.B) { benchOpenReadClose(b, fusefs.EntryTimeout(c.entry)) })
	}
}

func benchOpenReadClose(b *testing.B, opts ...fusefs.Option) {
	// A plain tree, without a check.Log: the log's per-open bookkeeping
	// (a stack per Release expected) is not what is measured here.
	tr := kernfs.New()
	dir, _ := tr.AddDir(tr.Root(), kernfs.Dir{Name: "devices"})
	dir, _ = tr.AddDir(dir, kernfs.Dir{Name: "dev0"})
	if _, err := tr.AddAttr(dir, kernfs.Attr{Name: "value", Show: func(_ *kernfs.Call, buf []byte) ([]byte, error) {
		return append(buf, "1\n"...), nil
	}}); err != nil {
		b.Fatal(err)
	}
	s := mount(b, fusefs.Sources{Sys: tr}, opts...)
	shm := "/dev/shm"
	if _, err := os.Stat(shm); err != nil {
		shm = b.TempDir()
	}
	f, err := os.CreateTemp(shm, "fusefs-bench-")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.WriteString("1\n"); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = os.Remove(f.Name()) }() // a temporary file left behind harms nothing

	b.ResetTimer()
	fuse := loopNs(b, path(s, "sys/devices/dev0/value"), b.N)
	tmpfs := loopNs(b, f.Name(), b.N)
	b.StopTimer()
	b.ReportMetric(fuse, "fuse-ns/cycle")
	b.ReportMetric(tmpfs, "tmpfs-ns/cycle")
	b.ReportMetric(fuse/tmpfs, "fuse/tmpfs")
}
