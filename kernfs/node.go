package kernfs

import (
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever"
)

// Node is one entry of the tree: a directory, an attribute, a binary
// attribute or a symlink. A Node value stays valid, as an object, after it
// is removed: its Path and Name still answer, and everything else reports
// it gone.
//
// Its states, as in the code:
//
//	hidden ──Activate──▶ live ──Remove──▶ removing ──drained, opens released──▶ removed
//	   └───────────────────Remove──────────────┘
//
// hidden: created under Dir.Hidden; invisible to Lookup, Readdir and Open.
// live: visible; operations enter its active reference. removing: claimed
// by a remover; no new operation or open starts, those in flight drain.
// removed: every open file was released, the node is unlinked from its
// parent, and no callback of it runs again.
type Node struct {
	tree   *Tree
	parent *Node // nil for the root; never changes (nodes are not renamed)
	name   string
	kind   Kind
	mode   fs.FileMode
	owner  *sever.Owner
	scope  *sever.Scope // every call into the node's provider code, its open files and Region
	state  atomic.Int32 // nodeState
	seq    uint64       // the order it was made in, in its tree

	// directories
	mu       sync.RWMutex     // guards children; claims of a dir take it
	children map[string]*Node // nil for non-directories
	sorted   atomic.Pointer[[]*Node]

	// attributes
	attr *Attr
	bin  *BinAttr

	// symlinks
	target *Node

	errGone error                             // "kernfs: <path>: no such device", built once
	sites   atomic.Pointer[[siteCount]string] // the names of its callbacks, built at the first call
}

type nodeState int32

const (
	stateHidden nodeState = iota
	stateLive
	stateRemoving
	stateRemoved
)

func (s nodeState) String() string {
	switch s {
	case stateHidden:
		return "hidden"
	case stateLive:
		return "live"
	case stateRemoving:
		return "removing"
	case stateRemoved:
		return "removed"
	}
	return "state?"
}

func (t *Tree) newNode(parent *Node, name string, kind Kind, mode fs.FileMode, owner *sever.Owner) *Node {
	n := &Node{tree: t, parent: parent, name: name, kind: kind, mode: mode, owner: owner, seq: t.made.Add(1)}
	n.scope = sever.NewScope("kernfs: "+n.Path(), owner, t.opts...)
	n.errGone = n.scope.Gone()
	if kind == KindDir {
		n.children = make(map[string]*Node)
	}
	return n
}

// site returns the name of n's callback site, "kernfs: <path>: Show". The
// names are built at n's first call, not with the node: most nodes of a big
// tree are never called, and their names would be most of an idle node.
func (n *Node) site(site int) string {
	s := n.sites.Load()
	if s == nil {
		s = new([siteCount]string)
		for i, name := range siteNames {
			s[i] = n.scope.Name() + ": " + name // the scope is named "kernfs: <path>"
		}
		if !n.sites.CompareAndSwap(nil, s) {
			s = n.sites.Load()
		}
	}
	return s[site]
}

// Name returns the node's name ("" for the root).
func (n *Node) Name() string { return n.name }

// Path returns the node's absolute path, "/devices/usb1/1-1/value". It
// stays valid after the node is removed.
func (n *Node) Path() string {
	if n.parent == nil {
		return "/"
	}
	var parts []string
	for m := n; m.parent != nil; m = m.parent {
		parts = append(parts, m.name)
	}
	slices.Reverse(parts)
	return "/" + strings.Join(parts, "/")
}

// Kind returns what the node is.
func (n *Node) Kind() Kind { return n.kind }

// Mode returns the node's type and permission bits: fs.ModeDir|0755 for a
// directory, fs.ModeSymlink|0777 for a symlink, the attribute's mode
// otherwise.
func (n *Node) Mode() fs.FileMode { return n.mode }

// Size returns the size a stat of the node reports, as sysfs has it: a
// binary attribute's BinAttr.Size (0 when the attribute did not say),
// PageSize for a text attribute, 0 for a directory or symlink. It never
// changes and stays valid after the node is removed.
func (n *Node) Size() int64 {
	switch n.kind {
	case KindBin:
		return n.bin.Size
	case KindAttr:
		return PageSize
	}
	return 0
}

