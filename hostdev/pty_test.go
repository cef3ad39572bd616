package hostdev_test

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// newPty opens a pseudo-terminal pair: the master, which the test holds as
// the "hardware", and the slave's path, which is the device a program
// opens. Closing the master hangs the slave up — what the kernel does to a
// USB serial adapter's tty when it is pulled.
func newPty(t testing.TB) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here (/dev/ptmx): %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		_ = m.Close() // the test stops here: the ioctl error is the news
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		_ = m.Close() // the test stops here: the ioctl error is the news
		t.Fatalf("ptsname: %v", err)
	}
	// Raw mode: a read returns what was written, without waiting for a line.
	tio, err := unix.IoctlGetTermios(int(m.Fd()), unix.TCGETS)
	if err == nil {
		tio.Lflag &^= unix.ICANON | unix.ECHO
		if err := unix.IoctlSetTermios(int(m.Fd()), unix.TCSETS, tio); err != nil {
			_ = m.Close()
			t.Fatalf("raw mode: %v", err)
		}
	}
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

// fdCount counts this process's open descriptors.
func fdCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors without /proc: %v", err)
	}
	return len(ents)
}
