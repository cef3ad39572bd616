package fuse

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// MountOptions configure Mount.
type MountOptions struct {
	// FSName is the mount's source, as mount(8) and /proc/mounts show it;
	// its type is fuse.FSName. Default "fuse".
	FSName string
	// DefaultPermissions makes the kernel check each node's mode bits
	// against the caller, so the server need not.
	DefaultPermissions bool
	// AllowOther lets users other than the mounter in (for a mount made
	// through fusermount3 by a non-root user, /etc/fuse.conf must say
	// user_allow_other).
	AllowOther bool
	// Readers is how many goroutines wait for requests when none is being
	// served; default 1. More are started while requests take long (see
	// Conn.Serve).
	Readers int
	// MaxWrite is the largest WRITE the kernel sends; default 128 KiB.
	MaxWrite int
	// NoHelper forbids falling back to fusermount3: Mount fails unless the
	// process may call mount(2) itself. For tests of that path.
	NoHelper bool
	// Blocking makes every reader block in read(2) on its own clone of the
	// descriptor (FUSE_DEV_IOC_CLONE), as libfuse's threads do, instead of
	// taking turns on the one descriptor through the runtime's poller.
	Blocking bool
	// NoDirect skips mount(2) and goes straight to fusermount3. For tests
	// of that path.
	NoDirect bool
}

// Mount mounts a FUSE file system on dir, an existing directory, and
// answers the kernel's INIT, so that when it returns the mount is ready
// for Serve. As root (more precisely: where mount(2) of type fuse is
// permitted) it mounts directly; otherwise, or if that is refused, through
// fusermount3 found in PATH. The error names what failed and, where
// nothing can mount, what to install.
func Mount(dir string, o MountOptions) (*Conn, error) {
	if o.FSName == "" {
		o.FSName = "fuse"
	}
	if o.Readers <= 0 {
		o.Readers = 1
	}
	if o.MaxWrite <= 0 {
		o.MaxWrite = defaultMaxPage * pageSize
	}
	o.MaxWrite = min(max(o.MaxWrite, pageSize), 1<<20)
	var fd int
	var err error
	helper := false
	switch {
	case !o.NoDirect && (os.Geteuid() == 0 || o.NoHelper):
		fd, err = mountDirect(dir, o)
		if err != nil && !o.NoHelper && errors.Is(err, syscall.EPERM) {
			if _, lerr := exec.LookPath("fusermount3"); lerr == nil {
				fd, err = mountHelper(dir, o)
				helper = true
			}
		}
	case o.NoHelper:
		return nil, fmt.Errorf("fuse: mount %s: direct mount disabled and helper forbidden: %w", dir, syscall.EINVAL)
	default:
		fd, err = mountHelper(dir, o)
		helper = true
	}
	if err != nil {
		return nil, err
	}
	c := &Conn{dir: dir, fd: fd, helper: helper, maxWrite: o.MaxWrite, readers: o.Readers, served: make(chan struct{})}
	if err := c.init(); err != nil {
		// The init error is the one that matters; an unmount or close
		// failing too joins it.
		uerr := c.Unmount(true)
		c.closed = true
		return nil, errors.Join(err, uerr, syscall.Close(fd))
	}
	if !o.Blocking {
		if err := syscall.SetNonblock(fd, true); err == nil {
			c.file = os.NewFile(uintptr(fd), "/dev/fuse")
		}
	}
	return c, nil
}

// mountDirect opens /dev/fuse and calls mount(2).
func mountDirect(dir string, o MountOptions) (int, error) {
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("fuse: open /dev/fuse (load the fuse module, or give the container the device): %w", err)
	}
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=%d,group_id=%d", fd, os.Getuid(), os.Getgid())
	if o.DefaultPermissions {
		data += ",default_permissions"
	}
	if o.AllowOther {
		data += ",allow_other"
	}
	if err := syscall.Mount(o.FSName, dir, "fuse."+o.FSName, syscall.MS_NOSUID|syscall.MS_NODEV, data); err != nil {
		_ = syscall.Close(fd) // never mounted: the mount error is the news
		return -1, fmt.Errorf("fuse: mount(2) %s: %w", dir, err)
	}
	return fd, nil
}

