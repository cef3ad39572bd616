package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever/fuse"
	"github.com/sever-dev/sever/fusefs"
	"github.com/sever-dev/sever/sim/pc"
)

// Every test here mounts a real FUSE file system with `sever mount` run in
// this process (serveMount, stopped by cancelling its context, as a signal
// would) or as a built binary, and drives it only with other processes:
// sh, cat, bash, python3. The serving process never touches its own mount.

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mounted is a `sever mount` running in this process.
type mounted struct {
	t      testing.TB
	dir    string
	srv    *fusefs.Server
	pc     *pc.PC
	cancel context.CancelFunc
	done   chan int
	stdout *syncBuffer
	stderr *syncBuffer
	code   int
	ended  bool
}

func skipWithoutFUSE(t testing.TB) {
	t.Helper()
	if err := fuse.Available(); err != nil {
		t.Skip(err)
	}
}

func notPermitted(msg string) bool {
	msg = strings.ToLower(msg)
	return strings.Contains(msg, "permission denied") || strings.Contains(msg, "not permitted")
}

// startMount runs `sever mount args... DIR` on a fresh directory and
// returns once it serves. The test's end stops it if the test did not.
func startMount(t testing.TB, args ...string) *mounted {
	t.Helper()
	skipWithoutFUSE(t)
	ctx, cancel := context.WithCancel(context.Background())
	mt := &mounted{t: t, dir: filepath.Join(t.TempDir(), "mnt"), cancel: cancel, done: make(chan int, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	ready := make(chan struct{})
	go func() {
		mt.done <- serveMount(ctx, append(args, mt.dir), mt.stdout, mt.stderr, func(s *fusefs.Server, p *pc.PC) {
			mt.srv, mt.pc = s, p
			close(ready)
		})
	}()
	select {
	case <-ready:
	case code := <-mt.done:
		cancel()
		if notPermitted(mt.stderr.String()) {
			t.Skipf("mounting FUSE is not permitted here: %s", mt.stderr.String())
		}
		t.Fatalf("sever mount exited %d before serving:\n%s%s", code, mt.stdout.String(), mt.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("sever mount did not start serving within 30s")
	}
	t.Cleanup(func() { mt.stop() })
	return mt
}

// stop is SIGINT: it cancels the command and returns its exit code.
func (mt *mounted) stop() int {
	mt.t.Helper()
	if mt.ended {
		return mt.code
	}
	mt.ended = true
	mt.cancel()
	select {
	case mt.code = <-mt.done:
	case <-time.After(60 * time.Second):
		mt.t.Fatalf("sever mount did not return within 60s of its stop:\n%s%s", mt.stdout.String(), mt.stderr.String())
	}
	return mt.code
}

// stopClean stops the command and fails the test unless it unmounted
// without forcing and the machine quiesced clean.
func (mt *mounted) stopClean() {
	mt.t.Helper()
	code := mt.stop()
	out, errs := mt.stdout.String(), mt.stderr.String()
	if code != 0 || !strings.Contains(out, "quiesced clean") {
		mt.t.Errorf("sever mount exited %d; want 0 and a clean machine:\n%s%s", code, out, errs)
	}
	if strings.Contains(errs, "busy") {
		mt.t.Errorf("the unmount had to be forced (a file was still open or a request stuck):\n%s", errs)
	}
	if mounted, _ := isMountPoint(mt.dir); mounted {
		mt.t.Errorf("%s is still mounted after sever mount returned", mt.dir)
	}
}

func (mt *mounted) path(rel string) string { return filepath.Join(mt.dir, rel) }

// sh runs a bash command in the mount's directory and returns its
// combined output and error. (bash, not sh: dash's echo reports every
// failed write as "I/O error", whatever the errno.)
func (mt *mounted) sh(script string) (string, error) {
	mt.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = mt.dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		mt.t.Fatalf("bash -c %q did not finish within 20s: %s", script, out)
	}
	return string(out), err
}

// mustSh runs script and fails the test if it fails.
func (mt *mounted) mustSh(script string) string {
	mt.t.Helper()
	out, err := mt.sh(script)
	if err != nil {
		mt.t.Fatalf("bash -c %q: %v: %s", script, err, out)
	}
	return out
}

// proc is a process whose output the test reads line by line.
type proc struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	errb  *syncBuffer
}

func startProc(t testing.TB, dir, name string, args ...string) *proc {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("no %s: %v", name, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	p := &proc{t: t, cmd: cmd, lines: make(chan string, 64), errb: &syncBuffer{}}
	cmd.Stderr = p.errb
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(p.kill)
	return p
}

func (p *proc) kill() {
	// Ending it either way: one that is gone already is as good.
	_ = p.stdin.Close()
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait() // "signal: killed", expected
	for range p.lines {
	}
}

// line waits for the process's next line of output.
func (p *proc) line(within time.Duration) string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("%s exited: %s", p.cmd.Path, p.errb.String())
		}
		return l
	case <-time.After(within):
		p.t.Fatalf("%s said nothing within %v; stderr: %s", p.cmd.Path, within, p.errb.String())
	}
	return ""
}

