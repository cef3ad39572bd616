package pc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/drvhost"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/cp2112"
	"github.com/sever-dev/sever/subsys/gpio"
	"github.com/sever-dev/sever/subsys/usb"
)

// CP2112Host is the name of the driver host the board of port 1 runs in
// under DriverHosts: its controls are /hosts/cp2112/, its devices under
// /devices/host-cp2112/cp2112/, its GPIO char device dev/cp2112-gpiochip0.
const CP2112Host = "cp2112"

// DriverHosts runs the CP2112 of port 1 — its driver, the at24 and lm75
// clients, the board itself — in a driver host, a child process started
// with command (whose process calls ServeHost(ctx, CP2112Host)), instead
// of in the machine: port 1 is left empty, and gpio-keys.0 stays unbound,
// its chip being in another process. The host restarts on failure.
func DriverHosts(command ...string) Option {
	return func(c *config) { c.hostCmd = command }
}

// Host returns the supervisor of the driver host named name, or nil.
func (p *PC) Host(name string) *drvhost.Supervisor {
	for _, s := range p.hosts {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// startHosts starts the machine's driver hosts and makes the machine's
// quiesce stop them.
func (p *PC) startHosts(ctx context.Context, cmd []string) error {
	sup, err := drvhost.New(p.m.Core(), drvhost.Config{
		Name: CP2112Host, Command: cmd, Policy: drvhost.RestartOnFailure,
		CdevPrefix: CP2112Host + "-",
	})
	if err != nil {
		return err
	}
	p.hosts = append(p.hosts, sup)
	p.m.OnQuiesce("driver host "+CP2112Host, sup.Stop)
	return sup.Start(ctx)
}

// ServeHost is the host process's side of DriverHosts: it builds the
// driver host named kind (CP2112Host) on a machine of its own and serves
// it on the listener its supervisor handed it, until ctx ends or the
// supervisor goes. The host's device "cp2112" offers the calls gpio.get
// (arg: line; result: 0 or 1), gpio.set (arg: line, value) and, for the
// board's side of the wire, line.set (arg: line, level).
func ServeHost(ctx context.Context, kind string) error {
	if kind != CP2112Host {
		return fmt.Errorf("pc: unknown driver host %q (known: %s): %w", kind, CP2112Host, sever.ErrInvalid)
	}
	lis, err := drvhost.ListenerFromParent()
	if err != nil {
		return err
	}
	defer func() { _ = lis.Close() }() // the host is on its way out; Serve's error is the one that matters
	m := sim.New("host-" + kind)
	h, err := cp2112Host(ctx, m)
	if err == nil {
		if err = h.Serve(ctx, lis); errors.Is(err, io.EOF) {
			err = nil // the supervisor went: the host's life is over
		}
	}
	qctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, qerr := m.Quiesce(qctx)
	return errors.Join(err, qerr)
}

func cp2112Host(ctx context.Context, m *sim.Machine) (*drvhost.Host, error) {
	mods := map[string]*sever.Owner{}
	for _, name := range []string{"cp2112", "at24", "lm75"} {
		o, err := m.Insmod(name, nil)
		if err != nil {
			return nil, err
		}
		mods[name] = o
	}
	if _, err := cp2112.Register(ctx, m, mods["cp2112"], 0); err != nil {
		return nil, err
	}
	if err := cp2112.RegisterClientDrivers(ctx, m, mods["at24"], mods["lm75"]); err != nil {
		return nil, err
	}
	host, err := usb.NewHost(ctx, m.Core(), "usb1", 1)
	if err != nil {
		return nil, err
	}
	hw := cp2112.NewHardware("cp2112-1")
	if _, err := cp2112.Plug(ctx, m, host.Port(1), hw); err != nil {
		return nil, err
	}
	b, err := cp2112.Lookup(m.Core(), hw.Serial())
	if err != nil {
		return nil, err
	}
	core := m.Core()
	line := func(arg []byte, n int) (int, error) {
		if len(arg) != n || int(arg[0]) >= cp2112.Lines {
			return 0, fmt.Errorf("want %d bytes, line first: %w", n, sever.ErrInvalid)
		}
		return int(arg[0]), nil
	}
	withLine := func(arg []byte, n int, fn func(*gpio.Line) error) error {
		l, err := line(arg, n)
		if err != nil {
			return err
		}
		chip, err := gpio.Lookup(core, hw.Serial())
		if err != nil {
			return err
		}
		gl, err := chip.RequestLine(l, "drvhost")
		if err != nil {
			return err
		}
		defer func() { _ = gl.Close() }() // the call's result is fn's; releasing the line cannot change it
		return fn(gl)
	}
	return &drvhost.Host{Sysfs: m.Sysfs(), Dev: m.Dev(),
		// Healthy is a driver that answers: a read of line 0 through it.
		Health: func(context.Context) error {
			return withLine([]byte{0}, 1, func(gl *gpio.Line) error { _, err := gl.Value(); return err })
		},
		Exports: []drvhost.Export{{
			Name: "cp2112", Dir: b.Device().Dir(), Cdevs: []string{b.CdevName()},
			Calls: map[string]drvhost.CallFunc{
				"gpio.get": func(_ context.Context, arg []byte) (out []byte, err error) {
					err = withLine(arg, 1, func(gl *gpio.Line) error {
						v, err := gl.Value()
						out = []byte{0}
						if v {
							out[0] = 1
						}
						return err
					})
					return out, err
				},
				"gpio.set": func(_ context.Context, arg []byte) ([]byte, error) {
					return nil, withLine(arg, 2, func(gl *gpio.Line) error { return gl.SetValue(arg[1] != 0) })
				},
				"line.set": func(_ context.Context, arg []byte) ([]byte, error) {
					l, err := line(arg, 2)
					if err == nil {
						hw.SetInput(l, arg[1] != 0)
					}
					return nil, err
				},
			},
		}}}, nil
}