// mountHelper runs fusermount3, which mounts and passes the /dev/fuse
// descriptor back over a socket (the protocol of libfuse's helper).
func mountHelper(dir string, o MountOptions) (int, error) {
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		return -1, fmt.Errorf("fuse: mount %s: not root and no fusermount3 (install the fuse3 package): %w", dir, syscall.EPERM)
	}
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("fuse: socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(pair[0]), "fusermount3-ours")
	theirs := os.NewFile(uintptr(pair[1]), "fusermount3-theirs")
	defer func() { _ = ours.Close() }() // our end of the socket only carried the descriptor
	opts := []string{"fsname=" + o.FSName, "subtype=" + o.FSName}
	if o.DefaultPermissions {
		opts = append(opts, "default_permissions")
	}
	if o.AllowOther {
		opts = append(opts, "allow_other")
	}
	cmd := exec.Command(bin, "-o", strings.Join(opts, ","), "--", dir)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.Env = append(os.Environ(), "_FUSE_COMMFD=3")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		_ = theirs.Close() // the start error is the news
		return -1, fmt.Errorf("fuse: fusermount3: %w", err)
	}
	_ = theirs.Close() // the child has its copy; ours only had to reach it
	buf := make([]byte, 1)
	oob := make([]byte, syscall.CmsgSpace(4))
	n, oobn, _, _, rerr := syscall.Recvmsg(int(ours.Fd()), buf, oob, 0)
	werr := cmd.Wait()
	if werr != nil || rerr != nil || n == 0 || oobn == 0 {
		msg := strings.TrimSpace(out.String())
		e := syscall.EIO
		if strings.Contains(strings.ToLower(msg), "permission denied") || strings.Contains(strings.ToLower(msg), "not permitted") {
			e = syscall.EPERM
		}
		return -1, fmt.Errorf("fuse: fusermount3 %s: %v: %s: %w", dir, errors.Join(werr, rerr), msg, e)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) == 0 {
		return -1, fmt.Errorf("fuse: fusermount3 %s: no descriptor passed: %w", dir, syscall.EIO)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) == 0 {
		return -1, fmt.Errorf("fuse: fusermount3 %s: no descriptor passed: %w", dir, syscall.EIO)
	}
	syscall.CloseOnExec(fds[0])
	return fds[0], nil
}

// init reads the kernel's INIT and answers it.
func (c *Conn) init() error {
	buf := make([]byte, c.bufSize())
	for {
		n, err := syscall.Read(c.fd, buf)
		if err == syscall.EINTR || err == syscall.EAGAIN || err == syscall.ENOENT {
			continue
		}
		if err != nil {
			return fmt.Errorf("fuse: %s: reading INIT: %w", c.dir, err)
		}
		h, body, err := parseHeader(buf[:n])
		if err != nil || h.Opcode != OpInit {
			return fmt.Errorf("fuse: %s: the kernel's first message is %v, not INIT: %w", c.dir, h.Opcode, syscall.EPROTO)
		}
		in, err := parseInit(body)
		r := &Request{Header: h, c: c, fd: c.fd, out: make([]byte, outHeaderSize+initOutSize)}
		if err != nil || in.Major < protoMajor || (in.Major == protoMajor && in.Minor < minMinor) {
			r.Reply(syscall.EPROTO)
			return fmt.Errorf("fuse: %s: kernel speaks FUSE %d.%d; need %d.%d or later: %w", c.dir, in.Major, in.Minor, protoMajor, minMinor, syscall.EPROTO)
		}
		if in.Major > protoMajor {
			// The kernel waits for our major and sends INIT again.
			b := r.payload(8)
			le.PutUint32(b[0:], protoMajor)
			le.PutUint32(b[4:], protoMinor)
			r.finish(0, 8)
			continue
		}
		c.minor = min(in.Minor, protoMinor)
		want := uint32(initAsyncRead | initAtomicOTrunc | initBigWrites | initParallelDirop | initMaxPages)
		b := r.payload(initOutSize)
		clear(b)
		le.PutUint32(b[0:], protoMajor)
		le.PutUint32(b[4:], c.minor)
		le.PutUint32(b[8:], in.MaxReadahead)
		le.PutUint32(b[12:], in.Flags&want)
		le.PutUint16(b[16:], 16) // max_background
		le.PutUint16(b[18:], 12) // congestion_threshold
		le.PutUint32(b[20:], uint32(c.maxWrite))
		le.PutUint32(b[24:], 1) // time_gran
		le.PutUint16(b[28:], uint16((c.maxWrite+pageSize-1)/pageSize))
		r.finish(0, initOutSize)
		return nil
	}
}

