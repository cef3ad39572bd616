package fuse

// NewTestConn returns a Conn on fd, a SOCK_SEQPACKET socket standing in
// for /dev/fuse (it keeps message boundaries as the device does), with
// INIT already done: the test plays the kernel on the other end.
func NewTestConn(fd, readers int) *Conn {
	return &Conn{dir: "test", fd: fd, maxWrite: 128 << 10, readers: readers, minor: protoMinor, served: make(chan struct{})}
}

// Readers returns how many readers run now.
func (c *Conn) Readers() int {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.nreaders
}
