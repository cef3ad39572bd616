package fusefs_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/sever-dev/sever/fusefs"
	"github.com/sever-dev/sever/kernfs"
)

// The benchmarks here measure sever's mount against a minimal C libfuse3
// low-level server (testdata/llserver.c: multi-threaded, cloned
// descriptors, the same file semantics) on the same machine, in the same
// run, in interleaved rounds: each round measures both, in alternating
// order, and the figures reported are medians over the rounds — of each
// side and of the per-round ratio — with the ratio's spread (min..max in
// the log). The machine may be shared, so only ratios from one run mean
// anything. They need gcc and libfuse3's headers (Debian: apt-get install
// libfuse3-dev fuse3 pkg-config) and skip without them.
//
//	go test -run '^$' -bench VsLibfuse -benchtime 1x ./fusefs/
//
// SEVER_BENCH_ROUNDS sets the rounds (default 15). The open/read/close
// benchmarks also report the CPU time each server spent per cycle (from
// /proc/PID/task/*/schedstat), which a loaded machine disturbs less than
// wall time.

// tools are the benchmark's C programs, built once per benchmark.
type tools struct{ loop, server string }

func buildTools(b *testing.B) tools {
	b.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		b.Skip("no gcc: install gcc to build the libfuse baseline")
	}
	flags, err := exec.Command("pkg-config", "--cflags", "--libs", "fuse3").Output()
	if err != nil {
		b.Skip("no libfuse3 headers: install libfuse3-dev and pkg-config (apt-get install -y libfuse3-dev fuse3 pkg-config)")
	}
	dir := b.TempDir()
	t := tools{loop: filepath.Join(dir, "loop"), server: filepath.Join(dir, "llserver")}
	for _, c := range [][]string{
		{"-O2", "-o", t.loop, "testdata/loop.c"},
		append([]string{"-O2", "-o", t.server, "testdata/llserver.c", "-lpthread"}, strings.Fields(string(flags))...),
	} {
		if out, err := exec.Command("gcc", c...).CombinedOutput(); err != nil {
			b.Fatalf("gcc %v: %v\n%s", c, err, out)
		}
	}
	return t
}

// libfuse is the running C server.
type libfuse struct {
	dir   string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startLibfuse(b *testing.B, t tools) *libfuse {
	b.Helper()
	l := &libfuse{dir: b.TempDir()}
	l.cmd = exec.Command(t.server, l.dir)
	l.cmd.Stderr = os.Stderr
	var err error
	if l.stdin, err = l.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := l.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	l.out = bufio.NewReader(stdout)
	if err := l.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = l.stdin.Close() // the server exits its loop and unmounts
		done := make(chan struct{})
		go func() { _ = l.cmd.Wait(); close(done) }() // its exit status is not measured
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			// Best effort after a hang: the wait below is what matters.
			_ = syscall.Unmount(l.dir, syscall.MNT_FORCE|syscall.MNT_DETACH)
			_ = l.cmd.Process.Kill()
			<-done
		}
	})
	if line, err := l.out.ReadString('\n'); err != nil || line != "mounted\n" {
		b.Skipf("the libfuse server did not mount (%q, %v)", line, err)
	}
	return l
}

// command sends the server a command and returns the monotonic time it
// woke the poller at.
func (l *libfuse) command(b *testing.B, c string) int64 {
	b.Helper()
	if _, err := io.WriteString(l.stdin, c+"\n"); err != nil {
		b.Fatal(err)
	}
	line, err := l.out.ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	return v
}

