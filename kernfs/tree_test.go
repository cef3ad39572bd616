package kernfs_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/kernfs"
)

// Rule: malformed input returns EINVAL and changes nothing; a write of more
// than a page is rejected; one trailing newline is trimmed.
func TestMalformedInputIsRejectedAndChangesNothing(t *testing.T) {
	tr, _ := checked(t)
	var stores []any
	add := func(name string, p kernfs.Parser) {
		must[*kernfs.Node](t)(tr.AddAttr(tr.Root(), kernfs.Attr{
			Name: name, Parse: p,
			Store: func(_ *kernfs.Call, v any) error { stores = append(stores, v); return nil },
		}))
	}
	add("int", kernfs.Int(-5, 10))
	add("bool", kernfs.Bool())
	add("enum", kernfs.Enum("none", "mq-deadline"))
	add("str", kernfs.String(4))
	add("raw", nil)
	add("custom", func(s string) (any, error) {
		if s != "ok" {
			return nil, errors.New("not ok")
		}
		return 1, nil
	})
	cases := []struct {
		file, in string
		want     any // nil: rejected with EINVAL
	}{
		{"int", "7\n", int64(7)}, {"int", "0x0a", int64(10)}, {"int", "-5", int64(-5)},
		{"int", "11", nil}, {"int", "abc", nil}, {"int", "7\n\n", nil}, {"int", " 7", nil}, {"int", "", nil},
		{"bool", "Y\n", true}, {"bool", "off", false}, {"bool", "2", nil},
		{"enum", "none\n", "none"}, {"enum", "None", nil},
		{"str", "abcd\n", "abcd"}, {"str", "abcde", nil}, {"str", "a\x00", nil},
		{"raw", "anything\n", "anything"},
		{"custom", "ok\n", 1}, {"custom", "no", nil},
	}
	for _, c := range cases {
		stores = nil
		f := must[*kernfs.File](t)(tr.Open("/"+c.file, os.O_WRONLY))
		n, err := f.Write([]byte(c.in))
		closeOK(t, f)
		if c.want == nil {
			if !errors.Is(err, syscall.EINVAL) || n != 0 || len(stores) != 0 {
				t.Errorf("%s <- %q: n=%d err=%v stores=%v; want EINVAL and no Store", c.file, c.in, n, err, stores)
			}
			continue
		}
		if err != nil || len(stores) != 1 || stores[0] != c.want || n != len(c.in) {
			t.Errorf("%s <- %q: n=%d err=%v stores=%v; want one Store of %#v", c.file, c.in, n, err, stores, c.want)
		}
	}
	f := must[*kernfs.File](t)(tr.Open("/raw", os.O_WRONLY))
	defer closeOK(t, f)
	stores = nil
	if _, err := f.Write(bytes.Repeat([]byte("x"), kernfs.PageSize+1)); !errors.Is(err, sever.ErrTooLarge) || len(stores) != 0 {
		t.Errorf("write of a page plus one: %v, %d stores; want ErrTooLarge and none", err, len(stores))
	}
	if _, err := f.Write(bytes.Repeat([]byte("x"), kernfs.PageSize)); err != nil || len(stores) != 1 {
		t.Errorf("write of exactly a page: %v, %d stores; want it accepted", err, len(stores))
	}
}

// Rule: bad paths are rejected with a clear error naming them.
func TestBadPathsAreRejected(t *testing.T) {
	tr, _ := checked(t)
	must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "a"}))
	for _, c := range []struct {
		path string
		want error
	}{
		{"/a/../a", sever.ErrInvalid}, {"/a/./x", sever.ErrInvalid}, {"//a", sever.ErrInvalid},
		{"/a/", sever.ErrInvalid}, {"a", sever.ErrInvalid}, {"", sever.ErrInvalid},
		{"/" + strings.Repeat("n", kernfs.MaxNameLen+1), sever.ErrNameTooLong},
		{strings.Repeat("/a", kernfs.MaxPathLen), sever.ErrNameTooLong},
		{"/b", sever.ErrNotExist},
	} {
		_, err := tr.Lookup(c.path)
		if !errors.Is(err, c.want) {
			t.Errorf("Lookup(%.20q): %v, want %v", c.path, err, c.want)
			continue
		}
		if len(c.path) < 100 && !strings.Contains(err.Error(), "kernfs: "+c.path+":") {
			t.Errorf("error %q does not name the path %q", err, c.path)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", strings.Repeat("n", 256)} {
		if _, err := tr.AddDir(tr.Root(), kernfs.Dir{Name: name}); err == nil {
			t.Errorf("AddDir(%.10q) accepted a bad name", name)
		}
	}
	if _, err := tr.AddDir(tr.Root(), kernfs.Dir{Name: "a"}); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("duplicate name: %v, want EEXIST", err)
	}
}

