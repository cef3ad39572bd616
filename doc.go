// Package sever provides the lifetime primitives of a hot-unplug-safe driver
// model: a provider can disappear at any moment while consumers still hold
// handles to what it provided, and nothing crashes, leaks, deadlocks or calls
// into code that is gone.
//
// Three lifetimes collide in every driver (DESIGN.md, "The problem"; seed
// 004): the device, which
// comes and goes; the references to the objects that represent it, which
// anyone may hold for as long as they like; and the code behind its
// callbacks, which can be unloaded. The primitives keep them apart:
//
//   - Scope is the sever protocol, written once, that every package giving
//     consumers a way into provider code stands on (kernfs nodes, chardev
//     devices, device providers, IRQ requests, blockq drivers). Its Call
//     enters, checks and pins the owner of the code it runs, recovers a
//     panic as a driver fault (EIO), and exits; its Open gives a Shell whose
//     Release runs exactly once and whose memory the framework frees; its
//     Sever denies, severs its children, drains, releases open shells, wakes
//     their pollers with EventErr|EventHup, severs its regions and detaches
//     from its parent. Read its documentation first: the rest is the pieces.
//   - Active guards calls into a provider. Severing it refuses new calls and
//     waits for the calls in flight — never for handles that are merely
//     held — so unregistering is immediate.
//   - Revocable publishes a provider's value to consumers through Access,
//     which cannot outlive Revoke.
//   - Ref counts references to framework-owned shells, whose memory outlives
//     the provider and is freed at the last Put without calling provider
//     code.
//   - WaitQueue is where pollers sleep; it belongs to the shell, and severing
//     wakes every sleeper with EventErr|EventHup.
//   - Owner is the lifetime of code (a module): pinned by whoever may call
//     into it, unloaded by severing its users first.
//   - Region is memory a provider hands over to the framework because a
//     process may still map it after the provider is gone; the framework
//     frees it at the last unmap or close, calling no provider code, so it
//     keeps no module loaded.
//
// The design behind them — the model, the one protocol every call into a
// provider follows, the order of a removal, and the kernel mailing-list
// threads it was drawn from (seed 000 … seed 004) — is in DESIGN.md at the
// root of the repository.
//
// Every error sever returns satisfies errors.Is with its syscall errno
// (ErrNoDevice with syscall.ENODEV, and so on), so a Go caller and a process
// reading a file on the FUSE mount see the same failure.
//
// Misuse — using a primitive against its contract — is loud. An Active
// detects it (an Exit with a Token whose access already exited, or with a
// copy of one; a foreign or zero Token; a Sever inside its own Do) before it
// changes anything, so the Active stays correct afterwards: given WithLog
// it records check.Misuse into that log and the call changes nothing, and
// without a log it panics with a sentence naming the object and the misuse
// (a Sever inside its own Do returns an error wrapping ErrDeadlock either
// way, having begun severing). A zero or nil Active always
// panics: it has no log to report into. Misuse of Ref, Owner and Region
// panics with or without a log. Contract violations by providers (a callback
// after sever, a release run twice) are recorded into the log given
// WithLog; see package check.
//
// # Removal verbs
//
// Every verb below is the same protocol (Scope.Sever's steps) named as its
// layer names it; each denies new calls, waits only for calls in flight,
// releases what is still open and returns when no provider code runs
// through the object any more:
//
//	verb                      layer            what goes
//	Active.Sever              sever            one guarded access point
//	Scope.Sever               sever            a scope, its children, its open shells
//	Revocable.Revoke          sever            a value published to consumers
//	Owner.Unload              sever            a module: severs what reaches its code
//	Tree.Remove               kernfs           a node and its subtree
//	Cdev.Unregister           chardev          a char device
//	Provider.Revoke           device           a device's service to consumers
//	Device.Unregister         device           a device: children, files, providers, driver
//	Device.UnregisterSelf     device           the same, from inside its own attribute callback
//	Chip.Remove and the like  subsys/...       a subsystem's device (its Device.Unregister)
//
// Called from inside one of the object's own callbacks, each would wait for
// itself. Those built on a Scope (Scope.Sever, Tree.Remove,
// Cdev.Unregister, Device.Unregister) and Active.Sever inside Active.Do
// detect it after a short grace and return an error wrapping ErrDeadlock;
// the others wait until their context is done. The self-removal forms are
// Call.RemoveSelf (kernfs), Device.UnregisterSelf and Active.SeverSelf.
//
// Lifetimes can be watched: WithObserver reports every primitive's
// creation, state changes and refused calls to an Observer (packages
// lifetrace and lifepage turn them into a Perfetto trace and an HTML
// timeline), and while a runtime/trace recording is on each object's life
// is a task with its drains and releases as regions.
package sever
