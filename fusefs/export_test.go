package fusefs

// Watchers returns how many poll wakeups are registered: at most one per
// open file whose poller the kernel asked to wake.
func (m *Server) Watchers() int { return int(m.nwatch.Load()) }

// Lookups returns how many lookups the kernel sent for names below sys/
// and dev/: none for a name whose entry it has cached.
func (m *Server) Lookups() int64 { return m.nlookup.Load() }

// Handles returns how many files opened through the mount are not yet
// released.
func (m *Server) Handles() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.handles)
}
