package fuse

import (
	"encoding/binary"
	"syscall"
)

// The protocol version this package speaks (linux/fuse.h 7.38). The kernel
// offers its own; the connection runs at the lower minor of the two.
const (
	protoMajor = 7
	protoMinor = 38
	// minMinor is the oldest minor accepted: 7.31 (Linux 5.2) has every
	// message and field this package uses.
	minMinor = 31
)

// Opcode is a request's operation (FUSE_LOOKUP, ...).
type Opcode uint32

// The opcodes sever serves; every other one is answered ENOSYS by the
// caller's handler (Request.Reply(syscall.ENOSYS)).
const (
	OpLookup      Opcode = 1
	OpForget      Opcode = 2
	OpGetattr     Opcode = 3
	OpSetattr     Opcode = 4
	OpReadlink    Opcode = 5
	OpOpen        Opcode = 14
	OpRead        Opcode = 15
	OpWrite       Opcode = 16
	OpStatfs      Opcode = 17
	OpRelease     Opcode = 18
	OpFsync       Opcode = 20
	OpFlush       Opcode = 25
	OpInit        Opcode = 26
	OpOpendir     Opcode = 27
	OpReaddir     Opcode = 28
	OpReleasedir  Opcode = 29
	OpFsyncdir    Opcode = 30
	OpAccess      Opcode = 34
	OpInterrupt   Opcode = 36
	OpDestroy     Opcode = 38
	OpPoll        Opcode = 40
	OpBatchForget Opcode = 42
)

var opNames = map[Opcode]string{
	OpLookup: "LOOKUP", OpForget: "FORGET", OpGetattr: "GETATTR", OpSetattr: "SETATTR",
	OpReadlink: "READLINK", OpOpen: "OPEN", OpRead: "READ", OpWrite: "WRITE",
	OpStatfs: "STATFS", OpRelease: "RELEASE", OpFsync: "FSYNC", OpFlush: "FLUSH",
	OpInit: "INIT", OpOpendir: "OPENDIR", OpReaddir: "READDIR", OpReleasedir: "RELEASEDIR",
	OpFsyncdir: "FSYNCDIR", OpAccess: "ACCESS", OpInterrupt: "INTERRUPT", OpDestroy: "DESTROY",
	OpPoll: "POLL", OpBatchForget: "BATCH_FORGET",
}

// String returns the opcode's name as linux/fuse.h spells it without
// FUSE_ ("LOOKUP"), or "opcode N" for one this package does not serve.
func (o Opcode) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return "opcode " + itoa(uint64(o))
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// Notification codes (enum fuse_notify_code).
const (
	notifyPoll       = 1
	notifyInvalInode = 2
	notifyInvalEntry = 3
	notifyDelete     = 6
)

// INIT flags (fuse_init_in/out.flags).
const (
	initAsyncRead     = 1 << 0
	initAtomicOTrunc  = 1 << 3
	initBigWrites     = 1 << 5
	initParallelDirop = 1 << 18
	initMaxPages      = 1 << 22
)

// Open reply flags (fuse_open_out.open_flags).
const (
	OpenDirectIO    uint32 = 1 << 0 // FOPEN_DIRECT_IO: every read and write reaches the server
	OpenNonSeekable uint32 = 1 << 2 // FOPEN_NONSEEKABLE: pread and pwrite fail with ESPIPE
	OpenNoFlush     uint32 = 1 << 5 // FOPEN_NOFLUSH: close(2) sends no FLUSH
)

// SETATTR valid bits (fuse_setattr_in.valid).
const (
	SetattrMode = 1 << 0
	SetattrUID  = 1 << 1
	SetattrGID  = 1 << 2
	SetattrSize = 1 << 3
)

const pollScheduleNotify = 1 // FUSE_POLL_SCHEDULE_NOTIFY

// Sizes of the fixed parts of messages.
const (
	inHeaderSize   = 40
	outHeaderSize  = 16
	attrSize       = 88
	entryOutSize   = 40 + attrSize
	attrOutSize    = 16 + attrSize
	initInSize     = 16 // major, minor, max_readahead, flags: all older kernels send
	initOutSize    = 64
	openInSize     = 8
	openOutSize    = 16
	readInSize     = 40
	writeInSize    = 40
	writeOutSize   = 8
	releaseInSize  = 24
	forgetInSize   = 8
	batchForgetIn  = 8
	forgetOneSize  = 16
	interruptIn    = 8
	pollInSize     = 24
	pollOutSize    = 8
	setattrInSize  = 88
	getattrInSize  = 16
	statfsOutSize  = 80
	direntHdrSize  = 24
	minReadBuffer  = 8192 // FUSE_MIN_READ_BUFFER
	maxNameLen     = 1024 // longer names are refused EINVAL (NAME_MAX is 255)
	pageSize       = 4096
	defaultMaxPage = 32 // 128 KiB requests
)

