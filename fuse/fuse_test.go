package fuse_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever/fuse"
)

var le = binary.LittleEndian

// kernel is the test's stand-in for the kernel: the other end of a
// SOCK_SEQPACKET socket the Conn reads requests from and writes replies to.
type kernel struct {
	t    *testing.T
	fd   int
	c    *fuse.Conn
	done chan error
}

func start(t *testing.T, readers int, h fuse.Handler) *kernel {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no seqpacket sockets: %v", err)
	}
	k := &kernel{t: t, fd: fds[0], c: fuse.NewTestConn(fds[1], readers), done: make(chan error, 1)}
	go func() { k.done <- k.c.Serve(h) }()
	t.Cleanup(func() { k.end() })
	return k
}

// end closes the kernel's side: the readers read 0 bytes and stop.
func (k *kernel) end() {
	if k.fd < 0 {
		return
	}
	if err := syscall.Shutdown(k.fd, syscall.SHUT_WR); err != nil {
		k.t.Errorf("shutdown the kernel end: %v", err)
	}
	select {
	case err := <-k.done:
		if err != nil {
			k.t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		k.t.Fatal("Serve did not return after the connection ended")
	}
	if err := k.c.Close(); err != nil {
		k.t.Errorf("Close: %v", err)
	}
	if err := syscall.Close(k.fd); err != nil {
		k.t.Errorf("close the kernel end: %v", err)
	}
	k.fd = -1
}

// send writes a request: header with opcode, unique and node, then body.
func (k *kernel) send(op fuse.Opcode, unique, node uint64, body []byte) {
	k.t.Helper()
	msg := make([]byte, 40+len(body))
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint32(msg[4:], uint32(op))
	le.PutUint64(msg[8:], unique)
	le.PutUint64(msg[16:], node)
	copy(msg[40:], body)
	if _, err := syscall.Write(k.fd, msg); err != nil {
		k.t.Fatal(err)
	}
}

type reply struct {
	unique  uint64
	errno   syscall.Errno
	payload []byte
}

// reply reads the next reply, failing the test if none comes within d.
func (k *kernel) reply(d time.Duration) reply {
	k.t.Helper()
	tv := syscall.NsecToTimeval(d.Nanoseconds())
	if err := syscall.SetsockoptTimeval(k.fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		k.t.Fatalf("SO_RCVTIMEO: %v", err)
	}
	buf := make([]byte, 1<<18)
	n, err := syscall.Read(k.fd, buf)
	if err != nil {
		k.t.Fatalf("no reply within %v: %v", d, err)
	}
	if n < 16 || int(le.Uint32(buf)) != n {
		k.t.Fatalf("malformed reply of %d bytes: %x", n, buf[:n])
	}
	return reply{le.Uint64(buf[8:]), syscall.Errno(-int32(le.Uint32(buf[4:]))), buf[16:n]}
}

// noReply asserts nothing is written for d.
func (k *kernel) noReply(d time.Duration) {
	k.t.Helper()
	tv := syscall.NsecToTimeval(d.Nanoseconds())
	if err := syscall.SetsockoptTimeval(k.fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		k.t.Fatalf("SO_RCVTIMEO: %v", err)
	}
	buf := make([]byte, 1<<16)
	if n, err := syscall.Read(k.fd, buf); err == nil {
		k.t.Fatalf("unexpected reply: %x", buf[:n])
	}
}

func readBody(fh uint64, off int64, size uint32) []byte {
	b := make([]byte, 40)
	le.PutUint64(b[0:], fh)
	le.PutUint64(b[8:], uint64(off))
	le.PutUint32(b[16:], size)
	return b
}

func u64(v uint64) []byte { b := make([]byte, 8); le.PutUint64(b, v); return b }

// A LOOKUP is decoded and answered on the reader, with the reply's header
// carrying the request's unique ID and the entry's fields in place.
func TestLookupIsAnsweredWithTheEntry(t *testing.T) {
	k := start(t, 1, fuse.HandlerFunc(func(r *fuse.Request) {
		name, err := r.Lookup()
		if err != nil || name != "value" || r.Node != 1 {
			r.Reply(syscall.ENOENT)
			return
		}
		r.ReplyEntry(&fuse.Entry{Node: 7, EntryTime: 90 * time.Second, AttrTime: time.Hour, Attr: fuse.Attr{Mode: syscall.S_IFREG | 0o644, Size: 4096}})
	}))
	k.send(fuse.OpLookup, 11, 1, []byte("value\x00"))
	r := k.reply(5 * time.Second)
	if r.unique != 11 || r.errno != 0 || len(r.payload) != 128 {
		t.Fatalf("reply %d errno %v with %d bytes; want 11, 0, 128", r.unique, r.errno, len(r.payload))
	}
	if node, ev, av, ino, mode := le.Uint64(r.payload), le.Uint64(r.payload[16:]), le.Uint64(r.payload[24:]), le.Uint64(r.payload[40:]), le.Uint32(r.payload[40+60:]); node != 7 || ev != 90 || av != 3600 || ino != 7 || mode != syscall.S_IFREG|0o644 {
		t.Errorf("entry: node %d, entry valid %d, attr valid %d, ino %d, mode %o", node, ev, av, ino, mode)
	}
	k.send(fuse.OpLookup, 12, 1, []byte("other\x00"))
	if r := k.reply(5 * time.Second); r.unique != 12 || r.errno != syscall.ENOENT {
		t.Errorf("lookup of another name: %d %v, want 12 ENOENT", r.unique, r.errno)
	}
	// A name without its NUL is malformed.
	k.send(fuse.OpLookup, 13, 1, []byte("value"))
	if r := k.reply(5 * time.Second); r.errno != syscall.ENOENT {
		t.Errorf("lookup of an unterminated name: %v, want the handler's ENOENT (Lookup failed)", r.errno)
	}
}

// A handler blocked on its request's context returns when the kernel
// interrupts the request; the interrupt is read by a reader added because
// the only one was busy. An interrupt for a request not (yet) known is
// answered EAGAIN, so the kernel sends it again.
func TestInterruptCancelsABlockedRequestReadByAnAddedReader(t *testing.T) {
	entered := make(chan struct{})
	k := start(t, 1, fuse.HandlerFunc(func(r *fuse.Request) {
		if r.Opcode != fuse.OpRead {
			r.Reply(syscall.ENOSYS)
			return
		}
		ctx := r.Context()
		close(entered)
		select {
		case <-ctx.Done():
			r.Reply(syscall.EINTR)
		case <-time.After(10 * time.Second):
			r.Reply(0)
		}
	}))
	k.send(fuse.OpInterrupt, 20, 0, u64(99))
	if r := k.reply(5 * time.Second); r.unique != 20 || r.errno != syscall.EAGAIN {
		t.Errorf("interrupt of an unknown request: %d %v, want 20 EAGAIN", r.unique, r.errno)
	}
	k.send(fuse.OpRead, 21, 5, readBody(1, 0, 4096))
	<-entered
	for deadline := time.Now().Add(5 * time.Second); k.c.Readers() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d readers 5s after the only one blocked; want another added", k.c.Readers())
		}
	}
	k.send(fuse.OpInterrupt, 22, 0, u64(21))
	if r := k.reply(5 * time.Second); r.unique != 21 || r.errno != syscall.EINTR {
		t.Errorf("interrupted read: %d %v, want 21 EINTR", r.unique, r.errno)
	}
	k.noReply(50 * time.Millisecond) // the interrupt itself takes no reply
}

