package hostdev_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sever-dev/sever/hostdev"
)

// tapName returns a name for a test's tap that no other process's test
// uses: other packages' tests may make network devices at the same time,
// and a Host sees theirs too.
func tapName(tag string, i int) string {
	return fmt.Sprintf("hd%d%s%d", os.Getpid()%100000, tag, i)
}

// ifreq is struct ifreq: a name and a 24-byte union.
type ifreq struct {
	name [unix.IFNAMSIZ]byte
	data [24]byte
}

func newIfreq(name string) *ifreq {
	var r ifreq
	copy(r.name[:], name)
	return &r
}

func ioctl(fd uintptr, req uint, r *ifreq) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(unsafe.Pointer(r))); e != 0 {
		return e
	}
	return nil
}

// needTun skips the test unless this process may make tap devices.
func needTun(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("cannot make tap devices (needs root or CAP_NET_ADMIN and /dev/net/tun): %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// createTap makes a persistent tap device named name: its "add" uevent is
// real, and it stays after this function closes its descriptor.
func createTap(t testing.TB, name string) {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/net/tun: %v", err)
	}
	defer func() { _ = unix.Close(fd) }() // the tap goes with it; a failing close leaves nothing to check
	r := newIfreq(name)
	binary.NativeEndian.PutUint16(r.data[:], unix.IFF_TAP|unix.IFF_NO_PI)
	if err := ioctl(uintptr(fd), unix.TUNSETIFF, r); err != nil {
		t.Fatalf("TUNSETIFF %s: %v", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		t.Fatalf("TUNSETPERSIST %s: %v", name, err)
	}
}

// setMAC sets name's hardware address, as a stable key to find it by.
func setMAC(t testing.TB, name string, mac [6]byte) {
	t.Helper()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(s) }() // an ioctl socket: nothing to lose at close
	r := newIfreq(name)
	binary.NativeEndian.PutUint16(r.data[:], unix.ARPHRD_ETHER)
	copy(r.data[2:], mac[:])
	if err := ioctl(uintptr(s), unix.SIOCSIFHWADDR, r); err != nil {
		t.Fatalf("SIOCSIFHWADDR %s: %v", name, err)
	}
}

// deleteLink removes the network device with index ifindex through
// rtnetlink (RTM_DELLINK, what `ip link del` sends): the kernel detaches
// every descriptor attached to a tap and sends its "remove" uevent.
func deleteLink(t testing.TB, ifindex string) {
	t.Helper()
	idx, err := strconv.Atoi(ifindex)
	if err != nil {
		t.Fatalf("IFINDEX %q: %v", ifindex, err)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }() // a netlink request socket: nothing to lose at close
	msg := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfInfomsg)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.RTM_DELLINK)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], 1)
	ne.PutUint32(msg[unix.SizeofNlMsghdr+4:], uint32(idx))
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatalf("RTM_DELLINK: %v", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		t.Fatalf("RTM_DELLINK ack: %v", err)
	}
	if n >= unix.SizeofNlMsghdr+4 && ne.Uint16(buf[4:]) == unix.NLMSG_ERROR {
		if e := int32(ne.Uint32(buf[unix.SizeofNlMsghdr:])); e != 0 {
			t.Fatalf("RTM_DELLINK of %d: %v", idx, unix.Errno(-e))
		}
	}
}

// attachTap is the OpenFunc of a tap: a queue of /dev/net/tun attached to
// the interface the device is.
func attachTap(d *hostdev.Device) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	r := newIfreq(d.Prop("INTERFACE"))
	binary.NativeEndian.PutUint16(r.data[:], unix.IFF_TAP|unix.IFF_NO_PI)
	if err := ioctl(uintptr(fd), unix.TUNSETIFF, r); err != nil {
		_ = unix.Close(fd) // never handed out: the ioctl error is the news
		return -1, fmt.Errorf("TUNSETIFF %s: %w", d.Prop("INTERFACE"), err)
	}
	return fd, nil
}
