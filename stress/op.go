package stress

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
)

// Kind is what one operation does to the machine.
type Kind uint8

// The operation kinds. Their names (Kind.String) are what reports count.
const (
	KPlug        Kind = iota // plug a fresh cp2112 board into a USB port
	KUnplug                  // unplug a port: surprise removal
	KBind                    // bind a device to its driver
	KUnbind                  // unbind a device
	KUnloadTry               // unload a module with sever.UnloadTry
	KUnloadForce             // rmmod a module (sever.UnloadForce)
	KReload                  // insmod a module that is gone and register its drivers
	KAddDevice               // register a stress platform device
	KDelDevice               // unregister a stress platform device
	KSysOpen                 // walk the attribute tree at random and open a file
	KSysRead                 // read an open attribute
	KSysWrite                // write an open attribute
	KSysPoll                 // poll, or wait briefly on, an open attribute
	KSysMmap                 // map, touch and unmap a binary attribute's region
	KSysClose                // close an open attribute (and check the closed shell)
	KCdevOpen                // open a char device under dev/
	KCdevRead                // read an open char device
	KCdevWrite               // write an open char device
	KCdevIoctl               // ioctl an open char device
	KCdevPoll                // poll, or wait briefly on, an open char device
	KCdevMmap                // map, touch and unmap a char device's region
	KCdevClose               // close an open char device (and check the closed shell)
	KSelfRemove              // write to an attribute that removes its own device or disk
	KBlockIO                 // submit a read or write to a disk
	KBlockFreeze             // freeze a disk's queue, then unfreeze it
	KBlockKill               // delete a disk (kill its queue)
	KIRQRequest              // request a cp2112 line's IRQ
	KIRQFree                 // free a requested IRQ
	KEdge                    // toggle a board's input line: an interrupt
	KI2C                     // get an I2C adapter, transfer, put it
	KGPIO                    // request a GPIO line, read or drive it, free it
	KHostKill                // kill -9 the driver host: its devices' surprise removal
	numKinds
)

var kindNames = [numKinds]string{
	"plug", "unplug", "bind", "unbind", "unload-try", "unload-force", "reload",
	"add-device", "del-device",
	"sys-open", "sys-read", "sys-write", "sys-poll", "sys-mmap", "sys-close",
	"cdev-open", "cdev-read", "cdev-write", "cdev-ioctl", "cdev-poll", "cdev-mmap", "cdev-close",
	"self-remove", "block-io", "block-freeze", "block-kill",
	"irq-request", "irq-free", "edge", "i2c", "gpio", "host-kill",
}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("stress.Kind(%d)", k)
}

// Kinds lists every operation kind in declaration order.
func Kinds() []Kind {
	ks := make([]Kind, numKinds)
	for i := range ks {
		ks[i] = Kind(i)
	}
	return ks
}

// weights is the mix a generator draws from: removal-path operations are a
// tenth of it, consumer calls the rest. KHostKill is not in it: its share
// is 1 in hostKillOdds, drawn first.
var weights = [numKinds]int{
	KPlug: 2, KUnplug: 2, KBind: 2, KUnbind: 2, KUnloadTry: 1, KUnloadForce: 1, KReload: 3,
	KAddDevice: 2, KDelDevice: 1,
	KSysOpen: 8, KSysRead: 10, KSysWrite: 6, KSysPoll: 4, KSysMmap: 2, KSysClose: 6,
	KCdevOpen: 6, KCdevRead: 6, KCdevWrite: 6, KCdevIoctl: 5, KCdevPoll: 4, KCdevMmap: 2, KCdevClose: 5,
	KSelfRemove: 1, KBlockIO: 8, KBlockFreeze: 2, KBlockKill: 1,
	KIRQRequest: 3, KIRQFree: 3, KEdge: 6, KI2C: 6, KGPIO: 6,
}

// hostKillOdds makes one operation in hostKillOdds a host-kill: 20 in a
// round of 40,000, about 3,000 in CI's six million operations. A kill
// waits for the host's restart, a process start, so a larger share would
// leave the host dead most of the time, its devices out of the mix.
const hostKillOdds = 2000

var cumWeights = func() (c [numKinds]int) {
	sum := 0
	for i, w := range weights {
		sum += w
		c[i] = sum
	}
	return c
}()

