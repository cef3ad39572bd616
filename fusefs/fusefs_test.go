package fusefs_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever/fusefs"
	"github.com/sever-dev/sever/kernfs"
)

const (
	pollPri = 0x02
	pollErr = 0x08
	pollHup = 0x10
)

// A process reads an attribute with cat; after the device is unplugged a
// process still holding the file open gets ENODEV from read, and opening
// the removed path fails with ENOENT.
func TestReadOfSeveredFileIsENODEVAndRemovedPathIsENOENT(t *testing.T) {
	p := newProvider(t)
	s := mount(t, fusefs.Sources{Sys: p.tr})
	value := path(s, "sys/devices/dev0/value")

	out, errOut, err := run(t, "cat", value)
	if err != nil || out != "1\n" {
		t.Fatalf("cat %s = %q, %v (%s); want \"1\\n\"", value, out, err, errOut)
	}

	py := startPy(t)
	if r := py.do("open v " + value + " r"); r != "ok" {
		t.Fatalf("open before unplug: %s", r)
	}
	if r := py.do("read v"); r != "ok:1\n" {
		t.Fatalf("read before unplug: %q", r)
	}
	p.unplug(t)
	if r := py.do("read v"); r != "ENODEV" {
		t.Errorf("read of an open file after unplug: %s, want ENODEV", r)
	}
	if r := py.do("open w " + value + " r"); r != "ENOENT" {
		t.Errorf("open of the removed path: %s, want ENOENT", r)
	}
	if r := py.do("close v"); r != "ok" {
		t.Errorf("close of the severed file: %s, want ok", r)
	}
	if _, errOut, err := run(t, "cat", value); err == nil || !strings.Contains(errOut, "No such file or directory") {
		t.Errorf("cat of the removed path: err %v, stderr %q; want failure with \"No such file or directory\"", err, errOut)
	}
	if _, err := os.Lstat(path(s, "sys/devices/dev0")); !os.IsNotExist(err) {
		t.Errorf("stat of the removed directory: %v, want ENOENT", err)
	}
	if out, _, err := run(t, "ls", "-A", path(s, "sys/devices")); err != nil || out != "" {
		t.Errorf("ls devices after unplug = %q, %v; want it empty", out, err)
	}
	if _, errOut, err := run(t, "stat", path(s, "sys/class/dev0/value")); err == nil || !strings.Contains(errOut, "No such file or directory") {
		t.Errorf("stat through the dangling symlink: err %v, stderr %q; want ENOENT", err, errOut)
	}
	// Each open was released exactly once: cat's by its close, the
	// held one by the unplug.
	eventually(t, "every open is released", func() bool { return p.releases.Load() == p.opens.Load() })
	if o := p.opens.Load(); o != 2 {
		t.Errorf("%d opens reached the provider, want 2 (cat, python)", o)
	}
}

// A process blocked in poll() on an attribute sleeps until the attribute
// is notified (POLLPRI|POLLERR, as sysfs_notify), and wakes with
// POLLERR|POLLHUP when the device is unplugged.
func TestPollWakesOnNotifyAndOnUnplug(t *testing.T) {
	p := newProvider(t)
	s := mount(t, fusefs.Sources{Sys: p.tr})
	value := path(s, "sys/devices/dev0/value")

	py := startPy(t)
	if r := py.do("open v " + value + " r"); r != "ok" {
		t.Fatalf("open: %s", r)
	}
	py.do("read v") // arm, as a sysfs poller does

	py.send("poll v 0xa 20000") // POLLPRI|POLLERR
	eventually(t, "the kernel asks to be woken", func() bool { return s.Watchers() == 1 })
	select {
	case l := <-py.lines:
		t.Fatalf("poll returned %s before any Notify", l)
	case <-time.After(100 * time.Millisecond):
	}
	p.tr.Notify(p.value)
	if r := py.reply(5 * time.Second); r != "10" {
		t.Errorf("poll after Notify: revents %s, want %d (POLLPRI|POLLERR)", r, pollPri|pollErr)
	}

	py.do("read v") // re-arm
	py.send("poll v 0xa 20000")
	eventually(t, "the kernel asks to be woken again", func() bool { return s.Watchers() == 1 })
	p.unplug(t)
	if r := py.reply(5 * time.Second); r != "24" {
		t.Errorf("poll after unplug: revents %s, want %d (POLLERR|POLLHUP)", r, pollErr|pollHup)
	}
	// Polling a severed file reports the same at once.
	if r := py.do("poll v 0xa 20000"); r != "24" {
		t.Errorf("poll of a severed file: revents %s, want %d (POLLERR|POLLHUP)", r, pollErr|pollHup)
	}
	if r := py.do("read v"); r != "ENODEV" {
		t.Errorf("read after unplug: %s, want ENODEV", r)
	}
	eventually(t, "no watcher is left", func() bool { return s.Watchers() == 0 })
}

