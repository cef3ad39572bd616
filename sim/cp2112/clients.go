package cp2112

import (
	"context"
	"errors"
	"fmt"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/subsys/i2c"
)

// The compatible strings of the board's I2C chips.
const (
	EEPROMCompatible = "atmel,24c02"
	SensorCompatible = "national,lm75"
)

// RegisterClientDrivers registers the drivers of the board's I2C chips on
// m's I2C bus: at24 (code of owner at24) makes the EEPROM a binary
// attribute "eeprom" of 256 bytes, read and written through the adapter;
// lm75 (code of owner lm75) makes the sensor an attribute "temp1_input" in
// millidegrees Celsius. Both are ordinary client drivers: when the bridge
// goes, their devices are unregistered first (seed 000: "i2c_del_adapter
// cleans up all I2C users").
func RegisterClientDrivers(ctx context.Context, m *sim.Machine, at24, lm75 *sever.Owner) error {
	bus := i2c.Bus(m.Core())
	err := bus.RegisterDriver(ctx, &device.Driver{
		Name:  "at24",
		Owner: at24,
		IDs:   []string{EEPROMCompatible},
		Probe: func(ctx context.Context, d *device.Device) error { return probeAt24(m, at24, d) },
	})
	if err != nil {
		return err
	}
	return bus.RegisterDriver(ctx, &device.Driver{
		Name:  "lm75",
		Owner: lm75,
		IDs:   []string{SensorCompatible},
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{
			Name: "temp1_input",
			Show: func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) {
				raw := []byte{0, 0}
				if _, err := i2c.ClientOf(d).Transfer(context.Background(), []i2c.Msg{{Read: true, Data: raw}}); err != nil {
					return nil, err
				}
				t := int(int16(uint16(raw[0])<<8|uint16(raw[1]))>>7) * 500
				return fmt.Appendf(buf, "%d\n", t), nil
			},
		}}}},
	})
}

// probeAt24 adds the "eeprom" binary attribute and joins it to the
// binding's removal path (device.StageFiles): it is severed before the
// client unbinds.
func probeAt24(m *sim.Machine, owner *sever.Owner, d *device.Device) error {
	cl := i2c.ClientOf(d)
	t := m.Sysfs()
	node, err := t.AddBin(d.Dir(), kernfs.BinAttr{
		Name:  "eeprom",
		Mode:  0o600,
		Owner: owner,
		Size:  EEPROMSize,
		Read: func(c *kernfs.Call, off int64, buf []byte) (int, error) {
			if off >= EEPROMSize {
				return 0, nil
			}
			buf = buf[:min(int64(len(buf)), EEPROMSize-off)]
			_, err := cl.Transfer(context.Background(), []i2c.Msg{{Data: []byte{byte(off)}}, {Read: true, Data: buf}})
			if err != nil {
				return 0, err
			}
			return len(buf), nil
		},
		Write: func(c *kernfs.Call, off int64, data []byte) (int, error) {
			if off >= EEPROMSize {
				return 0, sever.ErrTooLarge
			}
			data = data[:min(int64(len(data)), EEPROMSize-off)]
			_, err := cl.Transfer(context.Background(), []i2c.Msg{{Data: append([]byte{byte(off)}, data...)}})
			if err != nil {
				return 0, err
			}
			return len(data), nil
		},
	})
	if err != nil {
		return err
	}
	if _, err := d.AddSeverable("eeprom", device.StageFiles, func(ctx context.Context) error {
		if err := t.Remove(ctx, node); err != nil && !errors.Is(err, sever.ErrNotExist) {
			return err
		}
		return nil
	}); err != nil {
		return errors.Join(err, t.Remove(context.Background(), node))
	}
	return nil
}
