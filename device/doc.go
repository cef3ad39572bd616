// Package device is the driver core: buses match devices to drivers,
// devices form a tree with a kernfs directory each, and every removal —
// unplug, unbind, driver or owner unload, supplier removal, a failed
// Probe — takes one function, whose steps are the design (Device.remove,
// unexported; its doc comment is the list Unregister's repeats):
//
//	children → files → consumers → providers → driver → resources → unbind → unlink
//
// children first, bottom-up; files and char devices severed; managed
// consumers unbound; provider handles revoked; the driver's Remove;
// managed resources, newest first; the owner pin dropped and "unbind"; for
// Unregister, links, bus and tree left, "remove", and the reference audit.
// What a scope (a binding, or the device itself) acquired — child devices,
// severables, managed resources — is one LIFO undo list per device, staged
// children, files, providers, resources: children, files, providers and
// resources above are its stages, each undone newest first, each entry
// exactly once whoever undoes it. Adding, dropping and undoing an entry
// cost the same whatever the list's length, so removing a device with n
// children is linear in n.
//
// After Unregister returns, no callback into the driver runs or will run
// (seed 004's immediate disconnect), and consumers keep only shells that
// return ErrNoDevice (seed 000; DESIGN.md, "Seeds"). Everything a binding acquires through its
// device — resources (AddResource), severables (AddSeverable: kernfs nodes,
// char devices), providers (NewProvider), child devices — is undone when
// the binding ends. Nothing is global: a Core is one simulated machine.
package device