// A write the attribute's Parser rejects fails with EINVAL and changes
// nothing; a good one is stored; a write to an attribute without Store is
// refused at open, even for root.
func TestWriteRejectedByParserIsEINVAL(t *testing.T) {
	p := newProvider(t)
	s := mount(t, fusefs.Sources{Sys: p.tr})
	value := path(s, "sys/devices/dev0/value")
	py := startPy(t)
	if r := py.do("open v " + value + " w"); r != "ok" {
		t.Fatalf("open for writing: %s", r)
	}

	for _, bad := range []string{"bad", "5000"} {
		// bash's echo names the errno; dash's (Debian's sh) says "I/O
		// error" whatever the errno, so it only proves the failure.
		_, errOut, err := run(t, "bash", "-c", "echo "+bad+" > "+value)
		if err == nil || !strings.Contains(errOut, "Invalid argument") {
			t.Errorf("bash: echo %s > value: err %v, stderr %q; want failure with \"Invalid argument\"", bad, err, errOut)
		}
		if _, errOut, err := run(t, "sh", "-c", "echo "+bad+" > "+value); err == nil {
			t.Errorf("sh: echo %s > value succeeded (%s); want failure", bad, errOut)
		}
		if r := py.do("write v " + bad); r != "EINVAL" {
			t.Errorf("write(%q) = %s, want EINVAL", bad, r)
		}
	}
	if _, errOut, err := run(t, "sh", "-c", "echo 7 > "+value); err != nil {
		t.Fatalf("echo 7 > value: %v: %s", err, errOut)
	}
	if out, _, err := run(t, "cat", value); err != nil || out != "7\n" {
		t.Errorf("cat value after echo 7 = %q, %v; want \"7\\n\"", out, err)
	}
	_, errOut, err := run(t, "sh", "-c", "echo 1 > "+path(s, "sys/devices/dev0/ro"))
	if err == nil || !strings.Contains(errOut, "Permission denied") {
		t.Errorf("echo 1 > ro: err %v, stderr %q; want failure with \"Permission denied\"", err, errOut)
	}
}

// Closing the mount while a process holds files open — and sleeps in
// poll on one — completes, and the provider's Release has run for every
// open; the process's descriptors are dead afterwards.
func TestCloseWithFilesHeldOpenReleasesEach(t *testing.T) {
	p := newProvider(t)
	s := mount(t, fusefs.Sources{Sys: p.tr})

	py := startPy(t)
	for _, f := range []string{"value", "secret", "ro", "blob"} {
		if r := py.do("open " + f + " " + path(s, "sys/devices/dev0/"+f) + " r"); r != "ok" {
			t.Fatalf("open %s: %s", f, r)
		}
	}
	if r := py.do("read blob"); r != "ok:abcdefgh" {
		t.Errorf("read blob: %q", r)
	}
	py.send("poll value 0xa 60000")
	eventually(t, "the poller sleeps", func() bool { return s.Watchers() == 1 })

	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close did not return with files held open")
	}
	if o, r := p.opens.Load(), p.releases.Load(); o != 4 || r != 4 {
		t.Errorf("after Close: %d opens, %d releases; want 4 and 4", o, r)
	}
	if n := s.Watchers(); n != 0 {
		t.Errorf("%d poll watchers still running after Close", n)
	}
	if n := s.Handles(); n != 0 {
		t.Errorf("%d handles still tracked after Close", n)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), " "+s.Dir()+" ") {
		t.Errorf("%s still mounted after Close", s.Dir())
	}
	// The poller was not forgotten: the aborted connection woke it, or
	// its timeout will; either way it answers. Then its files are dead.
	t.Logf("the poller's poll returned %s", py.reply(70*time.Second))
	if r := py.do("read value"); r != "ENOTCONN" {
		t.Errorf("read through a descriptor of the closed mount: %s, want ENOTCONN", r)
	}
}

