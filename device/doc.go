// Package device is the driver core: buses match devices to drivers,
// devices form a tree with a kernfs directory each, and every removal —
// unplug, unbind, driver or owner unload, a failed Probe — takes one path
// whose order is the design (see Device.Unregister):
//
//	children first, bottom-up → sever files and char devices → unbind
//	managed consumers → revoke provider handles → driver Remove → managed
//	resources, newest first → owner pin dropped → uevents → reference audit
//
// After Unregister returns, no callback into the driver runs or will run
// (seed 004's immediate disconnect), and consumers keep only shells that
// return ErrNoDevice (seed 000; DESIGN.md, "Seeds"). Everything a binding acquires through its
// device — resources (AddResource), severables (AddSeverable: kernfs nodes,
// char devices), providers (NewProvider), child devices — is undone when
// the binding ends. Nothing is global: a Core is one simulated machine.
package device
