package hostdev_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/hostdev"
)

func newHost(t testing.TB, subsystems ...string) (*hostdev.Host, *device.Core) {
	t.Helper()
	core := device.NewCore("host", nil)
	h, err := hostdev.New(context.Background(), hostdev.Config{Core: core, Subsystems: subsystems})
	if err != nil {
		t.Skipf("cannot watch the host's devices here: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(context.Background()); err != nil {
			t.Errorf("Host.Close: %v", err)
		}
		if err := core.Shutdown(context.Background()); err != nil {
			t.Errorf("Core.Shutdown: %v", err)
		}
	})
	return h, core
}

func wait(t testing.TB, h *hostdev.Host, k hostdev.Key) *hostdev.Device {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := h.Wait(ctx, k)
	if err != nil {
		t.Fatalf("waiting for %v: %v", k, err)
	}
	return d
}

func byName(name string) hostdev.Key {
	return hostdev.Key{Subsystem: "net", Props: map[string]string{"INTERFACE": name}}
}

func TestHostMirrorsDevicesPresentAtStart(t *testing.T) {
	h, core := newHost(t, "net")
	d, err := h.Find(hostdev.Key{Devpath: "/devices/virtual/net/lo"})
	if err != nil {
		t.Fatalf("the loopback interface, present at New, is not found: %v", err)
	}
	if d.Device().Bus() != h.Bus() || d.Subsystem() != "net" {
		t.Fatalf("lo mirrored as %v on bus %v", d, d.Device().Bus())
	}
	f, err := core.Sysfs().Open(d.Device().Path()+"/INTERFACE", os.O_RDONLY)
	if err != nil {
		t.Fatalf("the mirrored device has no INTERFACE attribute: %v", err)
	}
	defer func() { _ = f.Close() }() // an attribute file only read from
	b, _ := io.ReadAll(f)
	if string(b) != "lo\n" {
		t.Fatalf("INTERFACE reads %q, want \"lo\\n\"", b)
	}
	for _, d := range h.Devices() {
		if d.Subsystem() != "net" {
			t.Fatalf("%v mirrored by a Host told to mirror net only", d)
		}
	}
}

func TestHostRefusesBadInput(t *testing.T) {
	if _, err := hostdev.New(context.Background(), hostdev.Config{}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("New without Core = %v, want EINVAL", err)
	}
	h, _ := newHost(t, "net")
	if _, err := h.Find(hostdev.Key{}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Find of an empty Key = %v, want EINVAL", err)
	}
	if _, err := h.Find(hostdev.Key{Attrs: map[string]string{"../x": "1"}}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Find of a Key with attribute ../x = %v, want EINVAL", err)
	}
	if _, err := h.Find(hostdev.Key{Devpath: "/devices/none"}); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Find of an absent device = %v, want ENOENT", err)
	}
}

func TestTapRemovalSeversBlockedReadThroughTheDriverCore(t *testing.T) {
	needTun(t)
	h, _ := newHost(t, "net")
	// A wake-up that waits for a timer or a poll interval misses 100 ms
	// every time; a loaded machine may miss it once. Three taps.
	var d *hostdev.Device
	var name string
	var took []time.Duration
	for i := range 3 {
		var dt time.Duration
		name = tapName("r", i)
		d, dt = deleteTapWhileReading(t, h, name)
		if dt <= 100*time.Millisecond {
			took = nil
			break
		}
		took = append(took, dt)
	}
	if took != nil {
		t.Fatalf("the blocked Read woke %v after the tap was deleted in three tries, want within 100 ms", took)
	}
	select {
	case <-d.Gone():
	case <-time.After(5 * time.Second):
		t.Fatal("the remove uevent did not unregister the mirrored device")
	}
	if _, err := h.Find(byName(name)); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Find after removal = %v, want ENOENT", err)
	}
	for _, x := range h.Bus().Devices() {
		if x == d.Device() {
			t.Fatal("the removed tap is still on the Host's bus")
		}
	}
}

// deleteTapWhileReading creates tap name, blocks a Read on it through h,
// deletes the link, checks that the Read returns ENODEV, and returns the
// device and how long after the deletion the Read returned.
func deleteTapWhileReading(t *testing.T, h *hostdev.Host, name string) (*hostdev.Device, time.Duration) {
	createTap(t, name)
	d := wait(t, h, byName(name))
	f, err := h.Open(d, attachTap)
	if err != nil {
		t.Fatalf("Open %v: %v", d, err)
	}
	defer closeOrFail(t, f)
	type result struct {
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		_, err := f.Read(make([]byte, 2048))
		done <- result{err, time.Now()}
	}()
	time.Sleep(20 * time.Millisecond)
	gone := time.Now()
	deleteLink(t, d.Prop("IFINDEX"))
	select {
	case r := <-done:
		if !errors.Is(r.err, syscall.ENODEV) {
			t.Fatalf("a Read blocked when the tap went returned %v, want ENODEV", r.err)
		}
		return d, r.at.Sub(gone)
	case <-time.After(time.Second):
		t.Fatal("a Read blocked when the tap went is still blocked after 1 s")
	}
	return d, 0
}