// monotonic is CLOCK_MONOTONIC in nanoseconds, the clock the C programs
// print.
func monotonic() int64 {
	var ts syscall.Timespec // CLOCK_MONOTONIC always exists: the call cannot fail
	_, _, _ = syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

// severSide is the mount under test: /value as llserver's, and a
// directory u/ for the unplug benchmark's files.
type severSide struct {
	s     *fusefs.Server
	tr    *kernfs.Tree
	value *kernfs.Node
	u     *kernfs.Node
}

func startSever(b *testing.B) *severSide {
	b.Helper()
	tr := kernfs.New()
	show := func(_ *kernfs.Call, buf []byte) ([]byte, error) { return append(buf, "1\n"...), nil }
	value, err := tr.AddAttr(tr.Root(), kernfs.Attr{Name: "value", Mode: 0o444, Show: show})
	if err != nil {
		b.Fatal(err)
	}
	u, _ := tr.AddDir(tr.Root(), kernfs.Dir{Name: "u"})
	return &severSide{s: mount(b, fusefs.Sources{Sys: tr}), tr: tr, value: value, u: u}
}

// cpuNs is the CPU time all threads of process pid have run, in ns.
func cpuNs(pid int) int64 {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	var sum int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if v, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64); err == nil {
			sum += v
		}
	}
	return sum
}