// quiet asserts the process says nothing for d.
func (p *proc) quiet(what string, d time.Duration) {
	p.t.Helper()
	select {
	case l := <-p.lines:
		p.t.Fatalf("%s: the process said %q; want it still blocked", what, l)
	case <-time.After(d):
	}
}

// wait waits for the process to exit and returns its error.
func (p *proc) wait(within time.Duration) error {
	p.t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		p.t.Fatalf("%s did not exit within %v: a request is stuck? stderr: %s", p.cmd.Path, within, p.errb.String())
	}
	return nil
}

const (
	pollIn  = 0x01
	pollErr = 0x08
	pollHup = 0x10
)

// gpioWatcher is gpiomon in Python over the text protocol: it requests a
// line for both edges on dev/gpiochip0 and reports what each poll and read
// returns.
const gpioWatcher = `
import errno, os, select, sys, threading
_out = threading.Lock()
def say(*a):
    with _out: os.write(1, (" ".join(map(str, a)) + "\n").encode())  # one write: threads never interleave a line
fd = os.open("dev/gpiochip0", os.O_RDWR)
os.write(fd, b"request 5 both\n")
p = select.poll(); p.register(fd, select.POLLIN)
say("idle", p.poll(300))            # nothing yet: poll times out
say("polling")
ev = p.poll(20000)
say("woke", ev[0][1] if ev else 0)
say("read", os.read(fd, 4096).decode().strip())
say("polling")
ev = p.poll(20000)
say("woke", ev[0][1] if ev else 0)
try:
    os.read(fd, 4096); say("read ok")
except OSError as e:
    say("read", errno.errorcode[e.errno])
try:
    os.open("dev/gpiochip0", os.O_RDWR); say("open ok")
except OSError as e:
    say("open", errno.errorcode[e.errno])
os.close(fd)
say("closed")
`

// A Python process blocked in poll on dev/gpiochip0, with a line requested
// through the text protocol, wakes with POLLIN on an edge driven from the
// shell, and with POLLERR|POLLHUP when the board is disconnected from the
// shell; its read then fails with ENODEV and the name is gone.
func TestPollerOnGPIOEventsWakesWithErrHupOnDisconnect(t *testing.T) {
	mt := startMount(t)
	py := startProc(t, mt.dir, "python3", "-c", gpioWatcher)
	if l := py.line(10 * time.Second); l != "idle []" {
		t.Fatalf("first poll: %q, want a timeout with nothing ready", l)
	}
	if l := py.line(5 * time.Second); l != "polling" {
		t.Fatal(l)
	}
	py.quiet("poll before any edge", 300*time.Millisecond)
	mt.mustSh("echo 1 > sys/bus/usb/ports/1/sim/line5")
	if l := py.line(5 * time.Second); l != fmt.Sprintf("woke %d", pollIn) {
		t.Errorf("poll after an edge: %q, want POLLIN", l)
	}
	if l := py.line(5 * time.Second); l != "read 5 rising 1" {
		t.Errorf("event: %q, want \"read 5 rising 1\"", l)
	}
	if l := py.line(5 * time.Second); l != "polling" {
		t.Fatal(l)
	}
	py.quiet("poll before the disconnect", 300*time.Millisecond)
	mt.mustSh("echo 1 > sys/bus/usb/ports/1/disconnect")
	if l := py.line(5 * time.Second); l != fmt.Sprintf("woke %d", pollErr|pollHup) {
		t.Errorf("poll across the disconnect: %q, want POLLERR|POLLHUP (%d)", l, pollErr|pollHup)
	}
	if l := py.line(5 * time.Second); l != "read ENODEV" {
		t.Errorf("read after the disconnect: %q, want ENODEV", l)
	}
	if l := py.line(5 * time.Second); l != "open ENOENT" {
		t.Errorf("open of dev/gpiochip0 after the disconnect: %q, want ENOENT", l)
	}
	if l := py.line(5 * time.Second); l != "closed" {
		t.Errorf("close: %q", l)
	}
	if err := py.wait(10 * time.Second); err != nil {
		t.Errorf("python: %v: %s", err, py.errb.String())
	}
	mt.stopClean()
}