// Owner returns the owner of the code behind the node's callbacks, or nil.
func (n *Node) Owner() *sever.Owner { return n.owner }

// Parent returns the directory the node was created in; nil for the root.
func (n *Node) Parent() *Node { return n.parent }

// Removed reports whether removal of the node has begun.
func (n *Node) Removed() bool { return nodeState(n.state.Load()) >= stateRemoving }

// Visible reports whether the node is live: activated and not being removed.
func (n *Node) Visible() bool { return nodeState(n.state.Load()) == stateLive }

func (n *Node) String() string { return n.Path() }

func (n *Node) errorf(err error) error {
	return &sever.ObjectError{Object: "kernfs: " + n.Path(), Err: err}
}

func (t *Tree) mine(n *Node) {
	if n == nil {
		panic("kernfs: nil node")
	}
	if n.tree != t {
		panic(fmt.Sprintf("kernfs: node %s belongs to another tree", n.Path()))
	}
}

// checkName validates one path component or new node's name.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name: %w", sever.ErrInvalid)
	case name == "." || name == "..":
		return fmt.Errorf("name %q not allowed: %w", name, sever.ErrInvalid)
	case len(name) > MaxNameLen:
		return fmt.Errorf("name of %d bytes, more than %d: %w", len(name), MaxNameLen, sever.ErrNameTooLong)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL: %w", name, sever.ErrInvalid)
	}
	return nil
}

// AddDir creates a directory in parent. It fails with an error wrapping
// ErrExist if parent already has a node of that name, ErrNotDir if parent
// is not a directory, ErrNotExist if parent is being removed, ErrInvalid or
// ErrNameTooLong for a bad name, and ErrNoDevice if Owner is not live. The
// directory is hidden if d.Hidden or if parent is hidden.
func (t *Tree) AddDir(parent *Node, d Dir) (*Node, error) {
	mode := d.Mode.Perm()
	if mode == 0 {
		mode = 0o755
	}
	n, err := t.add(parent, d.Name, KindDir, fs.ModeDir|mode, d.Owner, d.Hidden, nil)
	return n, err
}

// AddAttr creates a text attribute in parent; it fails as AddDir does, and
// with an error wrapping ErrInvalid if a has neither Show nor Store.
func (t *Tree) AddAttr(parent *Node, a Attr) (*Node, error) {
	if a.Show == nil && a.Store == nil {
		return nil, parent.errorf(fmt.Errorf("attribute %q has neither Show nor Store: %w", a.Name, sever.ErrInvalid))
	}
	mode := deriveMode(a.Mode, a.Show != nil, a.Store != nil)
	ac := a
	return t.add(parent, a.Name, KindAttr, mode, a.Owner, false, func(n *Node) { n.attr = &ac })
}

// AddBin creates a binary attribute in parent; it fails as AddAttr does.
func (t *Tree) AddBin(parent *Node, b BinAttr) (*Node, error) {
	if b.Read == nil && b.Write == nil && b.Region == nil {
		return nil, parent.errorf(fmt.Errorf("binary attribute %q has no Read, Write or Region: %w", b.Name, sever.ErrInvalid))
	}
	mode := deriveMode(b.Mode, b.Read != nil || b.Region != nil, b.Write != nil)
	bc := b
	return t.add(parent, b.Name, KindBin, mode, b.Owner, false, func(n *Node) { n.bin = &bc })
}

// AddSymlink creates in parent a symlink named name to target, as sysfs
// links /class/gpio/gpiochip0 to its device. owner, which may be nil, is
// the code that made the link: unloading it removes the link. The link does
// not keep target alive: once target is removed the link dangles, and
// following it fails with ErrNotExist.
func (t *Tree) AddSymlink(parent *Node, name string, target *Node, owner *sever.Owner) (*Node, error) {
	t.mine(target)
	return t.add(parent, name, KindSymlink, fs.ModeSymlink|0o777, owner, false, func(n *Node) { n.target = target })
}

