package hostdev_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sever-dev/sever/fusefs"
)

// A host device's properties show up under sys/ of a FUSE mount of the
// Host's Core, for any process to read, and its removal takes its
// directory away — the one removal path, seen from outside.
func TestHostDevicesShowUnderSysOfTheFUSEMount(t *testing.T) {
	needTun(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skipf("no fusermount3 here (install fuse3): %v", err)
	}
	h, core := newHost(t, "net")
	dir := t.TempDir()
	s, err := fusefs.Mount(dir, fusefs.Sources{Sys: core.Sysfs()}, fusefs.Logf(t.Logf))
	if err != nil {
		if errors.Is(err, os.ErrPermission) || strings.Contains(strings.ToLower(err.Error()), "not permitted") {
			t.Skipf("mounting FUSE is not permitted here: %v", err)
		}
		t.Fatalf("Mount: %v", err)
	}
	defer closeOrFail(t, s)

	name := tapName("f", 0)
	createTap(t, name)
	d := wait(t, h, byName(name))
	attr := filepath.Join(dir, "sys/bus/host/devices", "net:"+name, "INTERFACE")
	out, err := exec.Command("cat", attr).CombinedOutput()
	if err != nil || string(out) != name+"\n" {
		t.Fatalf("cat %s = %q, %v; want %q", attr, out, err, name+"\n")
	}
	deleteLink(t, d.Prop("IFINDEX"))
	<-d.Gone()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := exec.Command("cat", attr).CombinedOutput()
		if err != nil {
			break // gone: ENOENT (the kernel's cached entry is dropped by the mount)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still readable 5 s after the device was removed", attr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