// A detached request is answered later from another goroutine while the
// reader serves the next; Close waits for the detached reply.
func TestDetachedRequestRepliesLaterAndCloseWaitsForIt(t *testing.T) {
	release := make(chan struct{})
	k := start(t, 1, fuse.HandlerFunc(func(r *fuse.Request) {
		if r.Opcode == fuse.OpWrite {
			d := r.Detach()
			go func() {
				<-release
				w, err := d.Write()
				if err != nil {
					d.Reply(syscall.EINVAL)
					return
				}
				d.ReplyWrite(len(w.Data))
			}()
			return
		}
		r.Reply(0)
	}))
	wb := make([]byte, 40+3)
	le.PutUint32(wb[16:], 3)
	copy(wb[40:], "abc")
	k.send(fuse.OpWrite, 30, 5, wb)
	k.send(fuse.OpFlush, 31, 5, make([]byte, 24))
	if r := k.reply(5 * time.Second); r.unique != 31 {
		t.Fatalf("first reply is to %d; want the flush (31) while the write waits", r.unique)
	}
	close(release)
	if r := k.reply(5 * time.Second); r.unique != 30 || r.errno != 0 || le.Uint32(r.payload) != 3 {
		t.Errorf("detached write: %d %v %x, want 30, 0, 3 bytes", r.unique, r.errno, r.payload)
	}
}

// A handler that panics is answered EIO and the reader goes on.
func TestPanickingHandlerIsAnsweredEIO(t *testing.T) {
	k := start(t, 1, fuse.HandlerFunc(func(r *fuse.Request) {
		if r.Unique == 40 {
			panic("a bug")
		}
		r.Reply(0)
	}))
	k.send(fuse.OpGetattr, 40, 1, make([]byte, 16))
	if r := k.reply(5 * time.Second); r.unique != 40 || r.errno != syscall.EIO {
		t.Errorf("panicking handler: %d %v, want 40 EIO", r.unique, r.errno)
	}
	k.send(fuse.OpGetattr, 41, 1, make([]byte, 16))
	if r := k.reply(5 * time.Second); r.unique != 41 || r.errno != 0 {
		t.Errorf("after the panic: %d %v, want 41 answered", r.unique, r.errno)
	}
}