// Unmount unmounts the file system. Without force it fails with EBUSY
// while a process holds a file open or sits in a directory of the mount.
// With force, as root, it aborts the connection — processes' descriptors
// then fail with ENOTCONN, and Serve returns — and detaches the mount;
// without root it detaches the mount lazily (fusermount3 -u -z), and the
// connection lives on until those processes are done with it.
func (c *Conn) Unmount(force bool) error { return unmount(c.dir, force) }

func unmount(dir string, force bool) error {
	flags := 0
	if force {
		flags = syscall.MNT_FORCE | syscall.MNT_DETACH
	}
	err := syscall.Unmount(dir, flags)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("fuse: unmount %s: %w", dir, err)
	}
	args := []string{"-u"}
	if force {
		args = append(args, "-z")
	}
	out, herr := exec.Command("fusermount3", append(args, "--", dir)...).CombinedOutput()
	if herr == nil {
		return nil
	}
	msg := strings.TrimSpace(string(out))
	e := syscall.EIO
	if strings.Contains(msg, "busy") {
		e = syscall.EBUSY
	}
	return fmt.Errorf("fuse: fusermount3 -u %s: %v: %s: %w", dir, herr, msg, e)
}

// UnmountDetached detaches whatever is mounted on dir lazily (umount2
// MNT_DETACH, or fusermount3 -u -z without root), as for a stale mount
// whose server is gone.
func UnmountDetached(dir string) error {
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err == nil {
		return nil
	} else if !errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("fuse: unmount %s: %w", dir, err)
	}
	out, err := exec.Command("fusermount3", "-u", "-z", "--", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fuse: fusermount3 -u -z %s: %v: %s: %w", dir, err, strings.TrimSpace(string(out)), syscall.EIO)
	}
	return nil
}

// MountPoint is one FUSE mount listed in /proc/self/mountinfo.
type MountPoint struct {
	Dir    string // where it is mounted
	Type   string // fuse or fuse.NAME
	Source string
	Minor  int // the connection's number under /sys/fs/fuse/connections
}

// Mounts returns the FUSE mounts stacked on dir, bottom first, as
// /proc/self/mountinfo lists them.
func Mounts(dir string) ([]MountPoint, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return parseMountinfo(b, dir), nil
}

// parseMountinfo picks the FUSE mounts on dir out of mountinfo's text.
func parseMountinfo(b []byte, dir string) []MountPoint {
	var out []MountPoint
	for line := range strings.SplitSeq(string(b), "\n") {
		// id parent major:minor root mountpoint opts [optional...] - type source superopts
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+3 || UnescapeMountinfo(f[4]) != dir {
			continue
		}
		typ := f[sep+1]
		if typ != "fuse" && !strings.HasPrefix(typ, "fuse.") {
			continue
		}
		mp := MountPoint{Dir: dir, Type: typ, Source: UnescapeMountinfo(f[sep+2])}
		if _, mn, ok := strings.Cut(f[2], ":"); ok {
			mp.Minor, _ = strconv.Atoi(mn)
		}
		out = append(out, mp)
	}
	return out
}

// UnescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func UnescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// Available reports whether this process could mount: nil if /dev/fuse
// exists and the process is root (Mount then calls mount(2) itself) or
// fusermount3 is in PATH; otherwise an error saying what is missing and
// what to install. Tests that mount skip with it. Mount may still be
// refused (a container without CAP_SYS_ADMIN, /etc/fuse.conf).
func Available() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("fuse: no /dev/fuse (load the fuse module, or give the container the device): %w", err)
	}
	if os.Geteuid() == 0 {
		return nil
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return fmt.Errorf("fuse: not root and no fusermount3 (install fuse3): %w", err)
	}
	return nil
}
