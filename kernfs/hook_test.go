package kernfs_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/kernfs"
)

// OnRemove tells of every node of a removed subtree exactly once, a
// directory before its contents, when the node no longer resolves, with no
// tree lock held (the hook may use the tree); a cancelled hook hears
// nothing more.
func TestOnRemoveTellsEachRemovedNodeOnceWhenItStopsResolving(t *testing.T) {
	tr, _ := checked(t)
	m := must[*kernfs.Node](t)
	devs := m(tr.AddDir(tr.Root(), kernfs.Dir{Name: "devices"}))
	dev := m(tr.AddDir(devs, kernfs.Dir{Name: "dev0"}))
	var c counter
	m(tr.AddAttr(dev, c.attr("value", nil)))
	sub := m(tr.AddDir(dev, kernfs.Dir{Name: "power"}))
	m(tr.AddAttr(sub, c.attr("control", nil)))
	other := m(tr.AddDir(devs, kernfs.Dir{Name: "dev1"}))

	var mu sync.Mutex
	var got []string
	cancel := tr.OnRemove(func(n *kernfs.Node) {
		if !n.Removed() {
			t.Errorf("hook for %s: Removed() = false", n)
		}
		if _, err := tr.Lookup(n.Path()); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("hook for %s: Lookup = %v, want ENOENT: the node still resolves", n, err)
		}
		if _, err := tr.Readdir(n.Parent()); err != nil && !errors.Is(err, syscall.ENOENT) {
			t.Errorf("hook for %s: Readdir of the parent: %v", n, err)
		}
		mu.Lock()
		got = append(got, n.Parent().Path()+" "+n.Name())
		mu.Unlock()
	})
	// Two concurrent removers of the same subtree: still once per node.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if err := tr.Remove(ctxT(t), dev); err != nil {
				t.Errorf("Remove: %v", err)
			}
		})
	}
	wg.Wait()
	want := []string{"/devices dev0", "/devices/dev0 power", "/devices/dev0/power control", "/devices/dev0 value"}
	mu.Lock()
	// Pre-order with the children of a directory in map order: compare
	// the set, and that dev0 comes first.
	first := got[0]
	slices.Sort(got)
	slices.Sort(want)
	if first != "/devices dev0" || !slices.Equal(got, want) {
		t.Errorf("hooks told of %q (first %q); want each of %q once, the directory first", got, first, want)
	}
	mu.Unlock()

	cancel()
	cancel() // a second cancel does nothing
	if err := tr.Remove(ctxT(t), other); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Errorf("a cancelled hook was told of %q", got[len(want):])
	}
}

// The hook runs at the claim step: a removal stuck draining a callback
// has already told it, so the name is forgotten before the drain ends.
func TestOnRemoveRunsBeforeTheDrainWaitsForCallbacks(t *testing.T) {
	tr, _ := checked(t)
	m := must[*kernfs.Node](t)
	dev := m(tr.AddDir(tr.Root(), kernfs.Dir{Name: "dev0"}))
	entered, release := make(chan struct{}), make(chan struct{})
	m(tr.AddAttr(dev, kernfs.Attr{Name: "slow", Show: func(_ *kernfs.Call, b []byte) ([]byte, error) {
		close(entered)
		<-release
		return b, nil
	}}))
	told := make(chan string, 4)
	defer tr.OnRemove(func(n *kernfs.Node) { told <- n.Name() })()

	f, err := tr.Open("/dev0/slow", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, f)
	// The read only holds the Show inside while the removal runs; what it
	// returns once released is not this test's question.
	go func() { _, _ = f.ReadAt(make([]byte, 8), 0) }()
	<-entered
	removed := make(chan error, 1)
	go func() { removed <- tr.Remove(context.Background(), dev) }()
	for range 2 {
		select {
		case <-told:
		case <-time.After(5 * time.Second):
			t.Fatal("the hook was not told while the removal waited for a callback")
		}
	}
	select {
	case err := <-removed:
		t.Fatalf("Remove returned (%v) while a Show was inside", err)
	default:
	}
	close(release)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
}