// A shell holding an attribute of the CP2112's sensor open gets ENODEV
// from cat on that descriptor after the unplug; cat by path gets ENOENT.
func TestCatOfUnpluggedBoardsAttributeIsENODEVHeldAndENOENTByPath(t *testing.T) {
	mt := startMount(t)
	const script = `
set -- sys/devices/usb1/1-1/i2c-*/*-0048/temp1_input
attr=$1
exec 3< "$attr"
echo "opened $attr"
cat "$attr"
read go
cat <&3; echo "held rc=$?"
cat "$attr"; echo "path rc=$?"
exec 3<&-
`
	sh := startProc(t, mt.dir, "bash", "-c", script)
	if l := sh.line(10 * time.Second); !strings.HasPrefix(l, "opened sys/devices/usb1/1-1/i2c-") {
		t.Fatalf("%q; want the sensor's attribute opened", l)
	}
	if l := sh.line(5 * time.Second); l != "25000" {
		t.Errorf("temp1_input before the unplug: %q, want 25000", l)
	}
	mt.mustSh("echo 1 > sys/bus/usb/ports/1/disconnect")
	if _, err := io.WriteString(sh.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	if l := sh.line(5 * time.Second); l != "held rc=1" {
		t.Errorf("cat of the held descriptor: %q, want failure", l)
	}
	if l := sh.line(5 * time.Second); l != "path rc=1" {
		t.Errorf("cat by path: %q, want failure", l)
	}
	if err := sh.wait(10 * time.Second); err != nil {
		t.Errorf("shell: %v: %s", err, sh.errb.String())
	}
	errs := sh.errb.String()
	if !strings.Contains(errs, "cat: -: No such device") {
		t.Errorf("cat of the held descriptor: stderr %q, want \"No such device\" (ENODEV)", errs)
	}
	if !strings.Contains(errs, "temp1_input: No such file or directory") {
		t.Errorf("cat by path: stderr %q, want \"No such file or directory\" (ENOENT)", errs)
	}
	mt.stopClean()
}

// echo 1 > …/delete removes the SCSI disk: the store schedules the removal
// (the attribute's module pinned until it ran), and the disk's directory
// and its device go.
func TestEchoToDeleteRemovesTheSCSIDisk(t *testing.T) {
	mt := startMount(t)
	if out := mt.mustSh("cat sys/block/sda/size"); strings.TrimSpace(out) != strconv.Itoa(pc.DiskSectors) {
		t.Errorf("sda size %q, want %d", out, pc.DiskSectors)
	}
	mt.mustSh("echo 1 > sys/block/sda/device/delete")
	out, err := mt.sh(`for i in $(seq 200); do [ -e sys/block/sda ] || exit 0; sleep 0.05; done; echo still there; exit 1`)
	if err != nil {
		t.Fatalf("sys/block/sda after delete: %s", out)
	}
	if out, err := mt.sh("ls sys/devices/ahci.0/host0"); err != nil || strings.Contains(out, "0:0:0:0") {
		t.Errorf("the SCSI device after delete: %q, %v; want it gone", out, err)
	}
	mt.stopClean()
}

// Module unload from the shell: try is refused with "Device or resource
// busy" while the CP2112 is bound; force unbinds it, and the module's nodes
// are gone — its /module directory, its driver directory, the GPIO chip and
// its char device — while the board stays in its port.
func TestModuleUnloadTryIsBusyAndForceRemovesItsNodes(t *testing.T) {
	mt := startMount(t)
	if out := mt.mustSh("cat sys/module/cp2112/refcnt"); out == "0\n" {
		t.Errorf("cp2112 refcnt %q while a board is bound", out)
	}
	out, err := mt.sh("echo try > sys/module/cp2112/unload")
	if err == nil || !strings.Contains(out, "Device or resource busy") {
		t.Errorf("echo try: %v, %q; want \"Device or resource busy\"", err, out)
	}
	if out, err := mt.sh("echo sometimes > sys/module/cp2112/unload"); err == nil || !strings.Contains(out, "Invalid argument") {
		t.Errorf("echo sometimes: %v, %q; want \"Invalid argument\"", err, out)
	}
	if out := mt.mustSh("cat sys/module/cp2112/initstate"); out != "live\n" {
		t.Errorf("initstate after a refused try: %q", out)
	}
	mt.mustSh("test -e dev/gpiochip0 && test -d sys/bus/usb/drivers/cp2112 && test -d sys/devices/usb1/1-1/gpiochip0")
	mt.mustSh("echo force > sys/module/cp2112/unload")
	for _, gone := range []string{"sys/module/cp2112", "sys/bus/usb/drivers/cp2112", "dev/gpiochip0", "sys/devices/usb1/1-1/gpiochip0", "sys/class/gpio/gpiochip0"} {
		if out, err := mt.sh("test ! -e " + gone); err != nil {
			t.Errorf("%s after force unload: still there (%s)", gone, out)
		}
	}
	if out := mt.mustSh("cat sys/bus/usb/ports/1/device; ls sys/devices/usb1"); !strings.Contains(out, "cp2112") || !strings.Contains(out, "1-1") {
		t.Errorf("the board after its driver's module went: %q; want it still in port 1, unbound", out)
	}
	// try on a module nothing uses succeeds.
	mt.mustSh("echo 1 > sys/bus/usb/ports/1/disconnect")
	mt.stopClean()
}

// Connect on an occupied port is EBUSY, an unknown device EINVAL, and
// disconnect of an empty port ENODEV — as a shell sees them.
func TestPortControlsErrnosFromTheShell(t *testing.T) {
	mt := startMount(t)
	for _, c := range []struct{ script, want string }{
		{"echo cp2112 > sys/bus/usb/ports/1/connect", "Device or resource busy"},
		{"echo floppy > sys/bus/usb/ports/2/connect", "Invalid argument"},
		{"echo 1 > sys/bus/usb/ports/3/disconnect", "No such device"},
		{"echo 0 > sys/bus/usb/ports/1/disconnect", "Invalid argument"},
		{"cat sys/bus/usb/ports/1/connect", "Permission denied"},
	} {
		if out, err := mt.sh(c.script); err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: %v, %q; want %q", c.script, err, out, c.want)
		}
	}
	if out := mt.mustSh("stat -c %a sys/bus/usb/ports/1/connect sys/bus/usb/ports/1/device sys/module/cp2112/unload"); out != "200\n444\n200\n" {
		t.Errorf("modes %q, want 200 444 200", out)
	}
	mt.stopClean()
}