// Mode bits, file types and symlink targets are what kernfs has.
func TestStatShowsModeBits(t *testing.T) {
	p := newProvider(t)
	s := mount(t, fusefs.Sources{Sys: p.tr})
	for _, c := range []struct{ rel, want string }{
		{"devices", "755 directory"},
		{"devices/dev0", "755 directory"},
		{"devices/dev0/value", "644 regular file 4096"},
		{"devices/dev0/secret", "600 regular file 4096"},
		{"devices/dev0/ro", "444 regular file 4096"},
		{"devices/dev0/blob", "400 regular file 8"},
		{"class/dev0", "777 symbolic link 15"},
	} {
		format := "%a %F %s"
		if strings.HasSuffix(c.want, "directory") {
			format = "%a %F"
		}
		out, errOut, err := run(t, "stat", "-c", format, path(s, "sys/"+c.rel))
		if got := strings.TrimSpace(out); err != nil || got != c.want {
			t.Errorf("stat %s = %q, %v (%s); want %q", c.rel, got, err, errOut, c.want)
		}
	}
	if out, _, err := run(t, "readlink", path(s, "sys/class/dev0")); err != nil || out != "../devices/dev0\n" {
		t.Errorf("readlink class/dev0 = %q, %v; want \"../devices/dev0\"", out, err)
	}
	if out, _, err := run(t, "ls", path(s, "sys/devices/dev0")); err != nil || out != "blob\nro\nsecret\nvalue\n" {
		t.Errorf("ls devices/dev0 = %q, %v", out, err)
	}
	if out, _, err := run(t, "cat", path(s, "sys/class/dev0/value")); err != nil || out != "1\n" {
		t.Errorf("cat through the symlink = %q, %v", out, err)
	}
	if _, errOut, err := run(t, "chmod", "666", path(s, "sys/devices/dev0/value")); err == nil {
		t.Errorf("chmod of an attribute succeeded; want EPERM (%s)", errOut)
	}
}

