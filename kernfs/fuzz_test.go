package kernfs_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/kernfs"
)

// The parsers' contract, for any input: either a value of the documented
// type that satisfies the documented rule, or an error wrapping EINVAL —
// never a panic, never another error.

func invalid(t *testing.T, what, s string, err error) {
	t.Helper()
	if !errors.Is(err, sever.ErrInvalid) || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("%s(%q): error %v does not wrap EINVAL", what, s, err)
	}
}

func FuzzParseInt(f *testing.F) {
	for _, s := range []string{"0", "1", "-1", "0x10", "010", "0b101", "9223372036854775807", "-9223372036854775808", "99999999999999999999", "", " 1", "1_000", "0x", "+5"} {
		f.Add(s, int64(-5), int64(100))
	}
	f.Fuzz(func(t *testing.T, s string, lo, hi int64) {
		v, err := kernfs.Int(lo, hi)(s)
		if err != nil {
			invalid(t, "Int", s, err)
			return
		}
		n, ok := v.(int64)
		want, perr := strconv.ParseInt(s, 0, 64)
		if !ok || perr != nil || n != want || n < lo || n > hi {
			t.Fatalf("Int(%d, %d)(%q) = %v; ParseInt says %d, %v", lo, hi, s, v, want, perr)
		}
	})
}

func FuzzParseBool(f *testing.F) {
	for _, s := range []string{"1", "0", "y", "N", "yes", "No", "on", "OFF", "true", "False", "", "2", "yess", "\u0130"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := kernfs.Bool()(s)
		if err != nil {
			invalid(t, "Bool", s, err)
			return
		}
		b, ok := v.(bool)
		yes := map[string]bool{"1": true, "y": true, "yes": true, "on": true, "true": true}
		no := map[string]bool{"0": true, "n": true, "no": true, "off": true, "false": true}
		l := strings.ToLower(s)
		if !ok || b && !yes[l] || !b && !no[l] {
			t.Fatalf("Bool()(%q) = %v", s, v)
		}
	})
}

func FuzzParseEnum(f *testing.F) {
	for _, s := range []string{"idle", "busy", "off", "Idle", "", "idle ", "busy\x00"} {
		f.Add(s)
	}
	values := []string{"idle", "busy", "off", ""}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := kernfs.Enum(values...)(s)
		member := false
		for _, x := range values {
			member = member || x == s
		}
		switch {
		case err != nil && member:
			t.Fatalf("Enum(%q) refused a member: %v", s, err)
		case err != nil:
			invalid(t, "Enum", s, err)
		case !member || v != s:
			t.Fatalf("Enum(%q) = %v, accepting a non-member", s, v)
		}
	})
}

func FuzzParseString(f *testing.F) {
	for _, s := range []string{"", "a", "hello", "with\x00nul", strings.Repeat("x", 17)} {
		f.Add(s, 16)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		v, err := kernfs.String(max)(s)
		ok := len(s) <= max && !strings.ContainsRune(s, 0)
		switch {
		case err != nil && ok:
			t.Fatalf("String(%d)(%q) refused: %v", max, s, err)
		case err != nil:
			invalid(t, "String", s, err)
		case !ok || v != s:
			t.Fatalf("String(%d)(%q) = %v", max, s, v)
		}
	})
}

// FuzzLookup walks arbitrary paths through a tree with directories, text
// and binary attributes, hidden and removed nodes, a symlink to a
// directory, a dangling one and a loop. Lookup and Open must fail only
// with the errnos they document, and a node found must be found again at
// its own path.
func FuzzLookup(f *testing.F) {
	for _, p := range []string{"/", "/a", "/a/b/c", "/a/link/c", "/a/loop/x", "/a/dangling", "/a/hidden/x", "//a", "/a/../a", "/a/./b", "a/b", "/a/b/", "/" + strings.Repeat("x", 300), "/a/link", "/a/b/c/d", "/a\x00b"} {
		f.Add(p)
	}
	tr := kernfs.New()
	node := must[*kernfs.Node](f) // the setup must succeed
	a, _ := tr.AddDir(tr.Root(), kernfs.Dir{Name: "a"})
	b, _ := tr.AddDir(a, kernfs.Dir{Name: "b"})
	node(tr.AddAttr(b, kernfs.Attr{Name: "c", Show: func(_ *kernfs.Call, buf []byte) ([]byte, error) { return append(buf, "c\n"...), nil }}))
	node(tr.AddBin(b, kernfs.BinAttr{Name: "bin", Size: 8, Read: func(*kernfs.Call, int64, []byte) (int, error) { return 0, nil }}))
	hidden, _ := tr.AddDir(a, kernfs.Dir{Name: "hidden", Hidden: true})
	node(tr.AddAttr(hidden, kernfs.Attr{Name: "x", Show: func(_ *kernfs.Call, buf []byte) ([]byte, error) { return buf, nil }}))
	node(tr.AddSymlink(a, "link", b, nil))
	gone, _ := tr.AddDir(a, kernfs.Dir{Name: "gone"})
	node(tr.AddSymlink(a, "dangling", gone, nil))
	loop, _ := tr.AddDir(a, kernfs.Dir{Name: "l"})
	l1, _ := tr.AddSymlink(loop, "x", loop, nil)
	node(tr.AddSymlink(a, "loop", l1, nil))
	if err := tr.Remove(context.Background(), gone); err != nil {
		f.Fatal(err)
	}
	allowed := []error{sever.ErrInvalid, sever.ErrNameTooLong, sever.ErrNotDir, sever.ErrNotExist, sever.ErrIsDir, sever.ErrPermission}
	f.Fuzz(func(t *testing.T, path string) {
		n, err := tr.Lookup(path)
		if err != nil {
			if !anyIs(err, allowed) {
				t.Fatalf("Lookup(%q): %v, not a documented errno", path, err)
			}
		} else if m, err := tr.Lookup(n.Path()); err != nil || m != n {
			t.Fatalf("Lookup(%q) found %s, but Lookup of that path gives %v, %v", path, n.Path(), m, err)
		}
		if f, err := tr.Open(path, os.O_RDONLY); err == nil {
			closeOK(t, f)
		} else if !anyIs(err, allowed) {
			t.Fatalf("Open(%q): %v, not a documented errno", path, err)
		}
	})
}

func anyIs(err error, targets []error) bool {
	for _, e := range targets {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
