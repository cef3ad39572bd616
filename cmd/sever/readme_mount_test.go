package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadmeMountBehaviour holds README's "Where the mount differs from
// Linux, or surprises" to the built `sever mount`, one promise at a time,
// from this test's process (the server is another process).
func TestReadmeMountBehaviour(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs sever mount")
	}
	srv := startServerProc(t)
	p := func(rel string) string { return filepath.Join(srv.dir, rel) }
	exists := func(rel string) bool { _, err := os.Lstat(p(rel)); return err == nil }
	readErr := func(rel string, size int, flags int) error {
		fd, err := syscall.Open(p(rel), syscall.O_RDONLY|flags, 0)
		if err != nil {
			return err
		}
		defer func() { _ = syscall.Close(fd) }()
		_, err = syscall.Read(fd, make([]byte, size))
		return err
	}

	// reset deletes zram0; hot_add adds a disk on every read.
	if !exists("sys/block/zram0") {
		t.Fatal("no zram0 at boot")
	}
	if err := os.WriteFile(p("sys/block/zram0/reset"), []byte("1\n"), 0); err != nil {
		t.Fatalf("echo 1 > reset: %v", err)
	}
	if gone := readmeWait(5*time.Second, func() bool { return !exists("sys/block/zram0") && !exists("sys/devices/zram-control/zram0") }); !gone {
		t.Error("zram0 still there after reset; README: reset deletes it")
	}
	var idx []string
	for range 2 {
		b, err := os.ReadFile(p("sys/devices/zram-control/hot_add"))
		if err != nil {
			t.Fatalf("read hot_add: %v", err)
		}
		idx = append(idx, strings.TrimSpace(string(b)))
	}
	if idx[0] == idx[1] {
		t.Errorf("two reads of hot_add gave %q twice; README: a disk per read", idx[0])
	}
	for _, i := range idx {
		if !exists("sys/block/zram" + i) {
			t.Errorf("hot_add said %s, but there is no sys/block/zram%s", i, i)
		}
	}

	// echo N > hot_remove removes disk N.
	if err := os.WriteFile(p("sys/devices/zram-control/hot_remove"), []byte(idx[0]+"\n"), 0); err != nil {
		t.Errorf("echo %s > hot_remove: %v", idx[0], err)
	} else if !readmeWait(5*time.Second, func() bool { return !exists("sys/block/zram" + idx[0]) }) {
		t.Errorf("zram%s still there after hot_remove", idx[0])
	}

	// dev/uio0: 4 bytes or EINVAL; a stream (pread is ESPIPE).
	if err := readErr("dev/uio0", 4096, 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("read of 4096 bytes from dev/uio0: %v; want EINVAL", err)
	}
	if err := readErr("dev/uio0", 4, syscall.O_NONBLOCK); !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("non-blocking read of 4 bytes from dev/uio0 with no interrupt: %v; want EAGAIN", err)
	}
	if fd, err := syscall.Open(p("dev/uio0"), syscall.O_RDONLY, 0); err == nil {
		if _, err := syscall.Pread(fd, make([]byte, 4), 0); !errors.Is(err, syscall.ESPIPE) {
			t.Errorf("pread of dev/uio0: %v; want ESPIPE", err)
		}
		_ = syscall.Close(fd)
	} else {
		t.Errorf("open dev/uio0: %v", err)
	}

	// dev/gpiochip0: a read before any command is EINVAL; get of a line
	// gpio-keys holds is EBUSY; get of a free line answers.
	if err := readErr("dev/gpiochip0", 4096, syscall.O_NONBLOCK); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("read of dev/gpiochip0 before any command: %v; want EINVAL", err)
	}
	fd, err := syscall.Open(p("dev/gpiochip0"), syscall.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open dev/gpiochip0: %v", err)
	}
	if _, err := syscall.Write(fd, []byte("get 2\n")); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("get 2 (held by gpio-keys.0): %v; want EBUSY", err)
	}
	if _, err := syscall.Write(fd, []byte("get 3\n")); err != nil {
		t.Errorf("get 3: %v", err)
	} else {
		buf := make([]byte, 64)
		n, err := syscall.Read(fd, buf)
		if err != nil || string(buf[:max(n, 0)]) != "3 0\n" {
			t.Errorf("read after get 3: %q, %v; want \"3 0\\n\"", buf[:max(n, 0)], err)
		}
	}
	_ = syscall.Close(fd)

	// Opening against an attribute's callbacks is EACCES even for root.
	for _, c := range []struct {
		rel  string
		flag int
	}{
		{"sys/bus/usb/ports/1/connect", syscall.O_RDONLY},
		{"sys/module/cp2112/unload", syscall.O_RDONLY},
		{"sys/module/cp2112/refcnt", syscall.O_WRONLY},
	} {
		fd, err := syscall.Open(p(c.rel), c.flag, 0)
		if err == nil {
			_ = syscall.Close(fd)
		}
		if !errors.Is(err, syscall.EACCES) {
			t.Errorf("open %s (flags %#x) as uid %d: %v; want EACCES", c.rel, c.flag, os.Getuid(), err)
		}
	}

	// Last, as it frees line 2: a device's unbind file refuses junk with
	// EINVAL, leaving the driver bound, and unbinds it on "1".
	if err := os.WriteFile(p("sys/devices/gpio-keys.0/unbind"), []byte("\xff../x"), 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("write of junk to gpio-keys.0/unbind: %v; README: anything but 1 is EINVAL", err)
	}
	if !exists("sys/devices/gpio-keys.0/driver") {
		t.Error("gpio-keys.0 lost its driver to a refused write of junk to its unbind")
	}
	if err := os.WriteFile(p("sys/devices/gpio-keys.0/unbind"), []byte("1\n"), 0); err != nil {
		t.Errorf("write of 1 to gpio-keys.0/unbind: %v; README: 1 unbinds", err)
	} else if exists("sys/devices/gpio-keys.0/driver") {
		t.Error("gpio-keys.0 still has a driver after 1 was written to its unbind")
	}

	if code := srv.stop(t); code != 0 || !strings.Contains(srv.stdout.String(), "quiesced clean") {
		t.Errorf("sever mount exited %d; want 0 and a clean machine:\n%s%s", code, srv.stdout.String(), srv.stderr.String())
	}
}

// readmeWait polls cond until it holds or d has passed.
func readmeWait(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}
