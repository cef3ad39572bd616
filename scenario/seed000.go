package scenario

import (
	"errors"
	"math/rand"
	"os"
	"strings"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/cp2112"
	"github.com/sever-dev/sever/sim/gpiokeys"
	"github.com/sever-dev/sever/subsys/gpio"
	"github.com/sever-dev/sever/subsys/i2c"
	"github.com/sever-dev/sever/subsys/irq"
	"github.com/sever-dev/sever/subsys/usb"
)

// seed000 is seed 000 (genirq procfs entry leak, Sep 2023): a CP2112 USB
// GPIO/I2C expander is unplugged while it has consumers everywhere — a
// gpio-keys device with an IRQ on one of its lines, a process watching
// another line through dev/gpiochipN, a process holding its EEPROM's sysfs
// file open, an in-process user of its I2C adapter.
//
// Correct: the unplug is immediate and tells every consumer through its
// next call: gpio-keys stays bound with its IRQ freed by the domain's
// removal and its line read failing with ENODEV, while its presses count
// keeps being served; the process's poll wakes with EventErr|EventHup and
// its reads fail with ENODEV; the EEPROM file and the adapter reference
// are shells returning ENODEV. No IRQ stays requested, no /irq entry
// stays, and gpio-keys' free_irq at its own unbind touches nothing gone.
//
// Naive (cp2112.BugLeakIRQs): the driver's own interrupt domain is removed
// by freeing its descriptors under the requested IRQ. gpio-keys never
// learns; /irq/N with its action entry outlives the domain — the leaked
// IRQ entry, check.ReferenceAfterUnregister at the machine's audit — and
// gpio-keys' free_irq at unbind is a check.UseAfterFree of the
// descriptor.
func seed000() []Scenario {
	return []Scenario{{
		Name:    "cp2112-unplug",
		Seed:    "000",
		Doc:     "DESIGN.md#seed-000",
		Title:   "unplug a CP2112 under in-process and user-space consumers",
		Bug:     "the driver's IRQ domain is removed under a requested IRQ: the consumer never learns, the /irq entry leaks",
		Catches: check.ReferenceAfterUnregister,
		Run:     runCP2112Unplug,
	}}
}

const (
	keyLine   = 2 // gpio-keys' line
	watchLine = 5 // the process's line
)