// Rule: errors name the node and wrap the errno.
func TestErrorsNameThePathAndWrapTheErrno(t *testing.T) {
	tr, _ := checked(t)
	c := &counter{}
	dir, val := device(t, tr, "usb1", nil, c)
	f := must[*kernfs.File](t)(tr.OpenNode(val, os.O_RDONLY))
	defer closeOK(t, f)
	if err := tr.Remove(ctxT(t), dir); err != nil {
		t.Errorf("Remove of the node = %v, want nil: no callback is stuck", err)
	}
	_, err := f.Read(make([]byte, 1))
	if got, want := err.Error(), "kernfs: /devices/usb1/value: no such device"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
	if sever.Errno(err) != syscall.ENODEV {
		t.Errorf("Errno %v, want ENODEV", sever.Errno(err))
	}
}

// Rule: modes are kept, and opening for an access the attribute cannot do
// is EACCES.
func TestModesAndOpenPermissions(t *testing.T) {
	tr, _ := checked(t)
	show := func(_ *kernfs.Call, b []byte) ([]byte, error) { return b, nil }
	store := func(*kernfs.Call, any) error { return nil }
	ro := must[*kernfs.Node](t)(tr.AddAttr(tr.Root(), kernfs.Attr{Name: "ro", Show: show}))
	rw := must[*kernfs.Node](t)(tr.AddAttr(tr.Root(), kernfs.Attr{Name: "rw", Show: show, Store: store}))
	wo := must[*kernfs.Node](t)(tr.AddAttr(tr.Root(), kernfs.Attr{Name: "wo", Store: store}))
	cut := must[*kernfs.Node](t)(tr.AddAttr(tr.Root(), kernfs.Attr{Name: "cut", Mode: 0o400, Show: show, Store: store}))
	dir := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "d"}))
	link := must[*kernfs.Node](t)(tr.AddSymlink(dir, "l", rw, nil))
	for n, want := range map[*kernfs.Node]string{ro: "-r--r--r--", rw: "-rw-r--r--", wo: "--w-------", cut: "-r--------", dir: "drwxr-xr-x", link: "Lrwxrwxrwx"} {
		if got := n.Mode().String(); got != want {
			t.Errorf("%s: mode %s, want %s", n, got, want)
		}
	}
	for _, c := range []struct {
		n    *kernfs.Node
		flag int
		ok   bool
	}{{ro, os.O_RDONLY, true}, {ro, os.O_WRONLY, false}, {ro, os.O_RDWR, false}, {wo, os.O_WRONLY, true},
		{wo, os.O_RDONLY, false}, {rw, os.O_RDWR, true}, {cut, os.O_WRONLY, false}, {link, os.O_RDWR, true}} {
		f, err := tr.OpenNode(c.n, c.flag)
		if c.ok != (err == nil) || !c.ok && !errors.Is(err, syscall.EACCES) {
			t.Errorf("open %s flag %d: %v, want ok=%v (else EACCES)", c.n, c.flag, err, c.ok)
		}
		if f != nil {
			closeOK(t, f)
		}
	}
	if _, err := tr.OpenNode(dir, os.O_RDONLY); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("open of a directory: %v, want EISDIR", err)
	}
}

