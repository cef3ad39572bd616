package fusefs

import "github.com/sever-dev/sever/chardev"

// devMode is the mode of a file under dev/: a regular file, read and
// written by its owner (the serving user) and group. It cannot be a
// character special file: the kernel would open the real device of that
// number instead of asking the server.
const devMode = 0o660

// dev/ lists the live char devices of the registry by name (lookup and
// opendir in node.go; open in handle.go). A name's entry is cached for the
// mount's entry validity and invalidated as soon as the device's
// unregistration begins — a watcher per char device the kernel was told
// of waits for that — so the name stops resolving at once, as a kernfs
// node's does. The same *chardev.Cdev is always the same inode while the
// kernel remembers it, and a device registered again under the same name
// is a new one. A dev/ file's attributes never change, also after the
// device is unregistered; setattr accepts truncation (a shell's `>`) and
// times without effect, as a char device does.

// watchCdev starts, once per char device, a goroutine that invalidates the
// device's dev/ entry when its unregistration begins. It stops at Close.
// It is called only from a request handler, so never after Close began
// waiting for watchers.
func (m *Server) watchCdev(c *chardev.Cdev) {
	m.mu.Lock()
	if _, ok := m.cdevs[c]; ok || m.closed {
		m.mu.Unlock()
		return
	}
	m.cdevs[c] = struct{}{}
	m.watchers.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.watchers.Done()
		select {
		case <-c.Severing():
			m.invalidate(devDirID, c.Name())
		case <-m.ctx.Done():
		}
		m.mu.Lock()
		delete(m.cdevs, c)
		m.mu.Unlock()
	}()
}