func runCP2112Unplug(r *Run) error {
	ctx := r.Context()
	m := r.M
	var bugs cp2112.Bugs
	if r.Naive() {
		bugs = cp2112.BugLeakIRQs
	}
	mods := map[string]*sever.Owner{}
	for _, name := range []string{"cp2112", "at24", "lm75", "gpio_keys"} {
		o, err := m.Insmod(name, nil)
		if err != nil {
			return err
		}
		mods[name] = o
	}
	if _, err := cp2112.Register(ctx, m, mods["cp2112"], bugs); err != nil {
		return err
	}
	if err := cp2112.RegisterClientDrivers(ctx, m, mods["at24"], mods["lm75"]); err != nil {
		return err
	}
	if _, err := gpiokeys.Register(ctx, m, mods["gpio_keys"]); err != nil {
		return err
	}
	host, err := usb.NewHost(ctx, m.Core(), "usb1", 2)
	if err != nil {
		return err
	}
	hw := cp2112.NewHardware("cp2112-0")
	if _, err := cp2112.Plug(ctx, m, host.Port(1), hw); err != nil {
		return err
	}
	br, err := cp2112.Lookup(m.Core(), hw.Serial())
	if err != nil {
		return err
	}
	label := hw.Serial()
	r.Step("devicetree: add gpio-keys.0 with its key on %s line %d", label, keyLine)
	keysDev, err := gpiokeys.AddDevice(ctx, m, gpiokeys.Config{
		Name: "gpio-keys.0", Chip: label, Line: keyLine,
		RequestIRQ: func(name string, h irq.Handler) (gpiokeys.IRQ, error) {
			return cp2112.RequestIRQ(m.Core(), label, keyLine, name, h)
		},
	})
	if err != nil {
		return err
	}
	if keysDev.Driver() == nil {
		return errors.New("gpio-keys did not bind")
	}
	keysPath := keysDev.Path()

	// User space: gpiomon on the watch line, a second open reading the
	// line's value, a process holding the EEPROM open; in-process: a user
	// of the I2C adapter (i2c-dev).
	cdev := br.CdevName()
	r.Step("gpiomon: open /dev/%s, request line %d for both edges, read events", cdev, watchLine)
	mon, err := cp2112.RequestLineEvents(m.Dev(), cdev, watchLine, gpio.EdgeBoth)
	if err != nil {
		return err
	}
	r.Go(func(rng *rand.Rand) {
		defer r.Close("mon", mon)
		for {
			Yield(rng)
			_, err := cp2112.ReadLineEvent(ctx, mon)
			r.Op()
			if err != nil {
				if r.Variant == Correct {
					r.ExpectGone("gpiomon read across unplug", err)
					ev, perr := mon.Poll()
					if ev&(sever.EventErr|sever.EventHup) == 0 || perr == nil {
						r.Failf("gpiomon poll after unplug: %v, %v; want EventErr|EventHup and ENODEV", ev, perr)
					}
				}
				r.Step("gpiomon: read returned %v; close", err)
				return
			}
		}
	})
	getter, err := cp2112.RequestLineEvents(m.Dev(), cdev, 0, gpio.EdgeNone)
	if err != nil {
		return err
	}
	defer r.Close("getter", getter)
	eepromPath := br.Adapter().Device().Path() + "/" + br.Adapter().Device().Children()[0].Name() + "/eeprom"
	eeprom, err := m.Sysfs().Open(eepromPath, os.O_RDWR)
	if err != nil {
		return err
	}
	defer r.Close("eeprom", eeprom)
	adap, err := i2c.GetAdapter(m.Core(), br.Adapter().Nr(), "i2c-dev")
	if err != nil {
		return err
	}
	defer func() {
		if err := adap.Put(); err != nil {
			r.Failf("i2c_put_adapter: %v; want nil", err)
		}
	}()
	tempPath := br.Adapter().Device().Path() + "/" + br.Adapter().Device().Children()[1].Name() + "/temp1_input"

	buf := make([]byte, 64)
	read := func(path string) error {
		f, err := m.Sysfs().Open(path, os.O_RDONLY)
		if err != nil {
			return err
		}
		defer r.Close("f", f)
		_, err = f.Read(buf)
		return err
	}
	presses := 0
	var ops []Op
	for i := range 2 + r.Rand.Intn(3) {
		ops = append(ops,
			Op{Name: "press the key", Do: func() error { presses++; hw.SetInput(keyLine, true); hw.SetInput(keyLine, false); return nil }},
			Op{Name: "toggle the watched line", Do: func() error { hw.SetInput(watchLine, true); hw.SetInput(watchLine, false); return nil }},
			Op{Name: "cat gpio-keys.0/presses", Do: func() error { return read(keysPath + "/presses") }},
			Op{Name: "cat gpio-keys.0/value (through its GPIO line)", Gone: []error{sever.ErrNoDevice}, Do: func() error { return read(keysPath + "/value") }},
			Op{Name: "read eeprom (held open)", Gone: []error{sever.ErrNoDevice}, Do: func() error { _, err := eeprom.ReadAt(buf[:16], int64(16*i)); return err }},
			Op{Name: "i2c-dev: write eeprom through an adapter reference", Gone: []error{sever.ErrNoDevice}, Do: func() error {
				_, err := adap.Transfer(ctx, []i2c.Msg{{Addr: cp2112.EEPROMAddr, Data: []byte{byte(i), 0xa5}}})
				return err
			}},
			Op{Name: "read the line value through the char device", Gone: []error{sever.ErrNoDevice}, Do: func() error { _, err := cp2112.LineValue(getter); return err }},
			Op{Name: "cat temp1_input (open by path)", Gone: []error{sever.ErrNotExist, sever.ErrNoDevice}, Do: func() error { return read(tempPath) }},
		)
	}
	r.Rand.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	port := host.Port(1)
	usbPath := br.Device().Path()
	unplug := func() error {
		m.Record(sim.KindSevered, usbPath, "usb disconnect: wire cut; children, files, providers, Remove, devres")
		err := port.Unplug(ctx)
		m.Record(sim.KindDrained, usbPath, "unplug returned: no cp2112 code runs now or later; consumers hold shells")
		return err
	}
	if err := r.Interleave(ops, Op{Name: "unplug the CP2112 from usb1 port 1", Do: unplug}); err != nil {
		return err
	}

	// After the unplug: gpio-keys is still bound and still serving.
	if keysDev.Driver() == nil {
		r.Failf("gpio-keys was unbound by the provider's unplug")
	}
	r.Step("cat gpio-keys.0/presses and irq after the unplug")
	if err := read(keysPath + "/presses"); err != nil {
		r.Failf("gpio-keys presses after unplug: %v", err)
	}
	irqText := readText(r, keysPath+"/irq")
	if r.Variant == Correct {
		if n := irq.Requested(m.Core()); n != 0 {
			r.Failf("%d IRQs still requested after the domain was removed", n)
		}
		if !strings.Contains(irqText, "provider gone") {
			r.Failf("gpio-keys irq attribute after unplug: %q, want the provider gone", irqText)
		}
		if got := gpiokeys.Presses(keysDev); got > int64(presses) || got < 0 {
			r.Failf("gpio-keys counted %d presses of %d", got, presses)
		}
	}
	hw.SetInput(keyLine, true) // nobody listens now
	r.Step("press the key on the unplugged board")
	r.Step("i2c-dev: put the adapter reference; processes close their files")
	return nil
}

func readText(r *Run, path string) string {
	f, err := r.M.Sysfs().Open(path, os.O_RDONLY)
	if err != nil {
		r.Failf("open %s: %v", path, err)
		return ""
	}
	defer r.Close("f", f)
	buf := make([]byte, 256)
	n, err := f.Read(buf)
	if err != nil {
		r.Failf("read %s: %v", path, err)
	}
	return string(buf[:n])
}