// Op is one operation: a kind and three raw choices. The choices are drawn
// before the operation runs and never depend on what earlier operations
// did, so a worker's sequence of Ops is a pure function of (seed, round,
// worker) — the "choice sequence" a replay runs again. What a choice
// selects is decided when the operation runs (A picks a port, a device, a
// handle slot, modulo what exists then).
//
//	A: which object (port, slot, module, path choices)
//	B: a sub-choice (value written, line, flags, read or write)
//	C: the fault to inject into the driver code this operation reaches:
//	   C&3 is the kind (0 none, 1 sleep, 2 error, 3 panic), C>>2&0x3ff
//	   a sleep in microseconds, C>>12 the probe step a fault is planted at.
type Op struct {
	Kind    Kind
	A, B, C uint32
}

func (o Op) String() string {
	s := fmt.Sprintf("%s a=%d b=%d", o.Kind, o.A, o.B)
	if f := Fault(o.C & 3); f != FaultNone {
		s += fmt.Sprintf(" fault=%s", f)
	}
	return s
}

// OpSize is the size of one encoded Op: the kind, then A, B and C as
// little-endian 32-bit words.
const OpSize = 13

// Encode appends o's encoding to b.
func (o Op) Encode(b []byte) []byte {
	b = append(b, byte(o.Kind))
	b = binary.LittleEndian.AppendUint32(b, o.A)
	b = binary.LittleEndian.AppendUint32(b, o.B)
	return binary.LittleEndian.AppendUint32(b, o.C)
}

// Decode turns arbitrary bytes into an operation sequence, OpSize bytes per
// Op; a short tail is ignored. Every byte string decodes to a valid
// sequence: the kind is reduced modulo the number of kinds, so
// Decode(EncodeOps(ops)) is ops. It is the fuzzer's way into the harness and
// the format of recorded choice sequences.
func Decode(data []byte) []Op {
	ops := make([]Op, 0, len(data)/OpSize)
	for len(data) >= OpSize {
		ops = append(ops, Op{
			Kind: Kind(data[0] % byte(numKinds)),
			A:    binary.LittleEndian.Uint32(data[1:]),
			B:    binary.LittleEndian.Uint32(data[5:]),
			C:    binary.LittleEndian.Uint32(data[9:]),
		})
		data = data[OpSize:]
	}
	return ops
}

// EncodeOps encodes ops, OpSize bytes each.
func EncodeOps(ops []Op) []byte {
	b := make([]byte, 0, len(ops)*OpSize)
	for _, o := range ops {
		b = o.Encode(b)
	}
	return b
}

// Fault is what an injected fault does to the driver callback it reaches.
type Fault uint8

// The faults.
const (
	FaultNone  Fault = iota
	FaultSleep       // the callback sleeps (a slow driver; removal waits longer)
	FaultError       // the callback returns an error wrapping sever.ErrIO
	FaultPanic       // the callback panics: a check.DriverFault, recovered
)

func (f Fault) String() string {
	return [...]string{"none", "sleep", "error", "panic"}[f&3]
}

// generator draws one worker's operations.
type generator struct {
	rng       *rand.Rand
	faultRate float64
}

// newGenerator returns the generator of worker w in round r of a run with
// seed: its own PCG stream, so workers never share a source.
func newGenerator(seed int64, round, w int, faultRate float64) *generator {
	return &generator{
		rng:       rand.New(rand.NewPCG(uint64(seed), uint64(round)<<20|uint64(w))),
		faultRate: faultRate,
	}
}

func (g *generator) next() Op {
	k := KHostKill
	if g.rng.IntN(hostKillOdds) != 0 {
		x := g.rng.IntN(cumWeights[numKinds-1])
		k = 0
		for cumWeights[k] <= x {
			k++
		}
	}
	o := Op{Kind: k, A: g.rng.Uint32(), B: g.rng.Uint32()}
	if g.rng.Float64() < g.faultRate {
		f := uint32(1 + g.rng.IntN(3))
		sleep := uint32(g.rng.IntN(300))
		step := uint32(g.rng.IntN(8))
		o.C = f | sleep<<2 | step<<12
	}
	return o
}
