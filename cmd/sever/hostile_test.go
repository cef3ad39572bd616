package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Hostile input from a real process: the test builds the sever command,
// runs `sever mount DIR` as its own process, and runs a second process (this
// test binary, re-executed as the helper below) that writes random and
// hostile bytes to every writable file of the mount and reads every file
// at random offsets, while a goroutine of that process plugs and unplugs
// boards and drives their input lines. Every answer must be an errno the
// file's kind documents (hostileAllowed), a rejected write must leave the
// file's value as it was, the server must not panic, and at its SIGTERM
// the machine must quiesce with nothing recorded by the checker.

// hostileEnv names the mount directory when the test binary runs as the
// hostile process.
const hostileEnv = "SEVER_HOSTILE_DIR"

func init() {
	if dir := os.Getenv(hostileEnv); dir != "" {
		os.Exit(hostileMain(dir))
	}
}

// hostileReport is what the hostile process prints (JSON) when it ends.
type hostileReport struct {
	Ops        int            // operations on files
	ByKind     map[string]int // bad inputs tried, by kind of input
	ByErrno    map[string]int // answers, by errno ("ok" for success)
	Unchanged  int            // rejected writes whose file was read back unchanged
	Plugs      int            // connects and disconnects done meanwhile
	Accepted   map[string]int // hostile writes a file took, by file and kind
	Undoc      []string       // answers no documented errno covers
	Changed    []string       // rejected writes that changed the file
	Stuck      string         // an operation that did not return
	FilesSeen  int
	WritableOf int
}

// fileClass is what documents a file's errnos.
type fileClass int

const (
	classAttr     fileClass = iota // a sysfs attribute (kernfs.Attr)
	classBin                       // a binary attribute (eeprom)
	classGpiochip                  // dev/gpiochipN's text protocol
	classUIO                       // dev/uio0
)

func hostileClassOf(rel string) fileClass {
	switch {
	case strings.HasPrefix(rel, "dev/gpiochip"):
		return classGpiochip
	case strings.HasPrefix(rel, "dev/uio"):
		return classUIO
	case strings.HasSuffix(rel, "/eeprom"):
		return classBin
	}
	return classAttr
}

// hostileAllowed lists, per file class and operation, the errnos the
// documentation promises (README "sever mount", DESIGN.md, kernfs and the
// drivers' package docs). Everywhere: ENOENT for a path removed before the
// open, ENODEV for a file whose node or device was severed (EIO for uio),
// EACCES for an open against the file's mode.
func hostileAllowed(c fileClass, op string) []syscall.Errno {
	common := []syscall.Errno{syscall.ENOENT, syscall.ENODEV, syscall.EACCES}
	switch {
	case op == "open", op == "close":
		return common
	case c == classAttr && op == "read":
		// a Show that refuses (a device whose state cannot be shown now)
		return append(common, syscall.EINVAL, syscall.EBUSY, syscall.EIO)
	case c == classAttr && op == "write":
		// malformed input, more than a page, refused while in use,
		// a device named that is not there, one already there
		return append(common, syscall.EINVAL, syscall.EFBIG, syscall.EBUSY, syscall.EEXIST, syscall.EIO)
	case c == classBin:
		// past the attribute's size
		return append(common, syscall.EFBIG, syscall.EINVAL, syscall.EIO)
	case c == classGpiochip:
		// malformed command, read before any command, line held elsewhere,
		// nothing to read on a non-blocking file; a char device is a
		// stream: pread and pwrite are ESPIPE (the kernel's answer to a
		// nonseekable open)
		return append(common, syscall.EINVAL, syscall.EBUSY, syscall.EAGAIN, syscall.ESPIPE)
	case c == classUIO:
		// a size other than 4, nothing to read yet, severed, a stream
		return append(common, syscall.EINVAL, syscall.EAGAIN, syscall.EIO, syscall.ESPIPE)
	}
	return common
}

// hostilePayload is one bad input: its kind, for the report, and the
// writes it makes (at their offsets).
type hostilePayload struct {
	kind   string
	writes []hostileWrite
}

type hostileWrite struct {
	b   []byte
	off int64
}

// hostileKinds is the number of kinds of bad input hostilePayload makes.
const hostileKinds = 10