var le = binary.LittleEndian

// Header is the fixed part of every request (struct fuse_in_header).
type Header struct {
	Len    uint32
	Opcode Opcode
	Unique uint64 // the request's ID; 0 never names a request
	Node   uint64 // the inode the request is about (1 is the root)
	UID    uint32
	GID    uint32
	PID    uint32
}

// parseHeader decodes a request's header and checks that the message is
// as long as it says. It returns the body after the header.
func parseHeader(b []byte) (Header, []byte, error) {
	if len(b) < inHeaderSize {
		return Header{}, nil, syscall.EINVAL
	}
	h := Header{
		Len:    le.Uint32(b[0:]),
		Opcode: Opcode(le.Uint32(b[4:])),
		Unique: le.Uint64(b[8:]),
		Node:   le.Uint64(b[16:]),
		UID:    le.Uint32(b[24:]),
		GID:    le.Uint32(b[28:]),
		PID:    le.Uint32(b[32:]),
	}
	extlen := int(le.Uint16(b[36:])) * 8
	if int(h.Len) != len(b) || int(h.Len) < inHeaderSize+extlen {
		return h, nil, syscall.EINVAL
	}
	return h, b[inHeaderSize : int(h.Len)-extlen], nil
}

// name decodes a NUL-terminated name: the whole body of LOOKUP.
func name(b []byte) (string, error) {
	for i, c := range b {
		if c == 0 {
			if i == 0 || i > maxNameLen {
				return "", syscall.EINVAL
			}
			return string(b[:i]), nil
		}
	}
	return "", syscall.EINVAL
}

// InitIn is INIT's body: what the kernel offers.
type InitIn struct {
	Major, Minor, MaxReadahead, Flags uint32
}

func parseInit(b []byte) (InitIn, error) {
	if len(b) < initInSize {
		return InitIn{}, syscall.EINVAL
	}
	return InitIn{le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:])}, nil
}

// OpenIn is OPEN's and OPENDIR's body.
type OpenIn struct {
	Flags uint32 // the open(2) flags: O_ACCMODE, O_NONBLOCK, ...
}

func parseOpen(b []byte) (OpenIn, error) {
	if len(b) < openInSize {
		return OpenIn{}, syscall.EINVAL
	}
	return OpenIn{Flags: le.Uint32(b)}, nil
}

// ReadIn is READ's and READDIR's body.
type ReadIn struct {
	Handle uint64
	Offset int64
	Size   uint32
	Flags  uint32 // the file's open(2) flags now (O_NONBLOCK may have changed)
}

func parseRead(b []byte) (ReadIn, error) {
	if len(b) < readInSize {
		return ReadIn{}, syscall.EINVAL
	}
	r := ReadIn{Handle: le.Uint64(b), Offset: int64(le.Uint64(b[8:])), Size: le.Uint32(b[16:]), Flags: le.Uint32(b[32:])}
	if r.Offset < 0 {
		return ReadIn{}, syscall.EINVAL
	}
	return r, nil
}

// WriteIn is WRITE's body; Data aliases the request's buffer.
type WriteIn struct {
	Handle uint64
	Offset int64
	Flags  uint32
	Data   []byte
}

func parseWrite(b []byte) (WriteIn, error) {
	if len(b) < writeInSize {
		return WriteIn{}, syscall.EINVAL
	}
	w := WriteIn{Handle: le.Uint64(b), Offset: int64(le.Uint64(b[8:])), Flags: le.Uint32(b[32:])}
	size := le.Uint32(b[16:])
	if w.Offset < 0 || uint64(size) > uint64(len(b)-writeInSize) {
		return WriteIn{}, syscall.EINVAL
	}
	w.Data = b[writeInSize : writeInSize+int(size)]
	return w, nil
}

// ReleaseIn is RELEASE's and RELEASEDIR's body.
type ReleaseIn struct {
	Handle uint64
	Flags  uint32
}

func parseRelease(b []byte) (ReleaseIn, error) {
	if len(b) < releaseInSize {
		return ReleaseIn{}, syscall.EINVAL
	}
	return ReleaseIn{Handle: le.Uint64(b), Flags: le.Uint32(b[8:])}, nil
}