// A second reply to one request is misuse: it panics with a sentence and
// sends nothing.
func TestSecondReplyPanics(t *testing.T) {
	var got any
	k := start(t, 1, fuse.HandlerFunc(func(r *fuse.Request) {
		r.Reply(0)
		defer func() { got = recover() }()
		r.Reply(0)
	}))
	k.send(fuse.OpGetattr, 50, 1, make([]byte, 16))
	if r := k.reply(5 * time.Second); r.unique != 50 {
		t.Fatalf("reply to %d", r.unique)
	}
	k.noReply(50 * time.Millisecond)
	k.end()
	if s, _ := got.(string); s == "" {
		t.Errorf("a second reply did not panic with a message: %v", got)
	}
}

// FORGET and BATCH_FORGET reach the handler decoded and take no reply; a
// batch claiming more entries than it carries is refused.
func TestForgetsAreDecodedAndUnanswered(t *testing.T) {
	got := make(chan []fuse.Forget, 4)
	k := start(t, 1, fuse.HandlerFunc(func(r *fuse.Request) {
		got <- append([]fuse.Forget(nil), r.Forgets()...)
	}))
	k.send(fuse.OpForget, 60, 9, u64(3))
	batch := make([]byte, 8+32)
	le.PutUint32(batch, 2)
	copy(batch[8:], u64(4))
	copy(batch[16:], u64(1))
	copy(batch[24:], u64(5))
	copy(batch[32:], u64(2))
	k.send(fuse.OpBatchForget, 61, 0, batch)
	le.PutUint32(batch, 1000)
	k.send(fuse.OpBatchForget, 62, 0, batch)
	// Readers may deliver them in any order: compare as a set.
	want := map[string]bool{"[{9 3}]": true, "[{4 1} {5 2}]": true, "[]": true}
	for range len(want) {
		select {
		case f := <-got:
			key := fmt.Sprint(f)
			if !want[key] {
				t.Errorf("forgets decoded as %s; want one of %v, each once", key, want)
			}
			delete(want, key)
		case <-time.After(5 * time.Second):
			t.Fatalf("forgets %v did not reach the handler", want)
		}
	}
	k.noReply(50 * time.Millisecond)
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/x\134y`: `/x\y`, `/plain`: "/plain", `/bad\08`: `/bad\08`, `/end\04`: `/end\04`} {
		if got := fuse.UnescapeMountinfo(in); got != want {
			t.Errorf("UnescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// Notifications carry unique 0, their code in the error field, and their
// fields and name (NUL-terminated) as linux/fuse.h lays them out; a name
// that is empty or too long is refused with EINVAL and nothing is sent.
func TestNotificationsAreEncoded(t *testing.T) {
	k := start(t, 1, fuse.HandlerFunc(func(r *fuse.Request) { r.Reply(0) }))
	read := func(code int32, size int) []byte {
		t.Helper()
		r := k.reply(5 * time.Second)
		if r.unique != 0 || int32(-int32(r.errno)) != code || len(r.payload) != size {
			t.Fatalf("notification: unique %d, code %d, %d bytes; want 0, %d, %d", r.unique, -int32(r.errno), len(r.payload), code, size)
		}
		return r.payload
	}
	if err := k.c.NotifyPollWakeup(77); err != nil {
		t.Fatal(err)
	}
	if p := read(1, 8); le.Uint64(p) != 77 {
		t.Errorf("poll wakeup for %d, want 77", le.Uint64(p))
	}
	if err := k.c.InvalidateEntry(3, "value"); err != nil {
		t.Fatal(err)
	}
	if p := read(3, 16+6); le.Uint64(p) != 3 || le.Uint32(p[8:]) != 5 || string(p[16:]) != "value\x00" {
		t.Errorf("inval entry: %x", p)
	}
	if err := k.c.NotifyDelete(3, 9, "value"); err != nil {
		t.Fatal(err)
	}
	if p := read(6, 24+6); le.Uint64(p) != 3 || le.Uint64(p[8:]) != 9 || le.Uint32(p[16:]) != 5 || string(p[24:]) != "value\x00" {
		t.Errorf("delete: %x", p)
	}
	if err := k.c.InvalidateInode(5, 0, -1); err != nil {
		t.Fatal(err)
	}
	if p := read(2, 24); le.Uint64(p) != 5 || int64(le.Uint64(p[16:])) != -1 {
		t.Errorf("inval inode: %x", p)
	}
	if err := k.c.InvalidateEntry(3, ""); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("InvalidateEntry with no name: %v, want EINVAL", err)
	}
	if err := k.c.NotifyDelete(3, 9, string(make([]byte, 2000))); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("NotifyDelete with a 2000-byte name: %v, want EINVAL", err)
	}
	k.noReply(50 * time.Millisecond)
}