// hostilePayload returns bad input of the given kind (0 to
// hostileKinds-1), its details drawn from rng.
func hostilePayloadOf(kind int, rng *rand.Rand) hostilePayload {
	one := func(kind string, b []byte) hostilePayload {
		return hostilePayload{kind, []hostileWrite{{b, 0}}}
	}
	huge := []string{"99999999999999999999999999", "-9223372036854775809", "18446744073709551616", "9223372036854775807", "-1", "0x" + strings.Repeat("f", 40), "1e308", "NaN"}
	dots := []string{"..", "../../../../etc/passwd", "/", "./../sys", "../cp2112", "sys/../..", "ahci.0/../../x"}
	words := []string{"cp2112", "add", "force", "lz4", "64M", "both", "request 3 both\n", "get 3\n"}
	switch kind {
	case 0:
		return one("empty", nil)
	case 1:
		return one("nul", []byte{0})
	case 2:
		return one("0xff", []byte(strings.Repeat("\xff", 1+rng.IntN(64))))
	case 3:
		return one("page+1", []byte(strings.Repeat("7", 4097)))
	case 4:
		return one("huge integer", []byte(huge[rng.IntN(len(huge))]))
	case 5:
		return one("dot-dot path", []byte(dots[rng.IntN(len(dots))]))
	case 6:
		b := make([]byte, 1+rng.IntN(300))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return one("random bytes", b)
	case 7:
		w := words[rng.IntN(len(words))]
		cut := 1 + rng.IntN(len(w)-1)
		return hostilePayload{"partial write", []hostileWrite{{[]byte(w[:cut]), 0}, {[]byte(w[cut:]), int64(cut)}}}
	case 8:
		offs := []int64{1, 3, 4095, 4096, 1 << 20, 1 << 40}
		return hostilePayload{"write at offset", []hostileWrite{{[]byte(huge[rng.IntN(len(huge))]), offs[rng.IntN(len(offs))]}}}
	default:
		return one("nul inside", []byte("1\x002"))
	}
}

