package drvhost_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/drvhost"
	"github.com/sever-dev/sever/kernfs"
)

// testHostEnv makes the test binary a driver host (testHostMain) instead
// of running tests: the supervisor under test spawns the binary itself,
// so `go test` needs nothing built beforehand.
const testHostEnv = "SEVER_DRVHOST_TEST_HOST"

// dirOnlyEnv makes the test host export widget without its Device, so
// that only its directory's removal tells the machine it is gone.
const dirOnlyEnv = "SEVER_DRVHOST_TEST_DIR_ONLY"

func TestMain(m *testing.M) {
	if os.Getenv(testHostEnv) != "" {
		os.Exit(testHostMain())
	}
	goleak.VerifyTestMain(m)
}

// testHostMain is the test host: a machine of its own with three devices:
// "widget", exported with its attributes, a char device and calls;
// "gadget", whose call "unplug" makes the host remove widget by itself;
// and "gizmo", on a bus and bound to a driver, so that it has an unbind
// file.
func testHostMain() int {
	ctx := context.Background()
	core := device.NewCore("host", nil)
	w := &widget{}
	dev, err := core.Register(ctx, device.Config{Name: "widget", Groups: []device.AttrGroup{
		{Attrs: []device.Attr{
			{Name: "value", Parse: kernfs.Int(-1<<31, 1<<31),
				Show: func(_ *kernfs.Call, _ *device.Device, buf []byte) ([]byte, error) {
					w.mu.Lock()
					defer w.mu.Unlock()
					return fmt.Appendf(buf, "%d\n", w.value), nil
				},
				Store: func(_ *kernfs.Call, _ *device.Device, v any) error {
					w.mu.Lock()
					defer w.mu.Unlock()
					w.value = v.(int64)
					return nil
				}},
			// slow blocks until its reader gives up: a call in flight
			// for as long as the host lives.
			{Name: "slow", Show: func(c *kernfs.Call, _ *device.Device, buf []byte) ([]byte, error) {
				<-c.Context().Done()
				return buf, c.Context().Err()
			}},
		}},
		{Name: "sub", Attrs: []device.Attr{{Name: "hello", Show: func(_ *kernfs.Call, _ *device.Device, buf []byte) ([]byte, error) {
			return append(buf, "world\n"...), nil
		}}}},
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "test host:", err)
		return 1
	}
	var cd *chardev.Cdev
	cd, err = chardev.Register(dev, chardev.Config{Name: "widget0", Ops: chardev.Ops{
		Read: func(_ *chardev.Call, buf []byte) (int, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if len(w.queue) == 0 {
				return 0, sever.ErrWouldBlock
			}
			n := copy(buf, w.queue)
			w.queue = w.queue[n:]
			return n, nil
		},
		Write: func(_ *chardev.Call, data []byte) (int, error) {
			w.mu.Lock()
			w.queue = append(w.queue, data...)
			w.mu.Unlock()
			cd.Notify(sever.EventIn)
			return len(data), nil
		},
		Poll: func(*chardev.Call) sever.Events {
			w.mu.Lock()
			defer w.mu.Unlock()
			if len(w.queue) > 0 {
				return sever.EventIn | sever.EventOut
			}
			return sever.EventOut
		},
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "test host:", err)
		return 1
	}
	gadget, err := core.Register(ctx, device.Config{Name: "gadget", Groups: []device.AttrGroup{{Attrs: []device.Attr{
		{Name: "id", Show: func(_ *kernfs.Call, _ *device.Device, buf []byte) ([]byte, error) {
			return append(buf, "gadget\n"...), nil
		}},
	}}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "test host:", err)
		return 1
	}
	gizmo, err := testHostGizmo(ctx, core)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test host:", err)
		return 1
	}
	h := &drvhost.Host{Sysfs: core.Sysfs(), Dev: chardev.RegistryOf(core), Exports: []drvhost.Export{{
		Name: "widget", Dir: dev.Dir(), Device: dev, Cdevs: []string{"widget0"},
		Calls: widgetCalls(w),
	}, {
		Name: "gadget", Dir: gadget.Dir(), Device: gadget,
		Calls: map[string]drvhost.CallFunc{
			"echo": func(_ context.Context, arg []byte) ([]byte, error) { return arg, nil },
			// unplug is the host's own code removing widget, as a
			// driver unplugging a child does.
			"unplug": func(ctx context.Context, _ []byte) ([]byte, error) { return nil, dev.Unregister(ctx) },
		},
	}, {
		Name: "gizmo", Dir: gizmo.Dir(), Device: gizmo,
	}}}
	if os.Getenv(dirOnlyEnv) != "" {
		h.Exports[0].Device = nil
	}
	h.Health = func(ctx context.Context) error {
		if w.wedged.Load() {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	var lis net.Listener
	if addr := os.Getenv(remoteListenEnv); addr != "" {
		// A host on "another machine": TCP with mutual TLS.
		if h.TLS, err = serverTLS(os.Getenv(remoteCertsEnv)); err == nil {
			lis, err = net.Listen("tcp", addr)
		}
		h.Persist = true
	} else {
		lis, err = drvhost.ListenerFromParent()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "test host:", err)
		return 1
	}
	if err := h.Serve(ctx, lis); err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(os.Stderr, "test host:", err)
	}
	return 0
}

// testHostGizmo registers the test host's gizmo: a device on a bus, bound
// to a driver whose attribute says so.
func testHostGizmo(ctx context.Context, core *device.Core) (*device.Device, error) {
	bus, err := core.NewBus(device.BusConfig{Name: "tbus"})
	if err != nil {
		return nil, err
	}
	drv := &device.Driver{Name: "tdrv", IDs: []string{"gizmo"},
		Probe: func(context.Context, *device.Device) error { return nil },
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{Name: "bound",
			Show: func(_ *kernfs.Call, _ *device.Device, buf []byte) ([]byte, error) {
				return append(buf, "yes\n"...), nil
			}}}}}}
	if err := bus.RegisterDriver(ctx, drv); err != nil {
		return nil, err
	}
	d, err := core.Register(ctx, device.Config{Name: "gizmo", Bus: bus, Compatible: "gizmo"})
	if err != nil {
		return nil, err
	}
	if d.Driver() != drv {
		return nil, fmt.Errorf("gizmo not bound to %s: %w", drv.Name, sever.ErrIO)
	}
	return d, nil
}

type widget struct {
	wedged atomic.Bool
	mu     sync.Mutex
	value  int64
	queue  []byte
}

// widgetCalls are the test host's calls; the benchmarks run the same ones
// in-process.
func widgetCalls(w *widget) map[string]drvhost.CallFunc {
	return map[string]drvhost.CallFunc{
		// wedge hangs the host's driver: its Health stops answering,
		// while the process still serves gRPC.
		"wedge": func(context.Context, []byte) ([]byte, error) {
			w.wedged.Store(true)
			return nil, nil
		},
		"echo": func(_ context.Context, arg []byte) ([]byte, error) { return arg, nil },
		"block": func(ctx context.Context, _ []byte) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
		"fail":  func(context.Context, []byte) ([]byte, error) { return nil, sever.ErrBusy },
		"panic": func(context.Context, []byte) ([]byte, error) { panic("test host: asked to panic") },
		"exit": func(_ context.Context, arg []byte) ([]byte, error) {
			os.Exit(int(arg[0]))
			return nil, nil
		},
	}
}

// closeOK closes c and fails t if that fails: in these tests a Close, of a
// live object or of a shell, must succeed.
func closeOK(t testing.TB, what string, c interface{ Close() error }) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("close %s: %v", what, err)
	}
}