func deriveMode(m fs.FileMode, canRead, canWrite bool) fs.FileMode {
	if m = m.Perm(); m != 0 {
		return m
	}
	if canRead {
		m |= 0o444
	}
	if canWrite {
		m |= 0o200
	}
	return m
}

func (t *Tree) add(parent *Node, name string, kind Kind, mode fs.FileMode, owner *sever.Owner, hidden bool, init func(*Node)) (*Node, error) {
	t.mine(parent)
	if parent.kind != KindDir {
		return nil, parent.errorf(sever.ErrNotDir)
	}
	if err := checkName(name); err != nil {
		return nil, parent.errorf(err)
	}
	n := t.newNode(parent, name, kind, mode, owner)
	if init != nil {
		init(n)
	}
	if n.bin != nil && n.bin.Region != nil {
		_ = n.scope.AddRegion(n.bin.Region) // a fresh scope is live: this cannot fail
	}
	// Register with the owner first, so an owner that starts unloading
	// after this point finds the node and removes it.
	if err := t.own(n); err != nil {
		return nil, err
	}
	parent.mu.Lock()
	ps := nodeState(parent.state.Load())
	if ps >= stateRemoving {
		parent.mu.Unlock()
		t.disown(n)
		return nil, parent.errorf(fmt.Errorf("directory is being removed: %w", sever.ErrNotExist))
	}
	if _, dup := parent.children[name]; dup {
		parent.mu.Unlock()
		t.disown(n)
		return nil, n.errorf(sever.ErrExist)
	}
	if !hidden && ps == stateLive {
		n.state.Store(int32(stateLive))
	}
	parent.children[name] = n
	parent.sorted.Store(nil)
	parent.mu.Unlock()
	return n, nil
}

// Activate makes n and every hidden node below it visible. Nodes below
// become live first and n last, so a Lookup that finds n finds its whole
// subtree. Activating a live node does nothing; activating a node whose
// parent is hidden makes it live but leaves it unreachable until the
// parent is activated. It fails with an error wrapping ErrNotExist if n is
// being removed.
func (t *Tree) Activate(n *Node) error {
	t.mine(n)
	var walk func(m *Node)
	walk = func(m *Node) {
		if m.kind == KindDir {
			m.mu.RLock()
			kids := make([]*Node, 0, len(m.children))
			for _, c := range m.children {
				kids = append(kids, c)
			}
			m.mu.RUnlock()
			for _, c := range kids {
				walk(c)
			}
			// A directory's children changed visibility: drop its cached
			// listing.
			m.sorted.Store(nil)
		}
		m.state.CompareAndSwap(int32(stateHidden), int32(stateLive))
	}
	walk(n)
	if n.parent != nil {
		n.parent.sorted.Store(nil)
	}
	if n.Removed() {
		return n.errorf(sever.ErrNotExist)
	}
	return nil
}

// maxLinkHops bounds symlink resolution (the VFS's MAXSYMLINKS).
const maxLinkHops = 40

// Lookup returns the live node at path, an absolute path such as
// "/devices/usb1/1-1/value". Symlinks in the middle of the path are
// followed; a symlink at its end is returned as itself. It fails with an
// error naming the path and wrapping ErrInvalid for a relative path or one
// with an empty, "." or ".." component, ErrNameTooLong for a component of
// more than MaxNameLen bytes or a path of more than MaxPathLen, ErrNotDir
// when a component other than the last is not a directory, and ErrNotExist
// when a node is missing, hidden or being removed. Lookup takes only the
// read locks of the directories it passes through.
func (t *Tree) Lookup(path string) (*Node, error) {
	return t.lookup(path, false)
}