// Rule: a hidden subtree is invisible until Activate, and then appears
// whole.
func TestHiddenSubtreeAppearsWholeAtActivate(t *testing.T) {
	tr, _ := checked(t)
	show := func(_ *kernfs.Call, b []byte) ([]byte, error) { return b, nil }
	dev := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "dev", Hidden: true}))
	sub := must[*kernfs.Node](t)(tr.AddDir(dev, kernfs.Dir{Name: "power"}))
	a := must[*kernfs.Node](t)(tr.AddAttr(sub, kernfs.Attr{Name: "control", Show: show}))
	for _, p := range []string{"/dev", "/dev/power", "/dev/power/control"} {
		if _, err := tr.Lookup(p); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("hidden %s visible before Activate: %v", p, err)
		}
	}
	if ents, _ := tr.Readdir(tr.Root()); len(ents) != 0 {
		t.Errorf("Readdir lists hidden nodes: %v", ents)
	}
	if _, err := tr.OpenNode(a, os.O_RDONLY); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("open of a hidden attribute: %v, want ENOENT", err)
	}
	// Racing lookups see either nothing or everything.
	var wg sync.WaitGroup
	var partial atomic.Int32
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := tr.Lookup("/dev"); err == nil {
				if _, err := tr.Lookup("/dev/power/control"); err != nil {
					partial.Add(1)
				}
			}
		}
	})
	if err := tr.Activate(dev); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if partial.Load() != 0 {
		t.Error("a lookup saw the device half-made")
	}
	if _, err := tr.Lookup("/dev/power/control"); err != nil {
		t.Errorf("after Activate: %v", err)
	}
}

// Rule: Readdir lists in name order, stably, and follows changes.
func TestReaddirIsSortedAndStable(t *testing.T) {
	tr, _ := checked(t)
	for _, n := range []string{"uevent", "b", "a", "power", "driver"} {
		must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: n}))
	}
	names := func() string {
		ents := must[[]kernfs.DirEntry](t)(tr.Readdir(tr.Root()))
		var s []string
		for _, e := range ents {
			s = append(s, e.Name)
		}
		return strings.Join(s, " ")
	}
	if got := names(); got != "a b driver power uevent" {
		t.Errorf("Readdir: %s", got)
	}
	if got := names(); got != "a b driver power uevent" {
		t.Errorf("second Readdir: %s", got)
	}
	if err := tr.Remove(ctxT(t), must[*kernfs.Node](t)(tr.Lookup("/b"))); err != nil {
		t.Errorf("Remove of the node = %v, want nil: no callback is stuck", err)
	}
	must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "c"}))
	if got := names(); got != "a c driver power uevent" {
		t.Errorf("Readdir after changes: %s", got)
	}
}

// Rule: symlinks resolve in paths and dangle when their target goes.
func TestSymlinksResolveAndDangle(t *testing.T) {
	tr, _ := checked(t)
	c := &counter{}
	dev, _ := device(t, tr, "gpiochip0", nil, c)
	class := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "class"}))
	link := must[*kernfs.Node](t)(tr.AddSymlink(class, "gpiochip0", dev, nil))
	if got := must[string](t)(tr.Readlink(link)); got != "../devices/gpiochip0" {
		t.Errorf("Readlink: %q", got)
	}
	if n, err := tr.Lookup("/class/gpiochip0"); err != nil || n != link {
		t.Errorf("Lookup of the link itself: %v %v", n, err)
	}
	f := must[*kernfs.File](t)(tr.Open("/class/gpiochip0/value", os.O_RDONLY))
	if got := readAll(t, f); got != "0" {
		t.Errorf("read through link: %q", got)
	}
	closeOK(t, f)
	if err := tr.Remove(ctxT(t), dev); err != nil {
		t.Errorf("Remove of the node = %v, want nil: no callback is stuck", err)
	}
	if _, err := tr.Open("/class/gpiochip0/value", os.O_RDONLY); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("through a dangling link: %v, want ENOENT", err)
	}
}

