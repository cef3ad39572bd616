package chardev

import "fmt"

// Cmd is an ioctl command number, encoded as Linux's _IOC: the direction in
// bits 30-31 (write 1, read 2, as seen from the caller), the argument's
// size in bits 16-29, the driver's type letter in bits 8-15 and the
// command's number in bits 0-7. Build one with IO, IOR, IOW or IOWR; its
// values are those of the same Linux macros, so a command number from a C
// header works unchanged.
type Cmd uint32

const (
	cmdNrBits   = 8
	cmdTypeBits = 8
	cmdSizeBits = 14

	cmdTypeShift = cmdNrBits
	cmdSizeShift = cmdTypeShift + cmdTypeBits
	cmdDirShift  = cmdSizeShift + cmdSizeBits

	cmdWrite = 1 // the caller passes the argument in (_IOC_WRITE)
	cmdRead  = 2 // the caller gets the argument back (_IOC_READ)

	// MaxArg is the largest argument a command can carry.
	MaxArg = 1<<cmdSizeBits - 1
)

func ioc(dir uint32, typ, nr uint8, size int) Cmd {
	if size < 0 || size > MaxArg {
		panic(fmt.Sprintf("chardev: ioctl argument of %d bytes: at most %d", size, MaxArg))
	}
	return Cmd(dir<<cmdDirShift | uint32(size)<<cmdSizeShift | uint32(typ)<<cmdTypeShift | uint32(nr))
}

// IO is a command without an argument (_IO).
func IO(typ, nr uint8) Cmd { return ioc(0, typ, nr, 0) }

// IOR is a command whose driver returns size bytes to the caller (_IOR).
// It panics if size is negative or above MaxArg.
func IOR(typ, nr uint8, size int) Cmd { return ioc(cmdRead, typ, nr, size) }

// IOW is a command whose caller passes size bytes to the driver (_IOW).
func IOW(typ, nr uint8, size int) Cmd { return ioc(cmdWrite, typ, nr, size) }

// IOWR is a command that passes size bytes in and gets them back (_IOWR).
func IOWR(typ, nr uint8, size int) Cmd { return ioc(cmdRead|cmdWrite, typ, nr, size) }

// Type returns the command's type letter.
func (c Cmd) Type() uint8 { return uint8(c >> cmdTypeShift) }

// Nr returns the command's number within its type.
func (c Cmd) Nr() uint8 { return uint8(c) }

// Size returns the size of the command's argument in bytes.
func (c Cmd) Size() int { return int(c>>cmdSizeShift) & MaxArg }

// Writes reports whether the caller passes the argument to the driver.
func (c Cmd) Writes() bool { return c>>cmdDirShift&cmdWrite != 0 }

// Reads reports whether the driver's argument is copied back to the caller.
func (c Cmd) Reads() bool { return c>>cmdDirShift&cmdRead != 0 }

func (c Cmd) String() string {
	var name string
	switch {
	case c.Reads() && c.Writes():
		name = "IOWR"
	case c.Reads():
		name = "IOR"
	case c.Writes():
		name = "IOW"
	default:
		return fmt.Sprintf("IO(%q, %d)", rune(c.Type()), c.Nr())
	}
	return fmt.Sprintf("%s(%q, %d, %d)", name, rune(c.Type()), c.Nr(), c.Size())
}
