package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sever-dev/sever/drvhost"
	"github.com/sever-dev/sever/sim/pc"
)

// hostWatcher polls dev/cp2112-gpiochip0 (a line requested for events)
// and, in a second open, blocks in read, both served by the driver host.
const hostWatcher = `
import errno, os, select, threading
_out = threading.Lock()
def say(*a):
    with _out: os.write(1, (" ".join(map(str, a)) + "\n").encode())  # one write: threads never interleave a line
def reader():
    fd = os.open("dev/cp2112-gpiochip0", os.O_RDWR)
    os.write(fd, b"request 6 both\n")
    say("reading")
    try:
        os.read(fd, 4096); say("reader ok")
    except OSError as e:
        say("reader", errno.errorcode[e.errno])
    os.close(fd)
fd = os.open("dev/cp2112-gpiochip0", os.O_RDWR)
os.write(fd, b"request 5 both\n")
p = select.poll(); p.register(fd, select.POLLIN)
say("polling")
ev = p.poll(20000)
say("woke", ev[0][1] if ev else 0)
say("read", os.read(fd, 4096).decode().strip())
t = threading.Thread(target=reader); t.start()
say("polling")
ev = p.poll(20000)
say("woke", ev[0][1] if ev else 0)
try:
    os.read(fd, 4096); say("read ok")
except OSError as e:
    say("read", errno.errorcode[e.errno])
t.join()
os.close(fd)
say("closed")
`

// With --hosts the CP2112 runs in a child process: a process on the mount
// polls and reads its GPIO char device through the host; kill -9 of the
// host wakes the poller with POLLERR|POLLHUP and the blocked reader with
// ENODEV within 200 ms, and the host comes back.
func TestKill9OfDriverHostWakesProcessesOnTheMount(t *testing.T) {
	mt := startMount(t, "--hosts")
	sup := mt.pc.Host(pc.CP2112Host)
	if out := mt.mustSh("cat sys/hosts/cp2112/state sys/hosts/cp2112/generation"); out != "running\n1\n" {
		t.Fatalf("sys/hosts/cp2112: %q", out)
	}
	if out := mt.mustSh("cat sys/devices/host-cp2112/cp2112/i2c-*/*-0048/temp1_input"); out != "25000\n" {
		t.Errorf("the host's sensor through the mount: %q", out)
	}
	py := startProc(t, mt.dir, "python3", "-c", hostWatcher)
	if l := py.line(10 * time.Second); l != "polling" {
		t.Fatal(l)
	}
	py.quiet("poll before any edge", 200*time.Millisecond)
	lineSet(t, sup, 5, 1)
	if l := py.line(5 * time.Second); l != fmt.Sprintf("woke %d", pollIn) {
		t.Errorf("poll after an edge in the host: %q, want POLLIN", l)
	}
	if l := py.line(5 * time.Second); l != "read 5 rising 1" {
		t.Errorf("event through the host: %q", l)
	}
	// The poller and the reader thread, in either order.
	for range 2 {
		if l := py.line(5 * time.Second); l != "polling" && l != "reading" {
			t.Fatalf("%q, want polling and reading", l)
		}
	}
	py.quiet("poll and read before the kill", 200*time.Millisecond)
	pid, err := sup.Kill()
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	got := map[string]bool{}
	for range 3 {
		l := py.line(5 * time.Second)
		got[l] = true
		if d := time.Since(killed); d > 200*time.Millisecond {
			t.Errorf("%q came %v after kill -9 of host %d, want within 200ms", l, d, pid)
		}
	}
	for _, want := range []string{fmt.Sprintf("woke %d", pollErr|pollHup), "read ENODEV", "reader ENODEV"} {
		if !got[want] {
			t.Errorf("after kill -9: lines %v, want %q", got, want)
		}
	}
	if l := py.line(5 * time.Second); l != "closed" {
		t.Errorf("close: %q", l)
	}
	if err := py.wait(10 * time.Second); err != nil {
		t.Errorf("python: %v: %s", err, py.errb.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := sup.WaitRunning(ctx, 1); err != nil {
		t.Fatalf("host not back: %v", err)
	}
	if out := mt.mustSh("cat sys/hosts/cp2112/state sys/hosts/cp2112/generation sys/hosts/cp2112/restarts"); out != "running\n2\n1\n" {
		t.Errorf("sys/hosts/cp2112 after the restart: %q", out)
	}
	mt.mustSh("echo 1 > sys/hosts/cp2112/restart")
	if out := mt.mustSh("cat sys/hosts/cp2112/generation"); out != "3\n" {
		t.Errorf("generation after echo 1 > restart: %q", out)
	}
	mt.stopClean()
}

func lineSet(t *testing.T, sup *drvhost.Supervisor, line, v byte) {
	t.Helper()
	p, err := sup.Provider("cp2112")
	if err != nil {
		t.Fatal(err)
	}
	h, err := p.Open("test")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if err := h.Do(func(s drvhost.Service) error {
		_, err := s.Call(context.Background(), "line.set", []byte{line, v})
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