// Many shells disconnecting and reconnecting one port at once all return:
// a disconnect runs the unplug from inside a Store of a node outside the
// device, so it cannot deadlock with itself or with a concurrent one.
func TestConcurrentDisconnectsFromShellsAllReturn(t *testing.T) {
	mt := startMount(t)
	const script = `
for i in $(seq 20); do
  for j in 1 2 3 4; do (echo 1 > sys/bus/usb/ports/1/disconnect) 2>/dev/null & done
  (cat sys/bus/usb/ports/1/sim/line0) >/dev/null 2>&1 &
  wait
  echo cp2112 > sys/bus/usb/ports/1/connect || exit 1
done
echo done
`
	out, err := mt.sh(script)
	if err != nil || !strings.Contains(out, "done") {
		t.Fatalf("%v: %s", err, out)
	}
	mt.stopClean()
}

// cycler plugs and unplugs a board n times through the port controls.
const cycler = `
import os, sys
port, n = sys.argv[1], int(sys.argv[2])
def put(name, s):
    fd = os.open("sys/bus/usb/ports/%s/%s" % (port, name), os.O_WRONLY)
    try:
        os.write(fd, s)
    finally:
        os.close(fd)
for i in range(n):
    put("connect", b"cp2112\n")
    put("disconnect", b"1\n")
print("cycled", n, flush=True)
`