// Rule: binary attributes read and write at offsets; a mapping of their
// region outlives the node, and the region is freed once the node is gone
// and the last mapping and open are.
func TestBinAttrMappingOutlivesRemoveAndRegionIsFreedOnce(t *testing.T) {
	tr, log := checked(t)
	drv := sever.NewOwner("tcmu", nil, sever.WithLog(log))
	mem := make([]byte, 64)
	reg := must[*sever.Region](t)(sever.NewRegion("tcmu0 ring", mem, sever.WithLog(log)))
	dir := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "uio0", Owner: drv}))
	must[*kernfs.Node](t)(tr.AddBin(dir, kernfs.BinAttr{
		Name: "config", Owner: drv, Size: 64, Region: reg,
		Read:  func(_ *kernfs.Call, off int64, b []byte) (int, error) { return copy(b, mem[off:]), nil },
		Write: func(_ *kernfs.Call, off int64, d []byte) (int, error) { return copy(mem[off:], d), nil },
	}))
	f := must[*kernfs.File](t)(tr.Open("/uio0/config", os.O_RDWR))
	if _, err := f.WriteAt([]byte("hello"), 10); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := f.ReadAt(b, 10); err != nil || string(b) != "hello" {
		t.Errorf("ReadAt: %q %v", b, err)
	}
	if _, err := f.ReadAt(b, 64); err != io.EOF {
		t.Errorf("read at size: %v, want EOF", err)
	}
	if _, err := f.WriteAt(b, 62); !errors.Is(err, sever.ErrTooLarge) {
		t.Errorf("write past size: %v", err)
	}
	m := must[*sever.Mapping](t)(f.Mmap())
	if err := drv.Unload(ctxT(t), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("UnloadTry with a mapping: %v, want EBUSY", err)
	}
	if err := tr.Remove(ctxT(t), dir); err != nil {
		t.Fatal(err)
	}
	if string(m.Bytes()[10:15]) != "hello" || reg.Freed() {
		t.Errorf("mapping after Remove: %q, freed %v; want the memory intact and unfreed", m.Bytes()[10:15], reg.Freed())
	}
	if _, err := f.Mmap(); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Mmap after Remove: %v", err)
	}
	closeOK(t, f)
	if reg.Freed() {
		t.Error("region freed while still mapped")
	}
	if err := drv.Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Errorf("unload with only a mapping of the severed region left: %v; a region pins no owner", err)
	}
	if err := m.Unmap(); err != nil {
		t.Errorf("Unmap of m = %v, want nil: a mapping's first Unmap succeeds", err)
	}
	if !reg.Freed() {
		t.Error("region not freed at the last unmap")
	}
}

// Rule: lookups and reads on different nodes proceed concurrently with
// creation and removal elsewhere (run with -race).
func TestConcurrentLookupsReadsAndChurn(t *testing.T) {
	tr, _ := checked(t)
	cs := make([]*counter, 8)
	for i := range cs {
		cs[i] = &counter{}
		device(t, tr, string(rune('a'+i)), nil, cs[i])
	}
	var wg sync.WaitGroup
	for i := range cs {
		wg.Go(func() {
			p := "/devices/" + string(rune('a'+i)) + "/value"
			for range 200 {
				f, err := tr.Open(p, os.O_RDONLY)
				if err != nil {
					t.Error(err)
					return
				}
				readAll(t, f)
				closeOK(t, f)
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			c := &counter{}
			d, _ := device(t, tr, "churn", nil, c)
			if _, err := tr.Readdir(must[*kernfs.Node](t)(tr.Lookup("/devices"))); err != nil {
				t.Errorf("Readdir of /devices = %v, want nil: the directory exists", err)
			}
			if err := tr.Remove(ctxT(t), d); err != nil {
				t.Errorf("Remove of the node = %v, want nil: no callback is stuck", err)
			}
		}
	})
	wg.Wait()
}

// Rule: the whole open/poll/remove/close path keeps its references balanced
// when every acquisition is tracked (a mismatched Put panics there).
func TestTrackingModeKeepsReferencesBalanced(t *testing.T) {
	log := &check.Log{}
	tr := kernfs.New(sever.WithLog(log), sever.WithTracking())
	drv := sever.NewOwner("drv", nil, sever.WithLog(log), sever.WithTracking())
	c := &counter{}
	dir, val := device(t, tr, "trk", drv, c)
	f1 := must[*kernfs.File](t)(tr.OpenNode(val, os.O_RDWR))
	f2 := must[*kernfs.File](t)(tr.OpenNode(val, os.O_RDONLY))
	readAll(t, f1)
	if _, err := f1.Write([]byte("3")); err != nil {
		t.Errorf("Write of f1 = %v, want nil: the value is valid", err)
	}
	tr.Notify(val)
	if _, err := f1.Poll(); err != nil {
		t.Errorf("Poll of f1 = %v, want nil: the file is open on a live node", err)
	}
	closeOK(t, f2)
	if err := drv.Unload(ctxT(t), sever.UnloadForce); err != nil {
		t.Fatal(err)
	}
	closeOK(t, f1)
	if !dir.Removed() || len(drv.Holders()) != 0 {
		t.Errorf("after unload: removed=%v holders=%v", dir.Removed(), drv.Holders())
	}
	c.checkReleases(t)
	if vs := log.Quiesce(ctxT(t)); len(vs) != 0 {
		t.Errorf("checker: %v", vs)
	}
}