// Forget is one inode the kernel drops Lookups references to.
type Forget struct {
	Node    uint64
	Lookups uint64
}

// parseForgets decodes FORGET (for node) and BATCH_FORGET alike into dst.
func parseForgets(op Opcode, node uint64, b []byte, dst []Forget) ([]Forget, error) {
	if op == OpForget {
		if len(b) < forgetInSize {
			return dst, syscall.EINVAL
		}
		return append(dst, Forget{node, le.Uint64(b)}), nil
	}
	if len(b) < batchForgetIn {
		return dst, syscall.EINVAL
	}
	n := le.Uint32(b)
	b = b[batchForgetIn:]
	if uint64(n)*forgetOneSize > uint64(len(b)) {
		return dst, syscall.EINVAL
	}
	for i := 0; i < int(n); i++ {
		dst = append(dst, Forget{le.Uint64(b[i*forgetOneSize:]), le.Uint64(b[i*forgetOneSize+8:])})
	}
	return dst, nil
}

func parseInterrupt(b []byte) (uint64, error) {
	if len(b) < interruptIn {
		return 0, syscall.EINVAL
	}
	return le.Uint64(b), nil
}

// PollIn is POLL's body.
type PollIn struct {
	Handle uint64
	// Wakeup is the kernel's handle for NotifyPollWakeup; valid only if
	// WantsWakeup.
	Wakeup      uint64
	WantsWakeup bool
	Events      uint32 // the poll(2) events the caller waits for
}

func parsePoll(b []byte) (PollIn, error) {
	if len(b) < pollInSize {
		return PollIn{}, syscall.EINVAL
	}
	return PollIn{Handle: le.Uint64(b), Wakeup: le.Uint64(b[8:]), WantsWakeup: le.Uint32(b[16:])&pollScheduleNotify != 0, Events: le.Uint32(b[20:])}, nil
}

// SetattrIn is SETATTR's body: Valid says which fields are meant.
type SetattrIn struct {
	Valid uint32
	Size  uint64
	Mode  uint32
	UID   uint32
	GID   uint32
}

func parseSetattr(b []byte) (SetattrIn, error) {
	if len(b) < setattrInSize {
		return SetattrIn{}, syscall.EINVAL
	}
	return SetattrIn{Valid: le.Uint32(b), Size: le.Uint64(b[16:]), Mode: le.Uint32(b[68:]), UID: le.Uint32(b[76:]), GID: le.Uint32(b[80:])}, nil
}

// Attr is an inode's attributes (struct fuse_attr), as replied to LOOKUP,
// GETATTR and SETATTR.
type Attr struct {
	Ino   uint64
	Size  uint64
	Mode  uint32 // S_IFMT bits and permission bits, as in stat(2)
	Nlink uint32
	UID   uint32
	GID   uint32
}

func putAttr(b []byte, a *Attr) {
	le.PutUint64(b[0:], a.Ino)
	le.PutUint64(b[8:], a.Size)
	le.PutUint64(b[16:], (a.Size+511)/512)
	clear(b[24:60]) // times: the epoch
	le.PutUint32(b[60:], a.Mode)
	le.PutUint32(b[64:], max(a.Nlink, 1))
	le.PutUint32(b[68:], a.UID)
	le.PutUint32(b[72:], a.GID)
	le.PutUint32(b[76:], 0) // rdev
	le.PutUint32(b[80:], pageSize)
	le.PutUint32(b[84:], 0)
}

// Dirent types (the DT_ values of getdents).
const (
	DTDir  uint32 = 4
	DTReg  uint32 = 8
	DTLink uint32 = 10
)

// AppendDirent appends one READDIR entry to buf if it fits within size
// bytes in all and reports whether it did. off is the offset of the entry
// after this one (what the next READDIR passes back).
func AppendDirent(buf []byte, size int, ino uint64, off int64, typ uint32, name string) ([]byte, bool) {
	rec := (direntHdrSize + len(name) + 7) &^ 7
	if len(buf)+rec > size {
		return buf, false
	}
	var h [direntHdrSize]byte
	le.PutUint64(h[0:], ino)
	le.PutUint64(h[8:], uint64(off))
	le.PutUint32(h[16:], uint32(len(name)))
	le.PutUint32(h[20:], typ)
	buf = append(buf, h[:]...)
	buf = append(buf, name...)
	for i := direntHdrSize + len(name); i < rec; i++ {
		buf = append(buf, 0)
	}
	return buf, true
}
