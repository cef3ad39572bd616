package cp2112

import (
	"sync"
)

// Lines is the number of GPIO lines of a CP2112.
const Lines = 8

// The I2C addresses of the simulated board's chips.
const (
	EEPROMAddr = 0x50 // a 24C02: 256 bytes, one address byte
	SensorAddr = 0x48 // an LM75: temperature register 0, two bytes
)

// EEPROMSize is the EEPROM's size in bytes.
const EEPROMSize = 256

// Hardware is one simulated CP2112 board: the bridge chip's 8 GPIO lines
// and, on its I2C bus, an EEPROM at EEPROMAddr and a temperature sensor at
// SensorAddr. It is the device side of the wire; the driver reaches it
// only through usb.Device.IO while plugged in.
//
// The test drives it with SetInput and SetTemperature. A Hardware is safe
// for concurrent use.
type Hardware struct {
	serial string

	mu     sync.Mutex
	level  [Lines]bool
	eeprom [EEPROMSize]byte
	ptr    byte
	tempMC int // millidegrees Celsius
	intr   func(line int, rising bool)
}

// NewHardware returns a board with all lines low, an erased (0xff) EEPROM
// and 25 °C at the sensor. serial names it on the USB bus and is the GPIO
// chip's label once a driver binds; it must be unique on a machine.
func NewHardware(serial string) *Hardware {
	hw := &Hardware{serial: serial, tempMC: 25000}
	for i := range hw.eeprom {
		hw.eeprom[i] = 0xff
	}
	return hw
}

// Serial returns the board's serial, its USB product name.
func (hw *Hardware) Serial() string { return hw.serial }

// SetInput drives GPIO line from outside the board — a key pressed or
// released. If the level changes and a driver has armed the interrupt
// endpoint, the board reports the edge to it on this goroutine (the URB
// completion). Unplugged, the board reports nothing.
func (hw *Hardware) SetInput(line int, high bool) {
	hw.mu.Lock()
	if line < 0 || line >= Lines || hw.level[line] == high {
		hw.mu.Unlock()
		return
	}
	hw.level[line] = high
	intr := hw.intr
	hw.mu.Unlock()
	if intr != nil {
		intr(line, high)
	}
}

// Input returns the level of GPIO line as the board sees it now (false
// for a line out of range).
func (hw *Hardware) Input(line int) bool {
	if line < 0 || line >= Lines {
		return false
	}
	return hw.get(line)
}

// Temperature returns what the sensor reads, in millidegrees Celsius.
func (hw *Hardware) Temperature() int {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	return hw.tempMC
}

// SetTemperature sets what the sensor reads, in millidegrees Celsius.
func (hw *Hardware) SetTemperature(milliC int) {
	hw.mu.Lock()
	hw.tempMC = milliC
	hw.mu.Unlock()
}

// arm connects the interrupt endpoint to fn; nil disconnects it.
func (hw *Hardware) arm(fn func(line int, rising bool)) {
	hw.mu.Lock()
	hw.intr = fn
	hw.mu.Unlock()
}

func (hw *Hardware) get(line int) bool {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	return hw.level[line]
}

func (hw *Hardware) set(line int, v bool) {
	hw.mu.Lock()
	hw.level[line] = v
	hw.mu.Unlock()
}

// i2c performs one message on the board's bus; ok is false when no chip
// answers at addr (a NAK).
func (hw *Hardware) i2c(addr uint16, read bool, data []byte) (ok bool) {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	switch addr {
	case EEPROMAddr:
		if read {
			for i := range data {
				data[i] = hw.eeprom[hw.ptr]
				hw.ptr++
			}
			return true
		}
		if len(data) > 0 {
			hw.ptr = data[0]
			for _, b := range data[1:] {
				hw.eeprom[hw.ptr] = b
				hw.ptr++
			}
		}
		return true
	case SensorAddr:
		if read {
			// LM75: MSB is whole degrees, bit 7 of the LSB half a degree.
			t := hw.tempMC / 500
			raw := uint16(int16(t) << 7)
			for i := range data {
				if i < 2 {
					data[i] = byte(raw >> (8 * (1 - i)))
				}
			}
		}
		return true
	}
	return false
}