func rounds() int {
	if n, err := strconv.Atoi(os.Getenv("SEVER_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 15
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// interleave runs measure(sever) and measure(libfuse) in alternating
// order for each round and reports the medians and the ratio.
func interleave(b *testing.B, unit string, sev, lib func() float64) {
	b.Helper()
	var ss, ls, rs []float64
	for i := range rounds() {
		var s, l float64
		if i%2 == 0 {
			s, l = sev(), lib()
		} else {
			l, s = lib(), sev()
		}
		ss, ls, rs = append(ss, s), append(ls, l), append(rs, s/l)
	}
	b.ReportMetric(median(ss), "sever-"+unit)
	b.ReportMetric(median(ls), "libfuse-"+unit)
	b.ReportMetric(median(rs), "sever/libfuse")
	b.Logf("%d rounds; sever %s %.1f (%.1f..%.1f), libfuse %.1f (%.1f..%.1f), ratio %.2f (%.2f..%.2f)", len(rs), unit,
		median(ss), slices.Min(ss), slices.Max(ss), median(ls), slices.Min(ls), slices.Max(ls), median(rs), slices.Min(rs), slices.Max(rs))
}

// BenchmarkVsLibfuse compares, per cycle or event: a C loop and a Python
// loop of open/read/close, a poller's wake-up on notify (from the
// server's call to its notification until the poller returns from poll,
// through the kernel's re-poll), and the same for an unplug (sever:
// kernfs Remove; libfuse: the file turned POLLERR|POLLHUP and notified).
func BenchmarkVsLibfuse(b *testing.B) {
	t := buildTools(b)
	sev := startSever(b)
	lib := startLibfuse(b, t)
	sevValue, libValue := path(sev.s, "sys/value"), filepath.Join(lib.dir, "value")
	const cycles = 1000

	b.Run("open-read-close-C", func(b *testing.B) {
		var sevCPU, libCPU []float64
		orc := func(p string, pid int, cpu *[]float64) float64 {
			c0 := cpuNs(pid)
			out, err := exec.Command(t.loop, "orc", p, strconv.Itoa(cycles)).Output()
			if err != nil {
				b.Fatalf("loop orc %s: %v", p, err)
			}
			*cpu = append(*cpu, float64(cpuNs(pid)-c0)/cycles/1e3)
			v, _ := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			return v / 1e3
		}
		interleave(b, "µs/cycle", func() float64 { return orc(sevValue, os.Getpid(), &sevCPU) }, func() float64 { return orc(libValue, lib.cmd.Process.Pid, &libCPU) })
		b.ReportMetric(median(sevCPU), "sever-cpu-µs/cycle")
		b.ReportMetric(median(libCPU), "libfuse-cpu-µs/cycle")
	})
	b.Run("open-read-close-Python", func(b *testing.B) {
		interleave(b, "µs/cycle",
			func() float64 { return loopNs(b, sevValue, cycles) / 1e3 },
			func() float64 { return loopNs(b, libValue, cycles) / 1e3 })
	})
	// cat reads each file with a 128 KiB buffer it maps afresh per file,
	// until a read returns 0: with direct I/O the kernel pins that whole
	// buffer for each READ, faulting its pages in. BenchmarkFindCat's
	// per-file cost is this, on either server.
	b.Run("cat", func(b *testing.B) {
		catNs := func(p string) float64 {
			args := make([]string, cycles)
			for i := range args {
				args[i] = p
			}
			t0 := time.Now()
			out, err := exec.Command("cat", args...).Output()
			if err != nil || len(out) != 2*cycles {
				b.Fatalf("cat %s ×%d: %d bytes, %v", p, cycles, len(out), err)
			}
			return float64(time.Since(t0).Nanoseconds()) / cycles / 1e3
		}
		interleave(b, "µs/file", func() float64 { return catNs(sevValue) }, func() float64 { return catNs(libValue) })
	})

	const events = 40
	// poller runs the C poller; wake(path) makes it open, arm and poll
	// path, calls fire once it sleeps, and returns the latency from
	// fire's timestamp to the poller's wake-up, in µs.
	type poller struct {
		in  io.WriteCloser
		out *bufio.Reader
	}
	startPoller := func(b *testing.B) *poller {
		cmd := exec.Command(t.loop, "poll")
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = in.Close(); _ = cmd.Wait() }) // the poller exits at EOF; its end is not measured
		return &poller{in, bufio.NewReader(out)}
	}
	wake := func(b *testing.B, p *poller, file string, fire func() int64) (float64, int) {
		b.Helper()
		if _, err := fmt.Fprintln(p.in, file); err != nil {
			b.Fatal(err)
		}
		if l, err := p.out.ReadString('\n'); err != nil || l != "armed\n" {
			b.Fatalf("poller: %q, %v", l, err)
		}
		time.Sleep(2 * time.Millisecond) // into poll(2), and the kernel's POLL answered
		t0 := fire()
		l, err := p.out.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		f := strings.Fields(l)
		t1, _ := strconv.ParseInt(f[0], 10, 64)
		rev, _ := strconv.Atoi(f[2])
		return float64(t1-t0) / 1e3, rev
	}
	b.Run("poll-wakeup-on-notify", func(b *testing.B) {
		p := startPoller(b)
		med := func(file string, fire func() int64, want int) float64 {
			var v []float64
			for range events {
				d, rev := wake(b, p, file, fire)
				if rev != want {
					b.Fatalf("poll on %s woke with revents %#x, want %#x", file, rev, want)
				}
				v = append(v, d)
			}
			return median(v)
		}
		interleave(b, "µs/wakeup",
			func() float64 {
				return med(sevValue, func() int64 { t := monotonic(); sev.tr.Notify(sev.value); return t }, 0xa)
			},
			func() float64 { return med(libValue, func() int64 { return lib.command(b, "n") }, 0xa) })
	})
	b.Run("unplug-to-POLLERR", func(b *testing.B) {
		p := startPoller(b)
		next := 0
		show := func(_ *kernfs.Call, buf []byte) ([]byte, error) { return append(buf, "1\n"...), nil }
		interleave(b, "µs/unplug",
			func() float64 {
				var v []float64
				for range events {
					next++
					name := "f" + strconv.Itoa(next)
					n, err := sev.tr.AddAttr(sev.u, kernfs.Attr{Name: name, Mode: 0o444, Show: show})
					if err != nil {
						b.Fatal(err)
					}
					d, rev := wake(b, p, path(sev.s, "sys/u/"+name), func() int64 {
						t := monotonic()
						if err := sev.tr.Remove(b.Context(), n); err != nil {
							b.Fatal(err)
						}
						return t
					})
					if rev&0x18 != 0x18 {
						b.Fatalf("unplug woke the poller with revents %#x, want POLLERR|POLLHUP", rev)
					}
					v = append(v, d)
				}
				return median(v)
			},
			func() float64 {
				var v []float64
				for range events {
					d, rev := wake(b, p, libValue, func() int64 { return lib.command(b, "u") })
					if rev&0x18 != 0x18 {
						b.Fatalf("libfuse unplug woke the poller with revents %#x", rev)
					}
					lib.command(b, "r")
					v = append(v, d)
				}
				return median(v)
			})
	})
}