// hostileMain is the hostile process: it runs for the duration in
// SEVER_HOSTILE_FOR on the mount at dir and prints a hostileReport.
func hostileMain(dir string) int {
	d, _ := time.ParseDuration(os.Getenv("SEVER_HOSTILE_FOR"))
	seed, _ := strconv.ParseUint(os.Getenv("SEVER_HOSTILE_SEED"), 10, 64)
	rng := rand.New(rand.NewPCG(seed, 12))
	rep := hostileReport{ByKind: map[string]int{}, ByErrno: map[string]int{}, Accepted: map[string]int{}}
	var mu sync.Mutex // guards rep between the file goroutine and the plugger
	// quiet is held by the plugger around each of its writes and by a
	// checked write from its first read to its last: a line toggle or a
	// replug between them would change the value without the rejected
	// write having done it.
	var quiet sync.Mutex
	stop := make(chan struct{})
	plugged := make(chan struct{})
	go func() { // the plugger: boards come and go, input lines toggle
		defer close(plugged)
		prng := rand.New(rand.NewPCG(seed, 13))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(5+prng.IntN(20)) * time.Millisecond):
			}
			port := 1 + prng.IntN(4)
			var err error
			if !quiet.TryLock() {
				continue // a checked write is under way; a stuck one must not stall the plugger too
			}
			switch prng.IntN(3) {
			case 0:
				err = os.WriteFile(filepath.Join(dir, fmt.Sprintf("sys/bus/usb/ports/%d/connect", port)), []byte("cp2112\n"), 0)
			case 1:
				err = os.WriteFile(filepath.Join(dir, fmt.Sprintf("sys/bus/usb/ports/%d/disconnect", port)), []byte("1\n"), 0)
			default:
				err = os.WriteFile(filepath.Join(dir, fmt.Sprintf("sys/bus/usb/ports/%d/sim/line%d", port, prng.IntN(8))), []byte(strconv.Itoa(prng.IntN(2))), 0)
			}
			quiet.Unlock()
			mu.Lock()
			if err == nil {
				rep.Plugs++
			}
			mu.Unlock()
		}
	}()

	// Every operation runs under a watchdog: one that does not return
	// within 10s is a stuck request.
	type result struct{}
	watch := func(what string, f func()) bool {
		done := make(chan result, 1)
		go func() { f(); done <- result{} }()
		select {
		case <-done:
			return true
		case <-time.After(10 * time.Second):
			mu.Lock()
			rep.Stuck = what
			mu.Unlock()
			return false
		}
	}
	note := func(rel, op, what string, err error) {
		c := hostileClassOf(rel)
		name := "ok"
		if err != nil {
			var e syscall.Errno
			if !errors.As(err, &e) {
				rep.Undoc = append(rep.Undoc, fmt.Sprintf("%s %s %s: %v (no errno)", op, rel, what, err))
				return
			}
			name = hostileErrno(e)
			if !slices.Contains(hostileAllowed(c, op), e) {
				rep.Undoc = append(rep.Undoc, fmt.Sprintf("%s %s %s: %s", op, rel, what, name))
			}
		}
		rep.ByErrno[op+" "+name]++
	}

	// First a sweep — every file read, every writable file given every
	// kind of bad input once — then random choices until the time is up.
	type step struct {
		rel          string
		action, kind int
	}
	var sweep []step
	files := hostileList(dir)
	rep.FilesSeen = len(files)
	for _, rel := range files {
		sweep = append(sweep, step{rel, 1, 0})
		for k := range hostileKinds {
			sweep = append(sweep, step{rel, 2, k})
		}
	}
	end := time.Now().Add(d)
	for (len(sweep) > 0 || time.Now().Before(end)) && rep.Stuck == "" {
		var st step
		if len(sweep) > 0 {
			st, sweep = sweep[0], sweep[1:]
		} else {
			if rep.Ops%200 == 0 { // the tree changes under the plugger: list it again
				files = hostileList(dir)
				rep.FilesSeen = max(rep.FilesSeen, len(files))
			}
			if len(files) == 0 {
				break
			}
			st = step{files[rng.IntN(len(files))], rng.IntN(4), rng.IntN(hostileKinds)}
		}
		rel := st.rel
		path := filepath.Join(dir, rel)
		c := hostileClassOf(rel)
		flags := syscall.O_NONBLOCK // a char device's read never sleeps here
		mu.Lock()
		rep.Ops++
		mu.Unlock()
		switch st.action {
		case 0: // a hostile name under a real directory
			name := []string{"..\xff", "a\x01b", strings.Repeat("n", 300), "...", " "}[rng.IntN(5)]
			bad := filepath.Join(filepath.Dir(path), name)
			var err error
			watch("open "+bad, func() {
				var fd int
				fd, err = syscall.Open(bad, syscall.O_RDONLY|flags, 0)
				if err == nil {
					_ = syscall.Close(fd) // it should not have opened: reported below
				}
			})
			mu.Lock()
			rep.ByKind["hostile name"]++
			if err == nil || (!errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENAMETOOLONG)) {
				rep.Undoc = append(rep.Undoc, fmt.Sprintf("open of hostile name %q: %v; want ENOENT or ENAMETOOLONG", bad, err))
			}
			mu.Unlock()
		case 1: // a read at a random offset, of a random size
			offs := []int64{0, 1, 2, 7, 4095, 4096, 4097, 1 << 20, 1 << 40, 1 << 62, rng.Int64N(1 << 16)}
			off, size := offs[rng.IntN(len(offs))], []int{1, 3, 4, 5, 64, 4096, 65536}[rng.IntN(7)]
			var oerr, rerr, cerr error
			ok := watch(fmt.Sprintf("pread %s %d@%d", rel, size, off), func() {
				fd, err := syscall.Open(path, syscall.O_RDONLY|flags, 0)
				if oerr = err; err != nil {
					return
				}
				defer func() { cerr = syscall.Close(fd) }()
				if off == 0 { // plain read(2): a char device's way
					_, rerr = syscall.Read(fd, make([]byte, size))
				} else {
					_, rerr = syscall.Pread(fd, make([]byte, size), off)
				}
			})
			if !ok {
				break
			}
			mu.Lock()
			rep.ByKind["read at offset"]++
			note(rel, "open", "for reading", oerr)
			if oerr == nil {
				note(rel, "read", fmt.Sprintf("%d bytes at %d", size, off), rerr)
				note(rel, "close", "after a read", cerr)
			}
			mu.Unlock()
		default: // hostile bytes to a writable file
			fi, err := os.Lstat(path)
			if err != nil || fi.Mode().Perm()&0o222 == 0 {
				continue
			}
			p := hostilePayloadOf(st.kind, rng)
			readable := fi.Mode().Perm()&0o444 != 0 && c == classAttr
			var before, before2 []byte
			var werrs []error
			var oerr, aerr, cerr error
			var after []byte
			ok := watch(fmt.Sprintf("write %s %s", rel, p.kind), func() {
				if readable && len(p.writes) == 1 {
					quiet.Lock()
					defer quiet.Unlock()
					before, _ = os.ReadFile(path)
					before2, _ = os.ReadFile(path)
				}
				fd, err := syscall.Open(path, syscall.O_WRONLY|flags, 0)
				if oerr = err; err != nil {
					return
				}
				for _, w := range p.writes {
					var err error
					if w.off == 0 || (c != classAttr && c != classBin) {
						_, err = syscall.Write(fd, w.b) // a stream's pieces follow each other
					} else {
						_, err = syscall.Pwrite(fd, w.b, w.off)
					}
					werrs = append(werrs, err)
				}
				cerr = syscall.Close(fd)
				if readable && len(p.writes) == 1 && werrs[0] != nil {
					after, aerr = os.ReadFile(path)
				}
			})
			if !ok {
				break
			}
			mu.Lock()
			rep.ByKind[p.kind]++
			note(rel, "open", "for writing", oerr)
			if oerr == nil {
				note(rel, "close", "after writes", cerr)
			}
			for i, werr := range werrs {
				note(rel, "write", fmt.Sprintf("%s %q at %d", p.kind, hostileTrunc(p.writes[i].b), p.writes[i].off), werr)
				if werr == nil {
					rep.Accepted[hostileGeneric(rel)+": "+p.kind]++
				}
			}
			// A rejected write changes nothing: compare with what the file
			// said before it (when it said the same twice: not a value that
			// moves by itself, such as a pressure average).
			if len(werrs) == 1 && werrs[0] != nil && aerr == nil && before != nil && string(before) == string(before2) {
				if string(after) != string(before) {
					rep.Changed = append(rep.Changed, fmt.Sprintf("%s: %q rejected (%v), but %q became %q", rel, hostileTrunc(p.writes[0].b), werrs[0], before, after))
				} else {
					rep.Unchanged++
				}
			}
			mu.Unlock()
		}
	}
	close(stop)
	<-plugged
	rep.WritableOf = 0
	for _, f := range files {
		if st, err := os.Lstat(filepath.Join(dir, f)); err == nil && st.Mode().Perm()&0o222 != 0 {
			rep.WritableOf++
		}
	}
	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
	if rep.Stuck != "" {
		return 3
	}
	return 0
}

