// Package sever provides the lifetime primitives of a hot-unplug-safe driver
// model: a provider can disappear at any moment while consumers still hold
// handles to what it provided, and nothing crashes, leaks, deadlocks or calls
// into code that is gone.
//
// Three lifetimes collide in every driver (seed 004): the device, which
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
//
// Every error sever returns satisfies errors.Is with its syscall errno
// (ErrNoDevice with syscall.ENODEV, and so on), so a Go caller and a process
// reading a file on the FUSE mount see the same failure.
//
// Contract violations are reported into a check.Log given WithLog, or panic
// without one; see package check.
package sever
