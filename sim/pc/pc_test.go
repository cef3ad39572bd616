package pc_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/sim/gpiokeys"
	"github.com/sever-dev/sever/sim/pc"
)

func boot(t *testing.T) *pc.PC {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := pc.Boot(ctx, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func quiesce(t *testing.T, p *pc.PC) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vs, err := p.Quiesce(ctx)
	if err != nil {
		t.Errorf("quiesce: %v", err)
	}
	for _, v := range vs {
		t.Errorf("checker: %v", v)
	}
}

func read(t *testing.T, p *pc.PC, path string) (string, error) {
	t.Helper()
	f, err := p.Machine().Sysfs().Open(path, os.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer closeOK(t, f)
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	return string(buf[:n]), err
}

func write(p *pc.PC, path, s string) error {
	f, err := p.Machine().Sysfs().Open(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(s))
	return errors.Join(err, f.Close())
}

func TestBootBuildsEveryPieceAndQuiescesClean(t *testing.T) {
	p := boot(t)
	tr := p.Machine().Sysfs()
	for _, path := range []string{
		"/bus/usb/ports/1/connect", "/bus/usb/ports/4/disconnect", "/bus/usb/ports/1/sim/line3",
		"/devices/usb1/1-1", "/devices/gpio-keys.0/presses", "/block/sda/device/delete",
		"/block/zram0", "/fs/cgroup/sever/cpu.pressure", "/module/cp2112/refcnt", "/module/scsi_mod/unload",
	} {
		if _, err := tr.Lookup(path); err != nil {
			t.Errorf("after boot: %v", err)
		}
	}
	names := p.Machine().Dev().Names()
	if !strings.Contains(strings.Join(names, " "), "gpiochip0") || !strings.Contains(strings.Join(names, " "), "uio0") {
		t.Errorf("dev/ after boot: %v; want gpiochip0 and uio0", names)
	}
	quiesce(t, p)
}

func TestPortControlsConnectAndDisconnect(t *testing.T) {
	p := boot(t)
	if got, _ := read(t, p, "/bus/usb/ports/2/device"); got != "none\n" {
		t.Errorf("device of an empty port: %q", got)
	}
	if err := write(p, "/bus/usb/ports/2/connect", "cp2112\n"); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if got, _ := read(t, p, "/bus/usb/ports/2/device"); got != "cp2112\n" {
		t.Errorf("device of port 2: %q", got)
	}
	if err := write(p, "/bus/usb/ports/2/connect", "cp2112\n"); !errors.Is(err, sever.ErrBusy) {
		t.Errorf("connect of an occupied port: %v, want EBUSY", err)
	}
	if err := write(p, "/bus/usb/ports/3/connect", "floppy\n"); !errors.Is(err, sever.ErrInvalid) {
		t.Errorf("connect of an unknown device: %v, want EINVAL", err)
	}
	if err := write(p, "/bus/usb/ports/3/disconnect", "1\n"); !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("disconnect of an empty port: %v, want ENODEV", err)
	}
	if err := write(p, "/bus/usb/ports/2/disconnect", "2\n"); !errors.Is(err, sever.ErrInvalid) {
		t.Errorf("disconnect 2: %v, want EINVAL", err)
	}
	if err := write(p, "/bus/usb/ports/2/disconnect", "1\n"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	if _, err := p.Machine().Sysfs().Lookup("/devices/usb1/1-2"); !errors.Is(err, sever.ErrNotExist) {
		t.Errorf("the board's device after disconnect: %v, want ENOENT", err)
	}
	if _, err := p.Machine().Sysfs().Lookup("/bus/usb/ports/2/sim"); !errors.Is(err, sever.ErrNotExist) {
		t.Errorf("the board's sim/ after disconnect: %v, want ENOENT", err)
	}
	quiesce(t, p)
}

// Concurrent disconnects of one port — and connects racing them — all
// return: exactly one disconnect per plugged board succeeds, the others
// find the port empty.
func TestConcurrentDisconnectsOfOnePortDoNotDeadlock(t *testing.T) {
	p := boot(t)
	for round := range 20 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for range 4 {
			wg.Add(2)
			go func() {
				defer wg.Done()
				if err := write(p, "/bus/usb/ports/1/disconnect", "1"); err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				} else if !errors.Is(err, sever.ErrNoDevice) {
					t.Errorf("round %d: disconnect: %v", round, err)
				}
			}()
			go func() {
				defer wg.Done()
				// ENOENT or ENODEV while the board is out: the race is the test
				_, _ = read(t, p, "/bus/usb/ports/1/sim/line0")
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: concurrent disconnects did not return", round)
		}
		if ok != 1 {
			t.Errorf("round %d: %d disconnects succeeded, want 1", round, ok)
		}
		if err := p.Connect(context.Background(), 1, "cp2112"); err != nil {
			t.Fatal(err)
		}
	}
	quiesce(t, p)
}

// The board's sim/ lines drive its inputs: a press on KeyLine is counted
// by gpio-keys.0.
func TestSimLineDrivesTheKey(t *testing.T) {
	p := boot(t)
	for range 3 {
		if err := errors.Join(write(p, "/bus/usb/ports/1/sim/line2", "1"), write(p, "/bus/usb/ports/1/sim/line2", "0")); err != nil {
			t.Fatal(err)
		}
	}
	if got := gpiokeys.Presses(p.Keys()); got != 3 {
		t.Errorf("presses %d, want 3", got)
	}
	if got, _ := read(t, p, "/bus/usb/ports/1/sim/line2"); got != "0\n" {
		t.Errorf("line2 %q", got)
	}
	quiesce(t, p)
}

// A force unload of the board's driver module racing a disconnect of the
// board: both return, and the machine quiesces clean.
func TestForceUnloadRacingDisconnect(t *testing.T) {
	for i := range 30 {
		p := boot(t)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := write(p, "/module/cp2112/unload", "force"); err != nil {
				t.Errorf("run %d: force unload: %v", i, err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := write(p, "/bus/usb/ports/1/disconnect", "1"); err != nil {
				t.Errorf("run %d: disconnect: %v", i, err)
			}
		}()
		wg.Wait()
		quiesce(t, p)
	}
}

// closeOK closes c and fails the test if Close does: a file's first Close
// succeeds, whether or not its device is gone.
func closeOK(t testing.TB, c interface{ Close() error }) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
