package kernfs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/internal/mutation"
)

// Remove removes n and everything below it, and returns when no callback
// of any of those nodes is running or will ever run again:
//
//  1. claim: top-down, every node is marked removing — Lookup, Readdir and
//     Open stop seeing it and no new operation starts on it, Poll of its
//     open files reports EventErr|EventHup and their pollers (Wait,
//     OnChange) wake — and the OnRemove hooks are told of each;
//  2. drain: bottom-up, each node's active reference is severed, waiting
//     for the operations in flight on it — only those, never for open
//     files;
//  3. release: the provider's Release runs once for every file still open
//     on the node, the owner's pin for each is dropped and its wait queue
//     is severed; the node's Region, if any, is severed;
//  4. unlink: the node leaves its directory and its owner's list.
//
// Files stay open as shells; every operation on them returns an error
// wrapping ErrNoDevice until they are closed.
//
// Remove is idempotent and may run concurrently with other Removes and
// RemoveSelfs of overlapping subtrees: each returns only when its whole
// subtree is removed. If ctx is done while operations are still inside, it
// returns the drain's *sever.HoldersError (recording check.SeverTimeout in
// the log); the subtree stays denied and a later Remove finishes it.
// Removing the root panics. Calling Remove on a node from inside one of
// that subtree's callbacks would wait for itself: after a short grace it
// returns an error wrapping sever.ErrDeadlock naming the node, the subtree
// stays denied and a Remove from outside finishes it; use Call.RemoveSelf.
func (t *Tree) Remove(ctx context.Context, n *Node) error {
	t.mine(n)
	if n.parent == nil {
		panic("kernfs: Remove of the root")
	}
	_, err := t.remove(ctx, n)
	return err
}

// remove runs the steps of Remove and reports whether this call claimed n.
func (t *Tree) remove(ctx context.Context, n *Node) (won bool, err error) {
	var nodes, claimed []*Node
	won = claim(n, &nodes, &claimed)
	// Poll answers ERR|HUP from the claim on: deny each claimed node's
	// scope now — its pollers (Wait, OnChange) wake — not after the drain,
	// which may wait long, and before the hooks, which may block on the
	// kernel. The sever below finds its first step done.
	for _, c := range claimed {
		c.scope.Deny()
	}
	// The claimed nodes no longer resolve: tell the OnRemove hooks now,
	// before the drain.
	t.notifyRemoved(claimed)
	for i := len(nodes) - 1; i >= 0; i-- { // reverse pre-order: children before parents
		if err := t.sever(ctx, nodes[i]); err != nil {
			return won, err
		}
	}
	return won, nil
}

// claim marks n and its subtree removing, pre-order, appending to out every
// node not yet removed and to claimed every node this call moved out of
// hidden or live, and reports whether n itself is one of those — the
// KERNFS_SUICIDAL arbitration among removers. A directory is claimed under
// its lock, so no child is added after its snapshot.
func claim(n *Node, out, claimed *[]*Node) (won bool) {
	var kids []child
	if n.kind == KindDir {
		n.mu.Lock()
		won = markRemoving(n)
		if nodeState(n.state.Load()) != stateRemoved {
			kids = make([]child, 0, len(n.children))
			for _, c := range n.children {
				kids = append(kids, child{c.seq, c})
			}
		}
		n.mu.Unlock()
		// In the order they were made, which is the order their memory
		// was allocated in: a big directory's map order is random, and
		// visiting a million nodes at random addresses costs a cache and
		// TLB miss each (2.7× the time per node at 1M). The sort reads
		// the copied seq, not the node, so it touches no node at all.
		slices.SortFunc(kids, func(a, b child) int { return cmp.Compare(a.seq, b.seq) })
	} else {
		won = markRemoving(n)
	}
	if won {
		*claimed = append(*claimed, n)
	}
	if nodeState(n.state.Load()) == stateRemoved {
		return won
	}
	*out = append(*out, n)
	for _, c := range kids {
		claim(c.n, out, claimed)
	}
	return won
}

// child is a directory's child with the order it was made in, as claim
// sorts them.
type child struct {
	seq uint64
	n   *Node
}

func markRemoving(n *Node) bool {
	for {
		s := n.state.Load()
		if nodeState(s) >= stateRemoving {
			return false
		}
		if n.state.CompareAndSwap(s, int32(stateRemoving)) {
			return true
		}
	}
}

// sever severs n's scope — drain, release its open files, wake their
// pollers, sever its Region (sever.Scope.Sever) — and unlinks it. Every
// remover of a subtree containing n runs it; the scope's Sever is shared,
// and the unlink is idempotent.
func (t *Tree) sever(ctx context.Context, n *Node) error {
	// Steps 2 and 3: Enter fails from here on; wait for those inside,
	// then release what is still open.
	if err := n.scope.Sever(ctx); err != nil {
		return err
	}
	if nodeState(n.state.Load()) == stateRemoved {
		return nil
	}
	// Step 4, unlink. A parent that is being removed is no longer walked
	// (Lookup and Readdir see only live directories; Add refuses), so n
	// leaves it only with the parent's own unlink, which drops its whole
	// map at once: a subtree is unlinked with one map delete, at its top,
	// not one per node. An open file of n keeps n's parent reachable, so
	// the map must not outlive the parent's removal.
	if p := n.parent; p != nil {
		p.mu.Lock()
		if nodeState(p.state.Load()) < stateRemoving && p.children[n.name] == n {
			delete(p.children, n.name)
			p.sorted.Store(nil)
		}
		p.mu.Unlock()
	}
	if n.kind == KindDir {
		n.mu.Lock()
		n.children = nil
		n.sorted.Store(nil)
		n.mu.Unlock()
	}
	t.disown(n)
	n.state.Store(int32(stateRemoved))
	return nil
}

