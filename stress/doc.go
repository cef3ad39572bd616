// Package stress is sever's stress and fault-injection harness, behind
// `sever stress`: evidence that the lifetime contract holds under load,
// faults and bad input, with figures.
//
// A run is a sequence of rounds. Each round boots a fresh simulated machine
// (package sim) — USB ports with cp2112 boards (GPIO, IRQ domain, I2C with
// an EEPROM and a sensor), stress devices driven by this package's
// fault-injecting driver, a SCSI stack (scsi_mod, sd_mod, libata, ahci)
// with disks — and lets many goroutines ("workers") run a random mix of
// operations on it: plug and unplug, bind and unbind, unload (try and force)
// and reload modules, open, read, write, poll, wait, map and close
// attributes and char devices, remove devices and disks from their own
// attributes, submit, freeze and kill block I/O, request, raise and free
// IRQs, and call I2C and GPIO consumer handles. An operation picks among
// the objects that exist when it runs (an occupied port, an unbound
// device, a module that is gone), and one that would find nothing to act
// on becomes the operation that makes something — a plug, an open, a bind
// — so that almost none is a no-op (Result.SkipShare). Then every worker closes
// what it holds, the machine is quiesced — every device unplugged or
// removed, every module unloaded — and audited.
//
// # Faults
//
// The module "stressdrv" (a platform driver) makes its callbacks — Probe,
// Remove, attribute Show and Store, binary Read and Write, char device
// Open, Read, Write, Ioctl, Poll, Mmap, Release, the disk's QueueRq, and the
// harness's IRQ handlers — sleep, return an error, or panic, by the choice
// of the operation that reaches them; its probes fail (or panic) half-way,
// at a step the operation picks. An injected panic must be recovered by the
// framework and recorded as exactly one check.DriverFault, whose detail
// carries PanicMarker: the harness counts those as expected and compares
// the count with the panics it injected. The driver also checks the
// contract from its side: a callback after its Remove
// (check.CallbackAfterSever), a use of its driver data or of an open's
// state after it was freed (check.UseAfterFree), a per-open Release run
// twice or never (check.ReleaseTwice, check.ReleaseNeverRun).
//
// # Invariants
//
// Checked continuously, by observing the machine's check.Log: every
// violation the checker records, but the expected driver faults. Checked by
// the workers after each operation: every error wraps an errno; a file
// that is a shell stays one (every later operation returns ENODEV); a
// hang-up from poll comes with ENODEV; Close and free_irq succeed once and
// then refuse with EBADF; a transfer after ENODEV is ENODEV. Checked at
// quiesce: the checker's own audit (releases never run, goroutines left,
// devices, IRQ entries and char devices that outlived their providers), no
// IRQ still requested, every injected panic recorded, and every file shell
// the workers opened unreachable once closed and its device gone (a
// runtime cleanup per shell). Every removal runs under a deadline; one
// past it is a check.SeverTimeout, and an operation that runs far past
// it (a deadlock) is reported as "stuck" with every goroutine's stack. At
// the end of the run no goroutine may be left behind (goleak).
//
// # Replay
//
// Worker w of round r draws its operations from its own PCG source seeded
// with (seed, r, w): the choice sequence of a round depends on nothing
// else, and an operation's choices (Op.A, Op.B, Op.C) are drawn before it
// runs — what they select (a port, a handle, a module) is decided then,
// modulo what exists. So a round replays with the same choices from the
// same seed, goroutine count, round size and fault rate (Config.Replay).
// Under real concurrency that is all a replay can promise: the same
// choices in another interleaving, which reproduces a failure only as
// often as the interleaving recurs. Config.Serial runs the round's
// operations one at a time in a fixed order (waiting for deferred work
// after each), which makes the interleaving — and so the outcome — the same
// every time, at the price of not being the interleaving that failed;
// RunOps runs given sequences, such as ones decoded from bytes (Decode),
// which is how FuzzOps explores sequences.
package stress
