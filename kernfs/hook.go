package kernfs

// removeHook is one function registered with OnRemove.
type removeHook struct {
	fn func(n *Node)
}

// OnRemove registers fn to be told of every node that leaves the tree, so
// that whoever caches the tree's names — a FUSE mount whose kernel keeps
// directory entries — can forget them.
//
// When: once per node, at the end of the claim step of the Remove (or
// RemoveSelf, or owner unload) that claimed it — that is, as soon as the
// node stops resolving: Lookup, Readdir and Open no longer see it. That is
// before its drain, so a removal held up by a slow callback does not keep
// a stale name alive; the node may still be unlinking when fn runs, and
// its name may be reused by a new node only after its Remove returns. For
// a removed subtree fn is called for every node in it, a directory before
// its contents; hidden nodes that were never visible are reported too.
// n.Parent() is the directory the node leaves and n.Name() its name there.
//
// On which goroutine: the removing one, with no lock of the tree held;
// several functions are called in the order they were registered. What it
// may touch: anything; the tree's read side (Lookup, Readdir, Path) works,
// and the node's Removed reports true. May it block: only briefly — the
// removal, and with it a device's unplug, waits for it; it must not wait
// for anything that waits for the removal (such as a callback of the
// removed subtree, which the drain is about to wait for), nor call Remove
// of an ancestor of n.
//
// cancel unregisters fn: a removal whose claim step ends after cancel
// returns does not call it. cancel does not wait for a removal already
// calling hooks, which may still call fn; a second cancel does nothing.
func (t *Tree) OnRemove(fn func(n *Node)) (cancel func()) {
	if fn == nil {
		panic("kernfs: OnRemove with a nil function")
	}
	h := &removeHook{fn: fn}
	t.hooksMu.Lock()
	t.hooks = append(t.hooks, h)
	t.hooksMu.Unlock()
	return func() {
		t.hooksMu.Lock()
		defer t.hooksMu.Unlock()
		for i, g := range t.hooks {
			if g == h {
				// Copy on delete: a removal may be iterating the old
				// slice without the lock.
				t.hooks = append(t.hooks[:i:i], t.hooks[i+1:]...)
				return
			}
		}
	}
}

// notifyRemoved calls the OnRemove hooks for nodes, which this removal
// claimed, in order.
func (t *Tree) notifyRemoved(nodes []*Node) {
	if len(nodes) == 0 {
		return
	}
	t.hooksMu.Lock()
	hooks := t.hooks
	t.hooksMu.Unlock()
	for _, n := range nodes {
		for _, h := range hooks {
			h.fn(n)
		}
	}
}
