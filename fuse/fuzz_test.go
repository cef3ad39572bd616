package fuse

import (
	"bytes"
	"strings"
	"testing"
)

// request builds a message as the kernel would: header, then body.
func request(op Opcode, body []byte) []byte {
	msg := make([]byte, inHeaderSize+len(body))
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint32(msg[4:], uint32(op))
	le.PutUint64(msg[8:], 1)
	le.PutUint64(msg[16:], 1)
	copy(msg[inHeaderSize:], body)
	return msg
}

// FuzzRequest feeds arbitrary bytes to the header parser and every body
// decoder: none may panic, and what each accepts must lie within the
// message (a WRITE's data, a BATCH_FORGET's entries, a name without its
// NUL).
func FuzzRequest(f *testing.F) {
	f.Add(request(OpLookup, []byte("value\x00")))
	f.Add(request(OpInit, make([]byte, 64)))
	f.Add(request(OpOpen, make([]byte, 8)))
	f.Add(request(OpRead, make([]byte, 40)))
	w := make([]byte, 44)
	le.PutUint32(w[16:], 4)
	f.Add(request(OpWrite, w))
	f.Add(request(OpRelease, make([]byte, 24)))
	f.Add(request(OpForget, make([]byte, 8)))
	bf := make([]byte, 24)
	le.PutUint32(bf, 1)
	f.Add(request(OpBatchForget, bf))
	f.Add(request(OpInterrupt, make([]byte, 8)))
	f.Add(request(OpPoll, make([]byte, 24)))
	f.Add(request(OpSetattr, make([]byte, 88)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, body, err := parseHeader(b)
		if err != nil {
			return
		}
		if int(h.Len) != len(b) || len(body) > len(b)-inHeaderSize {
			t.Fatalf("accepted a header of length %d for %d bytes, body %d", h.Len, len(b), len(body))
		}
		if s, err := name(body); err == nil {
			if len(s) == 0 || strings.IndexByte(s, 0) >= 0 || !bytes.HasPrefix(body, append([]byte(s), 0)) {
				t.Fatalf("name %q from %x", s, body)
			}
		}
		// These must not panic; an error is their normal answer to junk.
		_, _ = parseInit(body)
		_, _ = parseOpen(body)
		if r, err := parseRead(body); err == nil && r.Offset < 0 {
			t.Fatalf("negative read offset %d accepted", r.Offset)
		}
		if w, err := parseWrite(body); err == nil {
			if w.Offset < 0 || len(w.Data) > len(body)-writeInSize {
				t.Fatalf("write of %d bytes at %d from a body of %d", len(w.Data), w.Offset, len(body))
			}
		}
		_, _ = parseRelease(body) // as parseInit
		_, _ = parseInterrupt(body)
		_, _ = parsePoll(body)
		_, _ = parseSetattr(body)
		if fs, err := parseForgets(OpForget, h.Node, body, nil); err == nil && (len(fs) != 1 || fs[0].Node != h.Node) {
			t.Fatalf("FORGET decoded as %v", fs)
		}
		if fs, err := parseForgets(OpBatchForget, h.Node, body, nil); err == nil && batchForgetIn+len(fs)*forgetOneSize > len(body) {
			t.Fatalf("%d forgets from a body of %d", len(fs), len(body))
		}
	})
}

// FuzzMountinfo feeds arbitrary text to the mountinfo parser: it must not
// panic, and every mount it reports is a FUSE mount on the directory
// asked about.
func FuzzMountinfo(f *testing.F) {
	f.Add("36 35 0:52 / /mnt/a\\040b rw,nosuid,nodev - fuse.sever sever rw,user_id=0\n", "/mnt/a b")
	f.Add("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n", "/")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, text, dir string) {
		for _, mp := range parseMountinfo([]byte(text), dir) {
			if mp.Dir != dir || (mp.Type != "fuse" && !strings.HasPrefix(mp.Type, "fuse.")) {
				t.Fatalf("reported %+v for %q", mp, dir)
			}
		}
		UnescapeMountinfo(text)
	})
}