func (t *Tree) lookup(path string, followLast bool) (*Node, error) {
	perr := func(err error) error { return &sever.ObjectError{Object: "kernfs: " + path, Err: err} }
	if len(path) > MaxPathLen {
		return nil, perr(fmt.Errorf("path of %d bytes, more than %d: %w", len(path), MaxPathLen, sever.ErrNameTooLong))
	}
	if !strings.HasPrefix(path, "/") {
		return nil, perr(fmt.Errorf("path is not absolute: %w", sever.ErrInvalid))
	}
	n := t.root
	if path == "/" {
		return n, nil
	}
	rest := path[1:]
	hops := 0
	for {
		name, tail, more := strings.Cut(rest, "/")
		if err := checkName(name); err != nil {
			return nil, perr(fmt.Errorf("component %q: %w", name, err))
		}
		if n.kind != KindDir {
			return nil, perr(fmt.Errorf("%s: %w", n.Path(), sever.ErrNotDir))
		}
		n.mu.RLock()
		c := n.children[name]
		n.mu.RUnlock()
		if c == nil || !c.Visible() {
			return nil, perr(sever.ErrNotExist)
		}
		if c.kind == KindSymlink && (more || followLast) {
			var err error
			if c, err = resolve(c, &hops); err != nil {
				return nil, perr(err)
			}
		}
		n = c
		if !more {
			return n, nil
		}
		rest = tail
	}
}

// resolve follows a chain of symlinks to a live non-link node.
func resolve(n *Node, hops *int) (*Node, error) {
	for n.kind == KindSymlink {
		if *hops++; *hops > maxLinkHops {
			return nil, fmt.Errorf("too many levels of symbolic links: %w", sever.ErrInvalid)
		}
		n = n.target
		if !reachable(n) {
			return nil, fmt.Errorf("dangling symlink: %w", sever.ErrNotExist)
		}
	}
	return n, nil
}

// reachable reports whether n and every ancestor are live.
func reachable(n *Node) bool {
	for m := n; m != nil; m = m.parent {
		if !m.Visible() {
			return false
		}
	}
	return true
}

// Readdir lists the live entries of directory n sorted by name. It fails
// with an error wrapping ErrNotDir if n is not a directory and ErrNotExist
// if n is not live. The listing is cached until the directory changes, so
// repeated listings of an unchanged directory neither sort nor lock.
func (t *Tree) Readdir(n *Node) ([]DirEntry, error) {
	t.mine(n)
	if n.kind != KindDir {
		return nil, n.errorf(sever.ErrNotDir)
	}
	if !n.Visible() {
		return nil, n.errorf(sever.ErrNotExist)
	}
	kids := n.sorted.Load()
	if kids == nil {
		// Build and publish under the read lock: a change, which takes
		// the write lock, cannot slip between the snapshot and the
		// publication and leave a stale listing cached.
		n.mu.RLock()
		s := make([]*Node, 0, len(n.children))
		for _, c := range n.children {
			s = append(s, c)
		}
		slices.SortFunc(s, func(a, b *Node) int { return strings.Compare(a.name, b.name) })
		kids = &s
		n.sorted.CompareAndSwap(nil, kids)
		n.mu.RUnlock()
	}
	out := make([]DirEntry, 0, len(*kids))
	for _, c := range *kids {
		if c.Visible() {
			out = append(out, DirEntry{Name: c.name, Kind: c.kind, Mode: c.mode, Node: c})
		}
	}
	return out, nil
}

// Readlink returns symlink n's target as a path relative to n's directory,
// as sysfs shows it ("../../devices/usb1/1-1"). It fails with an error
// wrapping ErrInvalid if n is not a symlink and ErrNotExist if n is not
// live.
func (t *Tree) Readlink(n *Node) (string, error) {
	t.mine(n)
	if n.kind != KindSymlink {
		return "", n.errorf(fmt.Errorf("not a symlink: %w", sever.ErrInvalid))
	}
	if !n.Visible() {
		return "", n.errorf(sever.ErrNotExist)
	}
	from := splitPath(n.parent.Path())
	to := splitPath(n.target.Path())
	i := 0
	for i < len(from) && i < len(to) && from[i] == to[i] {
		i++
	}
	var parts []string
	for range from[i:] {
		parts = append(parts, "..")
	}
	parts = append(parts, to[i:]...)
	if len(parts) == 0 {
		return ".", nil
	}
	return strings.Join(parts, "/"), nil
}

func splitPath(p string) []string {
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}