// Notify tells pollers of n that its content changed (sysfs_notify): every
// open file of n reports EventPri|EventErr to Poll and wakes from Wait, until
// it next reads at offset 0. Notify of a removed node does nothing. It
// calls no provider code and may be called from anywhere, including a
// callback.
func (t *Tree) Notify(n *Node) {
	t.mine(n)
	n.scope.Notify(sever.EventPri | sever.EventErr)
}

// ScheduleCallback runs fn later on a goroutine of its own with n's owner —
// the owner of the code behind n's callbacks, which must be fn's owner too —
// pinned from now until fn returns, so the owner cannot finish unloading
// before fn has run (seed 004, Example 1, where the work outlived
// scsi_mod). If the owner is already unloading, fn is not scheduled and
// ScheduleCallback returns an error wrapping ErrNoDevice; nil means fn will
// run. fn runs as the owner's code: a call that would reach a gone owner is
// recorded, not made. fn may call anything, including Remove of n. With a
// log, the goroutine is accounted for by check.Log.Quiesce. Tree.Flush
// waits for scheduled callbacks.
func (t *Tree) ScheduleCallback(n *Node, fn func()) error {
	t.mine(n)
	o := n.owner
	pin := &struct{ n *Node }{n} // the pin's tag
	if mutation.ForgetOwnerPin { // a planted bug: see package internal/mutation
		o = nil
	}
	if o != nil && !o.TryGet(pin) {
		return n.errorf(fmt.Errorf("callback not scheduled: owner %s is %v: %w", o.Name(), o.State(), sever.ErrNoDevice))
	}
	t.cbMu.Lock()
	t.cbs++
	t.cbMu.Unlock()
	t.log.Go("kernfs callback for "+n.Path(), func() {
		defer t.callbackDone()
		if o != nil {
			defer o.Put(pin)
		}
		// The pin taken above is the call's; the call is still checked
		// (and, with the planted bug, refused) if the owner is gone.
		_ = n.scope.InvokeHeld(n.owner, n.scope.Name()+": scheduled callback", func() error { fn(); return nil })
	})
	return nil
}

// ownerNodes is the set of nodes one owner backs in one tree, and the
// owner's unload hook, registered once per owner per tree.
type ownerNodes struct {
	nodes  map[*Node]struct{}
	cancel func()
}

// own records that n's owner backs n, registering the owner's unload hook
// with the first node. It fails if the owner is not live: a node backed by
// an unloading owner would outlive it.
func (t *Tree) own(n *Node) error {
	o := n.owner
	if o == nil {
		return nil
	}
	t.ownersMu.Lock()
	defer t.ownersMu.Unlock()
	e := t.owners[o]
	if e == nil {
		cancel, err := o.OnUnload("kernfs", func(ctx context.Context) error { return t.unloadOwner(ctx, o) })
		if err != nil {
			return n.errorf(fmt.Errorf("owner %s is %v: %w", o.Name(), o.State(), sever.ErrNoDevice))
		}
		e = &ownerNodes{nodes: make(map[*Node]struct{}), cancel: cancel}
		t.owners[o] = e
	}
	// Checked under ownersMu: an unload that began before this point is
	// refused here; one that begins after runs the hook, which takes
	// ownersMu and so sees n.
	if o.State() != sever.OwnerLive {
		if len(e.nodes) == 0 {
			e.cancel()
			delete(t.owners, o)
		}
		return n.errorf(fmt.Errorf("owner %s is %v: %w", o.Name(), o.State(), sever.ErrNoDevice))
	}
	e.nodes[n] = struct{}{}
	return nil
}

// disown forgets n in its owner's set; the hook goes with the last node.
func (t *Tree) disown(n *Node) {
	o := n.owner
	if o == nil {
		return
	}
	t.ownersMu.Lock()
	defer t.ownersMu.Unlock()
	e := t.owners[o]
	if e == nil {
		return
	}
	delete(e.nodes, n)
	if len(e.nodes) == 0 {
		e.cancel()
		delete(t.owners, o)
	}
}

// unloadOwner is the owner's unload hook: it removes every node the owner
// backs, with their subtrees, before the owner's exit runs.
func (t *Tree) unloadOwner(ctx context.Context, o *sever.Owner) error {
	t.ownersMu.Lock()
	e := t.owners[o]
	delete(t.owners, o)
	t.ownersMu.Unlock()
	if e == nil {
		return nil
	}
	// No lock is held now: the set is ours (own refuses new nodes, as the
	// owner is going, and disown finds no entry).
	var errs []error
	for n := range e.nodes {
		if _, err := t.remove(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