// reader reads attributes of whatever board is in the port, and the line
// of its GPIO chip, until its stdin closes, tolerating ENODEV (a file
// severed under it) and ENOENT (a path removed before it got there).
const reader = `
import errno, glob, os, sys, threading
port = sys.argv[1]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
counts = {"ok": 0, "ENODEV": 0, "ENOENT": 0}
base = "sys/devices/usb1/1-%s" % port
while not stop.is_set():
    for p in [base + "/uevent", "sys/bus/usb/ports/%s/sim/line3" % port] + glob.glob(base + "/gpiochip*/uevent") + glob.glob(base + "/i2c-*/*-0048/temp1_input"):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError as e:
            if e.errno != errno.ENOENT: raise
            counts["ENOENT"] += 1
            continue
        try:
            os.read(fd, 4096); counts["ok"] += 1
        except OSError as e:
            if e.errno != errno.ENODEV: raise
            counts["ENODEV"] += 1
        finally:
            os.close(fd)
print(counts["ok"], counts["ENODEV"], counts["ENOENT"], flush=True)
`

// 1,000 connect/disconnect cycles of one port while processes read the
// board's files: every process finishes (no request stuck), the unmount
// needs no force (no file left open), and the machine quiesces clean (no
// shell leaked, every release run once, nothing called after sever).
func TestThousandHotplugCyclesUnderReaders(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	cycles := 1000
	mt := startMount(t)
	start := time.Now()
	var readers []*proc
	for range 2 {
		readers = append(readers, startProc(t, mt.dir, "python3", "-c", reader, "2"))
	}
	readers = append(readers, startProc(t, mt.dir, "python3", "-c", reader, "1"))
	cyc := startProc(t, mt.dir, "python3", "-c", cycler, "2", strconv.Itoa(cycles))
	// Port 1's board goes and comes back under its reader too, from the shell.
	mt.mustSh("for i in $(seq 20); do echo 1 > sys/bus/usb/ports/1/disconnect; echo cp2112 > sys/bus/usb/ports/1/connect; done")
	if l := cyc.line(50 * time.Second); l != fmt.Sprintf("cycled %d", cycles) {
		t.Fatalf("cycler: %q", l)
	}
	if err := cyc.wait(10 * time.Second); err != nil {
		t.Fatalf("cycler: %v: %s", err, cyc.errb.String())
	}
	var total [3]int
	for i, r := range readers {
		_ = r.stdin.Close() // EOF ends the reader; its exit is checked below
		f := strings.Fields(r.line(10 * time.Second))
		if err := r.wait(10 * time.Second); err != nil || len(f) != 3 {
			t.Fatalf("reader %d: %v %q: %s", i, err, f, r.errb.String())
		}
		for j := range f {
			n, _ := strconv.Atoi(f[j])
			total[j] += n
		}
	}
	t.Logf("%d cycles in %v; readers: %d reads ok, %d ENODEV, %d ENOENT", cycles, time.Since(start).Round(time.Millisecond), total[0], total[1], total[2])
	if total[0] == 0 {
		t.Error("no reader read anything")
	}
	mt.stopClean()
}

// Unmounting DIR from outside (fusermount3 -u, by hand) ends the command
// as a signal does: it quiesces and exits 0.
func TestUnmountFromOutsideEndsTheCommand(t *testing.T) {
	mt := startMount(t)
	if err := unmountByHand(mt.dir, false); err != nil {
		t.Fatal(err)
	}
	select {
	case mt.code = <-mt.done:
		mt.ended = true
	case <-time.After(10 * time.Second):
		t.Fatal("sever mount did not notice its mount was gone within 10s")
	}
	if out := mt.stdout.String(); mt.code != 0 || !strings.Contains(out, "unmounted from outside") || !strings.Contains(out, "quiesced clean") {
		t.Errorf("exit %d:\n%s%s", mt.code, out, mt.stderr.String())
	}
}