// ReadAtContext and WriteAtContext hand their context to the provider: a
// Show blocked until its context is done returns when the reader is
// interrupted, and the read fails with an error meaning EINTR; a context
// done before the read calls no provider code. Plain ReadAt passes
// context.Background().
func TestReadAtContextReachesShowAndCancelUnblocksIt(t *testing.T) {
	tr, _ := checked(t)
	m := must[*kernfs.Node](t)
	dev := m(tr.AddDir(tr.Root(), kernfs.Dir{Name: "dev0"}))
	var shows, stores int
	var storeCtx context.Context
	m(tr.AddAttr(dev, kernfs.Attr{Name: "wait",
		Show: func(c *kernfs.Call, b []byte) ([]byte, error) {
			shows++
			if c.Context() == context.Background() {
				return append(b, "bg"...), nil
			}
			<-c.Context().Done()
			return nil, c.Context().Err()
		},
		Store: func(c *kernfs.Call, v any) error {
			stores++
			storeCtx = c.Context()
			return nil
		}}))
	f, err := tr.Open("/dev0/wait", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, f)
	buf := make([]byte, 8)
	if n, err := f.ReadAt(buf, 0); err != nil || string(buf[:n]) != "bg" {
		t.Fatalf("ReadAt = %q, %v; want the Show to see context.Background()", buf[:n], err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { _, err := f.ReadAtContext(ctx, buf, 0); res <- err }()
	select {
	case err := <-res:
		t.Fatalf("ReadAtContext returned %v before its context was cancelled", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case err = <-res:
	case <-time.After(5 * time.Second):
		t.Fatal("the Show did not return when the reader's context was cancelled")
	}
	if !errors.Is(err, context.Canceled) || sever.Errno(err) != syscall.EINTR {
		t.Errorf("interrupted read: %v (errno %v), want context.Canceled meaning EINTR", err, sever.Errno(err))
	}
	before := shows
	if _, err := f.ReadAtContext(ctx, buf, 0); !errors.Is(err, context.Canceled) || shows != before {
		t.Errorf("read with a done context: %v, %d Shows; want context.Canceled and no Show", err, shows-before)
	}
	if _, err := f.WriteAtContext(ctx, []byte("x"), 0); !errors.Is(err, context.Canceled) || stores != 0 {
		t.Errorf("write with a done context: %v, %d Stores; want context.Canceled and no Store", err, stores)
	}
	type key struct{}
	wctx := context.WithValue(context.Background(), key{}, "w")
	if _, err := f.WriteAtContext(wctx, []byte("x"), 0); err != nil || storeCtx.Value(key{}) != "w" {
		t.Errorf("WriteAtContext: %v; the Store saw a context without the writer's value", err)
	}
}

// Size is what stat reports: a binary attribute's declared size, a page
// for a text attribute, 0 otherwise, also after removal.
func TestSizeIsBinarySizeOrPage(t *testing.T) {
	tr, _ := checked(t)
	m := must[*kernfs.Node](t)
	dev := m(tr.AddDir(tr.Root(), kernfs.Dir{Name: "dev0"}))
	read := func(*kernfs.Call, int64, []byte) (int, error) { return 0, nil }
	sized := m(tr.AddBin(dev, kernfs.BinAttr{Name: "config", Size: 256, Read: read}))
	unsized := m(tr.AddBin(dev, kernfs.BinAttr{Name: "stream", Read: read}))
	text := m(tr.AddAttr(dev, kernfs.Attr{Name: "value", Show: func(_ *kernfs.Call, b []byte) ([]byte, error) { return b, nil }}))
	link := m(tr.AddSymlink(tr.Root(), "link", dev, nil))
	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			n    *kernfs.Node
			want int64
		}{{sized, 256}, {unsized, 0}, {text, kernfs.PageSize}, {dev, 0}, {link, 0}} {
			if got := c.n.Size(); got != c.want {
				t.Errorf("%s: %s.Size() = %d, want %d", when, c.n, got, c.want)
			}
		}
	}
	check("live")
	if err := tr.Remove(ctxT(t), dev); err != nil {
		t.Fatal(err)
	}
	check("removed")
}
