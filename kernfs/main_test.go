package kernfs_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/kernfs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// checked returns a tree reporting into a fresh log, and at the end of the
// test asserts the log quiesces clean: no release left unrun, no callback
// after sever, no call into a gone owner.
func checked(t testing.TB) (*kernfs.Tree, *check.Log) {
	t.Helper()
	return checkedAllowing(t)
}

// checkedAllowing is checked, accepting violations of the given classes
// (which the test asserts itself).
func checkedAllowing(t testing.TB, allowed ...check.Class) (*kernfs.Tree, *check.Log) {
	t.Helper()
	log := &check.Log{}
	tr := kernfs.New(sever.WithLog(log))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.Flush(ctx); err != nil {
			t.Errorf("scheduled callbacks still running at the end: %v", err)
		}
		for _, v := range log.Quiesce(ctx) {
			if slices.Contains(allowed, v.Class) {
				continue
			}
			t.Errorf("checker: %v\n%s", v, v.Stack)
		}
	})
	return tr, log
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// counter is a provider's attribute: an integer with counted callbacks.
type counter struct {
	mu       sync.Mutex
	v        int64
	shows    atomic.Int64
	stores   atomic.Int64
	releases sync.Map // private → *atomic.Int64
	opens    atomic.Int64
	severed  atomic.Bool // set by the test once Remove returned
	late     atomic.Int64
}

func (c *counter) attr(name string, owner *sever.Owner) kernfs.Attr {
	return kernfs.Attr{
		Name:  name,
		Owner: owner,
		Show: func(_ *kernfs.Call, buf []byte) ([]byte, error) {
			c.note()
			c.shows.Add(1)
			c.mu.Lock()
			defer c.mu.Unlock()
			return strconv.AppendInt(buf, c.v, 10), nil
		},
		Store: func(_ *kernfs.Call, v any) error {
			c.note()
			c.stores.Add(1)
			c.mu.Lock()
			c.v = v.(int64)
			c.mu.Unlock()
			return nil
		},
		Parse: kernfs.Int(0, 1000),
		Open: func(*kernfs.Call) (any, error) {
			c.note()
			id := c.opens.Add(1)
			n := new(atomic.Int64)
			c.releases.Store(id, n)
			return id, nil
		},
		Release: func(_ *kernfs.Node, priv any) {
			c.note()
			n, _ := c.releases.Load(priv)
			n.(*atomic.Int64).Add(1)
		},
	}
}

func (c *counter) note() {
	if c.severed.Load() {
		c.late.Add(1)
	}
}

// checkReleases asserts every open's Release ran exactly once.
func (c *counter) checkReleases(t testing.TB) {
	t.Helper()
	c.releases.Range(func(k, v any) bool {
		if n := v.(*atomic.Int64).Load(); n != 1 {
			t.Errorf("open %v: Release ran %d times, want exactly once", k, n)
		}
		return true
	})
}

func readAll(t testing.TB, f *kernfs.File) string {
	t.Helper()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", f.Path(), err)
	}
	return string(b)
}

// device builds /devices/<name> with a "value" attribute, hidden then
// activated.
func device(t testing.TB, tr *kernfs.Tree, name string, owner *sever.Owner, c *counter) (*kernfs.Node, *kernfs.Node) {
	t.Helper()
	devs, err := tr.Lookup("/devices")
	if err != nil {
		devs = must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "devices"}))
	}
	dir := must[*kernfs.Node](t)(tr.AddDir(devs, kernfs.Dir{Name: name, Owner: owner, Hidden: true}))
	val := must[*kernfs.Node](t)(tr.AddAttr(dir, c.attr("value", owner)))
	if err := tr.Activate(dir); err != nil {
		t.Fatal(err)
	}
	return dir, val
}

var _ = fmt.Sprint
var _ = os.O_RDONLY

// closeOK closes f and fails the test if Close does: a file's first Close
// succeeds, whether or not its node is removed or its owner unloaded.
func closeOK(t testing.TB, f *kernfs.File) {
	t.Helper()
	if err := f.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