// Without --allow-other only the user who mounted may enter the mount —
// the kernel refuses everyone else, whatever the mode bits say; with it,
// the mode bits decide (default_permissions).
func TestOtherUsersNeedAllowOther(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("no setpriv")
	}
	asNobody := func(mt *mounted, script string) (string, error) {
		// The test's temporary directories are 0700: let nobody through.
		for d := filepath.Dir(mt.dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				return "", err
			}
		}
		cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", script)
		cmd.Dir = "/"
		cmd.Env = append(os.Environ(), "D="+mt.dir)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	mt := startMount(t)
	if out, err := asNobody(mt, `cat "$D/sys/module/cp2112/refcnt"`); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("another user without --allow-other: %v, %q; want Permission denied", err, out)
	}
	mt.stopClean()

	mt = startMount(t, "--allow-other")
	if out, err := asNobody(mt, `cat "$D/sys/module/cp2112/refcnt"`); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("another user reading a 0444 file with --allow-other: %v, %q", err, out)
	}
	if out, err := asNobody(mt, `echo 1 > "$D/sys/bus/usb/ports/1/disconnect"`); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("another user writing a 0200 file with --allow-other: %v, %q; want Permission denied", err, out)
	}
	mt.stopClean()
}

// unmountByHand unmounts dir as a user would by hand: umount(8)'s call as
// root, fusermount3 -u otherwise; lazily (-l, -z) if lazy.
func unmountByHand(dir string, lazy bool) error {
	if os.Geteuid() == 0 {
		flags := 0
		if lazy {
			flags = syscall.MNT_DETACH
		}
		if err := syscall.Unmount(dir, flags); err != nil {
			return fmt.Errorf("umount %s: %w", dir, err)
		}
		return nil
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	if out, err := exec.Command("fusermount3", append(args, dir)...).CombinedOutput(); err != nil {
		return fmt.Errorf("fusermount3 %v %s: %v: %s", args, dir, err, out)
	}
	return nil
}

// binary builds the sever command for the test that execs it.
func binary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sever")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	return bin
}

// startBinary runs the built `sever mount dir` and waits until it serves.
func startBinary(t *testing.T, bin, dir string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, "mount", dir)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever the test did with it: killed and reaped here, exited or not.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for range 4 { // whatever the test left, stacked or not
			if mps, _ := fuse.Mounts(dir); len(mps) == 0 || unmountByHand(dir, true) != nil {
				break
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "serving") {
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			if notPermitted(stderr.String()) {
				t.Skipf("mounting FUSE is not permitted here: %s", stderr.String())
			}
			t.Fatalf("sever mount did not serve:\n%s%s", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cmd, stdout, stderr
}

func waitExit(t *testing.T, cmd *exec.Cmd, within time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(within):
		t.Fatalf("sever mount did not exit within %v", within)
	}
	return -1
}

// The binary: SIGTERM unmounts cleanly, quiesces and exits 0. A run killed
// with SIGKILL leaves a stale mount, which the next run detects, reports
// and cleans before serving.
func TestBinarySIGTERMUnmountsAndNextRunCleansAStaleMount(t *testing.T) {
	skipWithoutFUSE(t)
	dir := filepath.Join(t.TempDir(), "mnt")

	bin := binary(t)
	killed, _, _ := startBinary(t, bin, dir)
	if err := killed.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = killed.Wait() // "signal: killed", expected
	if _, err := os.Stat(dir); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the killed run's mount: %v, want ENOTCONN (a stale mount)", err)
	}

	cmd, stdout, stderr := startBinary(t, bin, dir)
	if !strings.Contains(stderr.String(), "stale FUSE mount") {
		t.Errorf("the run after a killed one did not report the stale mount: %q", stderr.String())
	}
	out, err := exec.Command("cat", filepath.Join(dir, "sys/module/cp2112/refcnt")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Errorf("cat refcnt through the new mount: %v, %q", err, out)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 30*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0:\n%s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "quiesced clean") {
		t.Errorf("no clean quiesce reported:\n%s%s", stdout.String(), stderr.String())
	}
	if mounted, _ := isMountPoint(dir); mounted {
		t.Errorf("%s still mounted after SIGTERM", dir)
	}
}

func TestMountHelpExplainsFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"mount", "--help"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"usage: sever mount", "-allow-other", "connect", "disconnect", "unload", "SIGTERM", "stale"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("mount --help lacks %q", want)
		}
	}
	if code := run([]string{"mount"}, &out, &errb); code != 2 {
		t.Errorf("mount without DIR: exit %d, want 2", code)
	}
}

// BenchmarkMountOpenReadClose is fusefs's BenchmarkOpenReadClose on the
// whole machine: a Python process's open/read/close of
// sys/module/cp2112/refcnt in a loop, against the same loop on a tmpfs
// file, reported as a ratio. The machine's checker is on (every open
// registers its release as pending), as it is for `sever mount`.
func BenchmarkMountOpenReadClose(b *testing.B) {
	mt := startMount(b)
	py, err := exec.LookPath("python3")
	if err != nil {
		b.Skip("no python3")
	}
	const loop = `
import os, sys, time
p, n = sys.argv[1], int(sys.argv[2])
t = time.perf_counter_ns()
for _ in range(n):
    fd = os.open(p, os.O_RDONLY); os.read(fd, 4096); os.close(fd)
print(time.perf_counter_ns() - t)
`
	ns := func(file string) float64 {
		out, err := exec.Command(py, "-c", loop, file, strconv.Itoa(b.N)).Output()
		if err != nil {
			b.Fatalf("loop on %s: %v", file, err)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		if err != nil {
			b.Fatal(err)
		}
		return v / float64(b.N)
	}
	tmp := "/dev/shm"
	if _, err := os.Stat(tmp); err != nil {
		tmp = b.TempDir()
	}
	f, err := os.CreateTemp(tmp, "sever-bench-")
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
	fuse := ns(mt.path("sys/module/cp2112/refcnt"))
	tmpfs := ns(f.Name())
	b.StopTimer()
	b.ReportMetric(fuse, "fuse-ns/cycle")
	b.ReportMetric(tmpfs, "tmpfs-ns/cycle")
	b.ReportMetric(fuse/tmpfs, "fuse/tmpfs")
	mt.stopClean()
}

// holder is a user process on the mount of a server about to be killed:
// it holds an attribute open and sleeps in poll on another, then reports
// what poll woke with and what a read and a new open of the held file
// return.
const holder = `
import errno, os, select, sys, threading
_out = threading.Lock()
def say(*a):
    with _out: os.write(1, (" ".join(map(str, a)) + "\n").encode())  # one write: threads never interleave a line
held = os.open("sys/module/cp2112/refcnt", os.O_RDONLY)
polled = os.open("sys/module/cp2112/refcnt", os.O_RDONLY)
os.read(polled, 4096)
p = select.poll(); p.register(polled, select.POLLPRI | select.POLLERR)
say("polling")
ev = p.poll(20000)
say("woke", ev[0][1] if ev else 0)
for what, f in (("read", lambda: os.pread(held, 4096, 0)), ("open", lambda: os.open("sys/module/cp2112/refcnt", os.O_RDONLY))):
    try:
        f(); say(what, "ok")
    except OSError as e:
        say(what, errno.errorcode[e.errno])
os.close(held); os.close(polled)
say("closed")
`

// fuseMounts is how many FUSE mounts sit on dir.
func fuseMounts(t *testing.T, dir string) int {
	t.Helper()
	mps, err := fuse.Mounts(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(mps)
}

// The binary killed with SIGKILL while processes hold files open and
// sleep in poll on its mount: nothing hangs — the poller wakes with
// POLLERR, the held file fails with ENOTCONN, the processes exit. A run
// started at once and one started after a delay each find the stale
// mount, remove it and serve: exactly one mount on the directory each
// time, never one stacked on a dead one. After SIGINT, none.
func TestKilledServerHangsNobodyAndRestartsMountOnce(t *testing.T) {
	skipWithoutFUSE(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3")
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	bin := binary(t)
	srv, _, _ := startBinary(t, bin, dir)
	for i, delay := range []time.Duration{0, 1500 * time.Millisecond} {
		py := startProc(t, dir, "python3", "-c", holder)
		if l := py.line(10 * time.Second); l != "polling" {
			t.Fatalf("holder: %q", l)
		}
		time.Sleep(100 * time.Millisecond) // into poll(2)
		if err := srv.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = srv.Wait() // "signal: killed", expected
		if l := py.line(5 * time.Second); !strings.HasPrefix(l, "woke ") {
			t.Fatalf("the poller, after the server was killed: %q", l)
		} else if ev, _ := strconv.Atoi(strings.TrimPrefix(l, "woke ")); ev&pollErr == 0 {
			t.Errorf("the poller woke with revents %#x, want POLLERR", ev)
		}
		for _, want := range []string{"read ENOTCONN", "open ENOTCONN", "closed"} {
			if l := py.line(5 * time.Second); l != want {
				t.Errorf("holder after the kill: %q, want %q", l, want)
			}
		}
		if err := py.wait(5 * time.Second); err != nil {
			t.Errorf("holder: %v", err)
		}
		if n := fuseMounts(t, dir); n != 1 {
			t.Errorf("%d FUSE mounts on %s after the kill, want the 1 stale one", n, dir)
		}
		time.Sleep(delay)
		var stderr *syncBuffer
		srv, _, stderr = startBinary(t, bin, dir)
		if !strings.Contains(stderr.String(), "stale FUSE mount") {
			t.Errorf("restart %d did not report the stale mount: %q", i, stderr.String())
		}
		if n := fuseMounts(t, dir); n != 1 {
			t.Errorf("restart %d (after %v): %d FUSE mounts on %s, want exactly 1", i, delay, n, dir)
		}
		if out, err := exec.Command("cat", filepath.Join(dir, "sys/module/cp2112/refcnt")).CombinedOutput(); err != nil {
			t.Errorf("restart %d: cat through the new mount: %v, %s", i, err, out)
		}
	}
	if err := srv.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, srv, 30*time.Second); code != 0 {
		t.Errorf("exit %d after SIGINT, want 0", code)
	}
	if n := fuseMounts(t, dir); n != 0 {
		t.Errorf("%d FUSE mounts on %s after SIGINT, want none", n, dir)
	}
}

// A second server started on a directory a live one serves refuses: it
// never stacks a mount on a live mount either.
func TestSecondServerOnALiveMountRefuses(t *testing.T) {
	mt := startMount(t)
	var out, errb syncBuffer
	code := serveMount(context.Background(), []string{mt.dir}, &out, &errb, nil)
	if code == 0 || !strings.Contains(errb.String(), "live FUSE server") {
		t.Errorf("second sever mount on a live mount: exit %d, %s%s; want a refusal naming the live server", code, out.String(), errb.String())
	}
	if n := fuseMounts(t, mt.dir); n != 1 {
		t.Errorf("%d FUSE mounts after the refused second server, want 1", n)
	}
	mt.stopClean()
}

// SIGINT or SIGTERM at any moment of the start — while the machine boots,
// while it mounts — ends the command with nothing mounted.
func TestSignalWhileBootingLeavesNothingMounted(t *testing.T) {
	skipWithoutFUSE(t)
	bin := binary(t)
	for i, after := range []time.Duration{0, 2 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond} {
		sig := os.Interrupt
		if i%2 == 1 {
			sig = syscall.SIGTERM
		}
		dir := filepath.Join(t.TempDir(), "mnt")
		cmd := exec.Command(bin, "mount", dir)
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(after)
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		waitExit(t, cmd, 30*time.Second)
		if n := fuseMounts(t, dir); n != 0 {
			t.Errorf("%v after %v: %d FUSE mounts left on %s:\n%s", sig, after, n, dir, out.String())
			for range n {
				if err := unmountByHand(dir, true); err != nil {
					t.Error(err)
				}
			}
		}
	}
}