func TestReplugUnderNewNameIsFoundByStableKey(t *testing.T) {
	needTun(t)
	h, _ := newHost(t, "net")
	mac := [6]byte{0x02, 0x5e, 0x7e, byte(os.Getpid() >> 16), byte(os.Getpid() >> 8), byte(os.Getpid())}
	key := hostdev.Key{Subsystem: "net", Attrs: map[string]string{"address": "02:5e:7e:" +
		hex2(mac[3]) + ":" + hex2(mac[4]) + ":" + hex2(mac[5])}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	first, second := tapName("a", 0), tapName("b", 0)
	createTap(t, first)
	setMAC(t, first, mac)
	old, err := h.OpenKey(ctx, key, attachTap)
	if err != nil {
		t.Fatalf("OpenKey %v with %s present: %v", key, first, err)
	}
	defer closeOrFail(t, old)
	d1 := wait(t, h, byName(first))
	deleteLink(t, d1.Prop("IFINDEX")) // unplugged
	<-d1.Gone()

	createTap(t, second) // plugged again, under another name
	setMAC(t, second, mac)
	fresh, err := h.OpenKey(ctx, key, attachTap)
	if err != nil {
		t.Fatalf("OpenKey %v after the re-plug as %s: %v", key, second, err)
	}
	defer closeOrFail(t, fresh)
	d2, err := h.Find(key)
	if err != nil || d2.Prop("INTERFACE") != second {
		t.Fatalf("the key finds %v, %v; want the device re-plugged as %s", d2, err, second)
	}
	if err := fresh.Control(func(uintptr) error { return nil }); err != nil {
		t.Fatalf("the fresh handle does not work: %v", err)
	}
	if _, err := old.Write(make([]byte, 60)); !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("the old handle's Write = %v, want ENODEV: it must stay a shell", err)
	}
	deleteLink(t, d2.Prop("IFINDEX"))
	<-d2.Gone()
}

func hex2(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}

func TestHostCloseSeversHandles(t *testing.T) {
	needTun(t)
	core := device.NewCore("host", nil)
	defer func() {
		if err := core.Shutdown(context.Background()); err != nil {
			t.Errorf("Core.Shutdown: %v", err)
		}
	}()
	h, err := hostdev.New(context.Background(), hostdev.Config{Core: core, Subsystems: []string{"net"}})
	if err != nil {
		t.Skipf("cannot watch the host's devices here: %v", err)
	}
	name := tapName("c", 0)
	createTap(t, name)
	d := wait(t, h, byName(name))
	defer deleteLink(t, d.Prop("IFINDEX"))
	f, err := h.Open(d, attachTap)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOrFail(t, f)
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.Err(); !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("after Host.Close the handle's Err is %v, want ENODEV", err)
	}
	if _, err := h.Wait(context.Background(), byName(name)); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("Wait on a closed Host = %v, want EBADF", err)
	}
}