// A stale mount left by a killed server is detected and detached, and the
// new mount works.
func TestMountRecoversStaleMount(t *testing.T) {
	skipWithoutFUSE(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	helper := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, _ := out.Read(buf)
	if got := string(buf[:n]); !strings.HasPrefix(got, "mounted") {
		_ = helper.Process.Kill() // it may have exited already: only reaped here
		_ = helper.Wait()
		if strings.Contains(got, "ermission") || strings.Contains(got, "not permitted") {
			t.Skipf("mounting FUSE is not permitted here: %s", got)
		}
		t.Fatalf("helper: %q", got)
	}
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait() // "signal: killed", expected
	if _, err := os.Stat(dir); !errorsIs(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the dead mount: %v; want ENOTCONN", err)
	}

	var logged []string
	p := newProvider(t)
	s, err := fusefs.Mount(dir, fusefs.Sources{Sys: p.tr}, fusefs.Logf(func(f string, a ...any) { logged = append(logged, f) }))
	if err != nil {
		t.Fatalf("Mount over a stale mount: %v", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if len(logged) == 0 || !strings.Contains(logged[0], "stale") {
		t.Errorf("Mount did not say it removed a stale mount: %q", logged)
	}
	if out, _, err := run(t, "cat", path(s, "sys/devices/dev0/value")); err != nil || out != "1\n" {
		t.Errorf("cat on the new mount = %q, %v", out, err)
	}
}

func errorsIs(err error, target syscall.Errno) bool {
	for err != nil {
		if e, ok := err.(syscall.Errno); ok {
			return e == target
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// Entries are cached — a second stat of a path sends no lookup — and yet a
// removed node's path, and every path below it, fails with ENOENT at once:
// the removal invalidates the entries the kernel holds. A node added
// again under the same name is found at once (nothing negative cached).
func TestRemovedPathIsENOENTAtOnceThoughEntriesAreCached(t *testing.T) {
	p := newProvider(t)
	s := mount(t, fusefs.Sources{Sys: p.tr}, fusefs.EntryTimeout(time.Hour))
	value, dev := path(s, "sys/devices/dev0/value"), path(s, "sys/devices/dev0")
	py := startPy(t)
	for _, f := range []string{value, dev, path(s, "sys/class/dev0")} {
		if r := py.do("stat " + f); !strings.HasPrefix(r, "ok:") {
			t.Fatalf("stat %s: %s", f, r)
		}
	}
	lookups := s.Lookups()
	if r := py.do("stat " + value); !strings.HasPrefix(r, "ok:") {
		t.Fatalf("stat again: %s", r)
	}
	if n := s.Lookups() - lookups; n != 0 {
		t.Errorf("a second stat sent %d lookups; want every entry cached", n)
	}
	// A process keeps its cwd in the directory: its dentry stays in use.
	sh := exec.Command("sh", "-c", "cd "+dev+" && echo in && read x")
	stdin, _ := sh.StdinPipe()
	stdout, _ := sh.StdoutPipe()
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = sh.Wait() }() // the shell ends at EOF; how is not what is tested
	if b := make([]byte, 3); func() bool { n, _ := io.ReadFull(stdout, b); return n < 3 }() {
		t.Fatal("the shell did not enter the directory")
	}

	p.unplug(t)
	for _, f := range []string{value, dev, path(s, "sys/class/dev0/value")} {
		if r := py.do("stat " + f); r != "ENOENT" {
			t.Errorf("stat %s right after the removal: %s, want ENOENT", f, r)
		}
	}
	if r := py.do("stat " + path(s, "sys/class/dev0")); r != "ENOENT" {
		t.Errorf("stat through the dangling link: %s, want ENOENT", r)
	}

	// The name comes back with a new node.
	m := func(n *kernfs.Node, err error) *kernfs.Node {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	devs, err := p.tr.Lookup("/devices")
	if err != nil {
		t.Fatal(err)
	}
	again := m(p.tr.AddDir(devs, kernfs.Dir{Name: "dev0"}))
	m(p.tr.AddAttr(again, kernfs.Attr{Name: "value", Show: func(_ *kernfs.Call, b []byte) ([]byte, error) { return append(b, "new\n"...), nil }}))
	if out, _, err := run(t, "cat", value); err != nil || out != "new\n" {
		t.Errorf("cat of the re-added value = %q, %v; want \"new\\n\"", out, err)
	}
	if err := p.tr.Remove(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	if r := py.do("stat " + value); r != "ENOENT" {
		t.Errorf("stat of the removed re-added value: %s, want ENOENT", r)
	}
}

// A process blocked in a read whose Show blocks is not stuck: a signal
// reaches the Show as its Call's context cancelled (FUSE INTERRUPT), the
// read fails with EINTR, the process goes on; a process killed there dies
// at once rather than hanging in the kernel.
func TestSignalInterruptsReadBlockedInShow(t *testing.T) {
	tr := kernfs.New()
	entered := make(chan struct{}, 1)
	ended := make(chan error, 1)
	if _, err := tr.AddAttr(tr.Root(), kernfs.Attr{Name: "wait", Show: func(c *kernfs.Call, b []byte) ([]byte, error) {
		entered <- struct{}{}
		select {
		case <-c.Context().Done():
			ended <- c.Context().Err()
			return nil, c.Context().Err()
		case <-time.After(20 * time.Second):
			ended <- nil
			return append(b, "late\n"...), nil
		}
	}}); err != nil {
		t.Fatal(err)
	}
	s := mount(t, fusefs.Sources{Sys: tr})
	wait := path(s, "sys/wait")
	await := func(what string, c <-chan struct{}) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting until %s", what)
		}
	}
	showEnded := func() error {
		t.Helper()
		select {
		case err := <-ended:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("the Show did not return after the signal")
		}
		return nil
	}

	py := startPy(t)
	if r := py.do("open w " + wait + " r"); r != "ok" {
		t.Fatalf("open: %s", r)
	}
	py.send("read w")
	await("the Show runs", entered)
	py.signal(syscall.SIGUSR1)
	if r := py.reply(10 * time.Second); r != "EINTR" {
		t.Errorf("read interrupted by a signal: %s, want EINTR", r)
	}
	if err := showEnded(); !errors.Is(err, context.Canceled) {
		t.Errorf("the Show's context ended with %v, want context.Canceled", err)
	}

	killed := startPy(t)
	if r := killed.do("open w " + wait + " r"); r != "ok" {
		t.Fatalf("open: %s", r)
	}
	killed.send("read w")
	await("the second Show runs", entered)
	start := time.Now()
	if err := killed.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = killed.cmd.Wait(); close(exited) }() // "signal: killed", expected
	await("the killed process exits", exited)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the killed process took %v to exit", d)
	}
	if err := showEnded(); !errors.Is(err, context.Canceled) {
		t.Errorf("the killed reader's Show ended with %v, want context.Canceled", err)
	}
	eventually(t, "the killed process's file is released", func() bool { return s.Handles() == 1 })
}

// Both ways of mounting serve: mount(2) directly (root only; no helper
// needed, as on a fresh machine) and fusermount3 (the fuse3 package). Each
// unmounts at Close, leaving nothing on the directory.
func TestMountDirectlyAndThroughFusermount3(t *testing.T) {
	for _, how := range []string{"direct", "helper"} {
		t.Run(how, func(t *testing.T) {
			skipWithoutFUSE(t)
			if how == "direct" && os.Geteuid() != 0 {
				t.Skip("mounting with mount(2) needs root")
			}
			if _, err := exec.LookPath("fusermount3"); how == "helper" && err != nil {
				t.Skipf("no fusermount3 here (install fuse3): %v", err)
			}
			p := newProvider(t)
			dir := t.TempDir()
			s, err := fusefs.Mount(dir, fusefs.Sources{Sys: p.tr}, fusefs.Logf(t.Logf), fusefs.MountHow(how))
			if err != nil {
				t.Fatalf("Mount (%s): %v", how, err)
			}
			if out, _, err := run(t, "cat", path(s, "sys/devices/dev0/value")); err != nil || out != "1\n" {
				t.Errorf("cat through the %s mount = %q, %v", how, out, err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			mi, _ := os.ReadFile("/proc/self/mountinfo")
			if strings.Contains(string(mi), " "+s.Dir()+" ") {
				t.Errorf("%s still mounted after Close", s.Dir())
			}
		})
	}
}