// hostileList lists the regular files under dir/sys and dir/dev, relative
// to dir, without following symlinks (sysfs's links loop).
func hostileList(dir string) []string {
	var files []string
	for _, top := range []string{"sys", "dev"} {
		_ = filepath.WalkDir(filepath.Join(dir, top), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // removed under the walk: skip it
			}
			if d.Type().IsRegular() {
				rel, _ := filepath.Rel(dir, p)
				files = append(files, rel)
			}
			return nil
		})
	}
	return files
}

// hostileGeneric names a file without its instance numbers, so that
// gpiochip3 and gpiochip7 count together.
func hostileGeneric(rel string) string {
	b := []byte(rel)
	out := b[:0]
	for i, c := range b {
		if c >= '0' && c <= '9' && i > 0 && b[i-1] >= '0' && b[i-1] <= '9' {
			continue
		}
		if c >= '0' && c <= '9' {
			c = 'N'
		}
		out = append(out, c)
	}
	return string(out)
}

func hostileTrunc(b []byte) string {
	if len(b) > 24 {
		return string(b[:24]) + "…"
	}
	return string(b)
}

func hostileErrno(e syscall.Errno) string {
	names := map[syscall.Errno]string{syscall.ENOENT: "ENOENT", syscall.ENODEV: "ENODEV", syscall.EACCES: "EACCES",
		syscall.EINVAL: "EINVAL", syscall.EBUSY: "EBUSY", syscall.EEXIST: "EEXIST", syscall.EFBIG: "EFBIG",
		syscall.EIO: "EIO", syscall.EAGAIN: "EAGAIN", syscall.EPERM: "EPERM", syscall.ENOTCONN: "ENOTCONN",
		syscall.EINTR: "EINTR", syscall.ENOSYS: "ENOSYS", syscall.EISDIR: "EISDIR", syscall.ENOTDIR: "ENOTDIR",
		syscall.EROFS: "EROFS", syscall.ENAMETOOLONG: "ENAMETOOLONG", syscall.EOPNOTSUPP: "EOPNOTSUPP", syscall.ENOTTY: "ENOTTY", syscall.ESPIPE: "ESPIPE"}
	if n, ok := names[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

// serverProc is `sever mount DIR` running as its own process.
type serverProc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	dir            string
	exited         chan struct{} // closed once the process has ended
}

// startServerProc builds the command and runs `sever mount DIR`; it skips
// the test, saying what to install, when FUSE cannot mount here.
func startServerProc(t *testing.T) *serverProc {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse, so no FUSE mount here (load the fuse module; install fuse3 for fusermount3): %v", err)
	}
	bin := filepath.Join(t.TempDir(), "sever")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	s := &serverProc{dir: filepath.Join(t.TempDir(), "mnt"), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	s.cmd = exec.Command(bin, "mount", s.dir)
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	exited := s.exited
	go func() { _ = s.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-exited
		if mounted, _ := isMountPoint(s.dir); mounted {
			_ = exec.Command("fusermount3", "-u", "-z", s.dir).Run()
			_ = syscall.Unmount(s.dir, syscall.MNT_DETACH)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(s.stdout.String(), "serving") {
		select {
		case <-exited:
			msg := s.stderr.String()
			if notPermitted(msg) || strings.Contains(msg, "fusermount") {
				t.Skipf("FUSE cannot mount here (install fuse3 for fusermount3, or run as root): %s", msg)
			}
			t.Fatalf("sever mount exited before serving:\n%s%s", s.stdout.String(), msg)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sever mount did not serve within 60s:\n%s%s", s.stdout.String(), s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func (s *serverProc) ended() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and returns the exit code once the server ends.
func (s *serverProc) stop(t *testing.T) int {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v (the server died?)\n%s%s", err, s.stdout.String(), s.stderr.String())
	}
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("sever mount did not exit within 60s of SIGTERM:\n%s%s", s.stdout.String(), s.stderr.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

// TestHostileInputFromAProcessChangesNothingAndBreaksNothing is the
// contract against bad input from a real process (see the top of this
// file). SEVER_HOSTILE_FOR sets how long the hostile process runs (default
// 8s) and SEVER_HOSTILE_SEED its choices (default: drawn, and logged).
func TestHostileInputFromAProcessChangesNothingAndBreaksNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server and a hostile process for several seconds")
	}
	srv := startServerProc(t)
	dur := os.Getenv("SEVER_HOSTILE_FOR")
	if dur == "" {
		dur = "8s"
	}
	seed := os.Getenv("SEVER_HOSTILE_SEED")
	if seed == "" {
		seed = strconv.FormatUint(rand.Uint64()>>1, 10)
	}
	t.Logf("hostile process: SEVER_HOSTILE_SEED=%s SEVER_HOSTILE_FOR=%s (set them to replay its choices)", seed, dur)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := exec.Command(self)
	h.Env = append(os.Environ(), hostileEnv+"="+srv.dir, "SEVER_HOSTILE_FOR="+dur, "SEVER_HOSTILE_SEED="+seed)
	out, herr := h.Output()
	var rep hostileReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("hostile process: %v, output %q: %v\nserver:\n%s%s", herr, out, err, srv.stdout.String(), srv.stderr.String())
	}
	if rep.Stuck != "" {
		t.Errorf("a request did not return within 10s: %s", rep.Stuck)
	} else if herr != nil {
		var stderr []byte
		if ee, ok := herr.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Errorf("hostile process: %v\n%s", herr, stderr)
	}
	if srv.ended() {
		t.Fatalf("the server exited during the hostile run:\n%s%s", srv.stdout.String(), srv.stderr.String())
	}
	code := srv.stop(t)
	sout, serr := srv.stdout.String(), srv.stderr.String()
	if code != 0 || !strings.Contains(sout, "quiesced clean") {
		t.Errorf("sever mount exited %d; want 0 and a clean machine (the checker recorded nothing):\n%s%s", code, sout, serr)
	}
	if strings.Contains(serr, "panic") || strings.Contains(sout, "panic") {
		t.Errorf("the server reported a panic:\n%s%s", sout, serr)
	}
	for _, u := range hostileFirstN(rep.Undoc, 20) {
		t.Errorf("an answer no documented errno covers: %s", u)
	}
	for _, c := range hostileFirstN(rep.Changed, 20) {
		t.Errorf("a rejected write changed the file: %s", c)
	}
	var kinds, errnos []string
	for k, n := range rep.ByKind {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	for k, n := range rep.ByErrno {
		errnos = append(errnos, fmt.Sprintf("%s %d", k, n))
	}
	var accepted []string
	for k, n := range rep.Accepted {
		accepted = append(accepted, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kinds)
	sort.Strings(errnos)
	sort.Strings(accepted)
	t.Logf("hostile writes a file took (a value it accepts, or bytes a binary attribute stores):\n\t%s", strings.Join(accepted, "\n\t"))
	t.Logf("%d operations on %d files (%d writable), %d plugs/unplugs/line toggles meanwhile; %d rejected writes read back unchanged\ninputs: %s\nanswers: %s",
		rep.Ops, rep.FilesSeen, rep.WritableOf, rep.Plugs, rep.Unchanged, strings.Join(kinds, ", "), strings.Join(errnos, ", "))
	if rep.Ops < 100 || rep.Plugs == 0 {
		t.Errorf("the hostile process did too little to prove anything: %d operations, %d plugs", rep.Ops, rep.Plugs)
	}
}

func hostileFirstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("... and %d more", len(s)-n))
	}
	return s
}