func TestThousandTapCyclesLeaveNothingBehind(t *testing.T) {
	needTun(t)
	cycles := 1000
	if testing.Short() {
		cycles = 50
	}
	h, _ := newHost(t, "net")
	devsBefore, busBefore := len(h.Devices()), len(h.Bus().Devices())
	fdsBefore, gBefore := fdCount(t), runtime.NumGoroutine()
	for i := range cycles {
		name := tapName("x", i)
		createTap(t, name)
		d := wait(t, h, byName(name))
		f, err := h.Open(d, attachTap)
		if err != nil {
			t.Fatalf("cycle %d: Open %s: %v", i, name, err)
		}
		deleteLink(t, d.Prop("IFINDEX"))
		select {
		case <-f.Gone():
		case <-time.After(5 * time.Second):
			t.Fatalf("cycle %d: the handle on %s did not sever when it was deleted", i, name)
		}
		if _, err := f.Write(make([]byte, 60)); !errors.Is(err, syscall.ENODEV) {
			t.Fatalf("cycle %d: Write on the severed handle = %v, want ENODEV", i, err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("cycle %d: Close: %v", i, err)
		}
		<-d.Gone()
	}
	if n := len(h.Devices()); n != devsBefore {
		t.Errorf("the Host knows %d devices after the cycles, %d before", n, devsBefore)
	}
	if n := len(h.Bus().Devices()); n != busBefore {
		t.Errorf("the bus has %d devices after the cycles, %d before", n, busBefore)
	}
	if n := fdCount(t); n != fdsBefore {
		t.Errorf("%d descriptors open after %d cycles, %d before", n, cycles, fdsBefore)
	}
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() > gBefore && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > gBefore {
		t.Errorf("%d goroutines after %d cycles, %d before", n, cycles, gBefore)
	}
}

func TestOpenKeyWaitsOutADeviceGoingAndOpensTheNext(t *testing.T) {
	needTun(t)
	h, _ := newHost(t, "net")
	name := tapName("k", 0)
	createTap(t, name)
	first := wait(t, h, byName(name))
	calls := 0
	replugged := make(chan struct{})
	open := func(d *hostdev.Device) (int, error) {
		calls++
		if calls == 1 {
			// The device goes between Wait and Open; the open fails as
			// the kernel would fail it. It comes back under the same key.
			deleteLink(t, d.Prop("IFINDEX"))
			go func() {
				<-first.Gone()
				createTap(t, name)
				close(replugged)
			}()
			return -1, syscall.ENOENT
		}
		// The new tap's add uevent comes from inside TUNSETIFF, before
		// createTap let go of it; attaching before then is EBUSY.
		<-replugged
		return attachTap(d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := h.OpenKey(ctx, byName(name), open)
	if err != nil {
		t.Fatalf("OpenKey after the device went mid-open: %v, want a handle on the re-plugged one", err)
	}
	defer closeOrFail(t, f)
	d, _ := h.Find(byName(name))
	if d == first || calls != 2 {
		t.Fatalf("OpenKey opened %v after %d opens; want the new device, on the second open", d, calls)
	}
	deleteLink(t, d.Prop("IFINDEX"))
	<-d.Gone()
}

func TestDevNodeOfAnInterfaceIsInvalid(t *testing.T) {
	h, _ := newHost(t, "net")
	if _, err := h.OpenKey(context.Background(), hostdev.Key{Devpath: "/devices/virtual/net/lo"}, hostdev.DevNode(os.O_RDWR)); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("OpenKey of lo with DevNode = %v, want EINVAL at once", err)
	}
}

func TestVethPairComesAndGoesOnTheBus(t *testing.T) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("needs ip from iproute2 to make veth pairs (apt-get install iproute2)")
	}
	needTun(t) // the same privilege: CAP_NET_ADMIN
	h, core := newHost(t, "net")
	a, b := tapName("va", 0), tapName("vb", 0)
	if out, err := exec.Command(ip, "link", "add", a, "type", "veth", "peer", "name", b).CombinedOutput(); err != nil {
		t.Skipf("the kernel refused a veth pair (no veth module?): %v: %s", err, out)
	}
	da, db := wait(t, h, byName(a)), wait(t, h, byName(b))
	f, err := core.Sysfs().Open(da.Device().Path()+"/IFINDEX", os.O_RDONLY)
	if err != nil {
		t.Fatalf("the mirrored veth end has no IFINDEX attribute: %v", err)
	}
	got, _ := io.ReadAll(f)
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	if string(got) != da.Prop("IFINDEX")+"\n" {
		t.Fatalf("IFINDEX reads %q, want %q", got, da.Prop("IFINDEX"))
	}
	if out, err := exec.Command(ip, "link", "del", a).CombinedOutput(); err != nil {
		t.Fatalf("ip link del %s: %v: %s", a, err, out)
	}
	for _, d := range []*hostdev.Device{da, db} { // deleting one end deletes both
		select {
		case <-d.Gone():
		case <-time.After(5 * time.Second):
			t.Fatalf("%v still on the bus 5 s after the pair was deleted", d)
		}
	}
}

func TestCloseFromOnGoneOnTheRemovalPathReturns(t *testing.T) {
	needTun(t)
	h, _ := newHost(t, "net")
	name := tapName("g", 0)
	createTap(t, name)
	d := wait(t, h, byName(name))
	f, err := h.Open(d, attachTap)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	f.OnGone(func() { closed <- f.Close() }) // runs on the Host's event goroutine, inside Unregister
	deleteLink(t, d.Prop("IFINDEX"))
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close from OnGone: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close called from OnGone on the device's removal path did not return")
	}
	select {
	case <-d.Gone():
	case <-time.After(5 * time.Second):
		t.Fatal("the removal path did not finish after OnGone closed the handle")
	}
}
