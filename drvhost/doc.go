// Package drvhost runs providers in other processes — driver hosts, as
// Fuchsia calls them — and makes a host's death a hot-unplug.
//
// A host process builds its devices on a machine of its own, with the
// ordinary sever packages, and serves them (Host.Serve) over gRPC on a Unix
// socket its supervisor created and handed it. The machine's Supervisor
// spawns the process, asks it what it provides and registers each device
// under /devices/host-<name>/ as a local one: the host's attribute tree is
// mirrored (each Show and Store crosses to the host inside the node's
// active reference), its char devices are registered in the machine's dev/
// (each op crosses inside the char device's active reference; readiness
// comes back on a stream), and its calls are a device.Provider[Service]
// whose handles cross inside the provider's active reference. So a removal
// of a host's device waits for calls in flight into the host exactly as
// for local ones.
//
// The host's death is a surprise removal through the one removal path:
//
//	kill -9, panic, exit ─▶ the socket closes: the Watch stream breaks and
//	                        the process is reaped (no timer involved)
//	hang                  ─▶ a ping misses Config.HealthTimeout; the host is
//	                        killed
//	then: cancel the generation's context (calls in flight return
//	      ENODEV at once) → device.Unregister(/devices/host-<name>):
//	      files severed (pollers wake ERR|HUP, open files stay shells),
//	      provider revoked (handles are shells) → the generation's owner
//	      unloaded → process reaped, connection closed → restart per Policy
//
// A device the host removes while it lives on — its own code unregisters
// it, a driver unbinds it, or its directory leaves the host's tree (see
// Export) — is removed from the machine the same way, alone: the host
// reports it on its Watch stream, and the machine cancels that device's
// context (its calls in flight return ENODEV at once) and unregisters its
// side (files severed, provider revoked); the host, its generation and its
// other devices go on:
//
//	host removes a device ─▶ Watch event "gone" ─▶ cancel the device's
//	      context → device.Unregister(/devices/host-<name>/<device>)
//
// A restarted host is a new generation: new devices, a new owner; handles
// and files of the old generation stay shells and never reach the new one.
// The supervisor's controls are /hosts/<name>/ in the machine's sysfs.
//
// The same protocol serves a host on another machine: Config.Dial with
// mutual TLS (Config.TLS, Host.TLS) instead of a process. There a crash and
// a partition look alike and are found by deadline — the health ping and
// gRPC's keepalive — and a "restart" is a reconnection (see Config.Dial).
//
// Why gRPC directly and not hashicorp/go-plugin: go-plugin's value is its
// handshake over stdout, its process management and log forwarding, but
// the supervisor needs its own process policy (kill -9 detection by the
// socket, hang detection, restart with generations), and the listener is
// handed to the child as a file descriptor, which needs no handshake. gRPC
// gives the framing, the deadlines, cancellation of calls in flight and
// the connection's death; messages are Go structs encoded as JSON by a
// codec forced on both ends (no protoc step, no global codec registration).
package drvhost
