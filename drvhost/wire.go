package drvhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"github.com/sever-dev/sever"
)

// The host protocol is a gRPC service whose messages are the Go structs
// below, encoded as JSON by a codec forced on both ends (grpc.ForceCodec,
// grpc.ForceServerCodec) — never registered globally, so a program that
// also speaks protobuf gRPC is not affected. gRPC does the framing, the
// streams, the deadlines and the connection; JSON only encodes fields.

// serviceName is the gRPC service every driver host serves.
const serviceName = "sever.drvhost.Host"

// jsonCodec is the codec forced on the host protocol's calls.
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                       { return "json" }

var _ encoding.Codec = jsonCodec{}

// wireErr is an error as it crosses the boundary: the errno it means and
// the host's message.
type wireErr struct {
	Errno int    `json:"errno"`
	Msg   string `json:"msg"`
}

func toWire(err error) *wireErr {
	if err == nil {
		return nil
	}
	e := sever.Errno(err)
	if e == 0 {
		e = syscall.EIO
	}
	return &wireErr{Errno: int(e), Msg: err.Error()}
}

// knownErrs are the sever errors a wire errno turns back into, so that
// errors.Is holds for the sever value as well as for the errno.
var knownErrs = []error{
	sever.ErrNoDevice, sever.ErrIO, sever.ErrBusy, sever.ErrInvalid, sever.ErrClosed,
	sever.ErrNotExist, sever.ErrExist, sever.ErrPermission, sever.ErrNotDir, sever.ErrIsDir,
	sever.ErrNameTooLong, sever.ErrTooLarge, sever.ErrNotSupported, sever.ErrWouldBlock,
	sever.ErrReadOnly, sever.ErrNotTTY,
}

// remoteError is an error the host returned: its message, unwrapping to
// the sever error (or bare errno) it means.
type remoteError struct {
	msg string
	err error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.err }

func (w *wireErr) err() error {
	if w == nil {
		return nil
	}
	no := syscall.Errno(w.Errno)
	for _, k := range knownErrs {
		if errors.Is(k, no) {
			return &remoteError{msg: "host: " + w.Msg, err: k}
		}
	}
	return &remoteError{msg: "host: " + w.Msg, err: no}
}

// Messages. Every reply carries Err, the host's error, if any.

type helloReq struct{}

type helloResp struct {
	Pid     int          `json:"pid"`
	Devices []deviceDesc `json:"devices"`
}

// deviceDesc is one device a host provides: the attribute tree to mirror
// (paths relative to its directory), its char devices and its calls.
type deviceDesc struct {
	Name  string     `json:"name"`
	Nodes []nodeDesc `json:"nodes"`
	Cdevs []string   `json:"cdevs"`
	Calls []string   `json:"calls"`
}

type nodeDesc struct {
	Path string `json:"path"` // relative: "temp1_input", "power/control"
	Dir  bool   `json:"dir"`
	Mode uint32 `json:"mode"`
}

type empty struct {
	Err *wireErr `json:"err,omitempty"`
}

type attrReq struct {
	Device string `json:"device"`
	Path   string `json:"path"`
	Data   []byte `json:"data,omitempty"`
}

type callReq struct {
	Device string `json:"device"`
	Method string `json:"method"`
	Arg    []byte `json:"arg,omitempty"`
}

type dataResp struct {
	Data []byte   `json:"data,omitempty"`
	N    int      `json:"n"`
	Err  *wireErr `json:"err,omitempty"`
}

type openReq struct {
	Cdev string `json:"cdev"`
	Flag int    `json:"flag"`
}

type fileReq struct {
	File uint64 `json:"file"`
	N    int    `json:"n,omitempty"`
	Cmd  uint32 `json:"cmd,omitempty"`
	Data []byte `json:"data,omitempty"`
}

type openResp struct {
	File uint64   `json:"file"`
	Err  *wireErr `json:"err,omitempty"`
}

type pollResp struct {
	Events uint32 `json:"events"`
}

// event is what the host's Watch stream carries: readiness of one open
// char device file (File, never 0, and Events), or — Gone set, File 0 —
// that the host removed the device of its own exports named Gone, which
// the machine then removes too.
type event struct {
	File   uint64 `json:"file"`
	Events uint32 `json:"events"`
	Gone   string `json:"gone,omitempty"`
}

// hostServer is what a host implements; serviceDesc routes gRPC calls to it.
type hostServer interface {
	hello(context.Context, *helloReq) (*helloResp, error)
	ping(context.Context, *empty) (*empty, error)
	readAttr(context.Context, *attrReq) (*dataResp, error)
	writeAttr(context.Context, *attrReq) (*empty, error)
	call(context.Context, *callReq) (*dataResp, error)
	open(context.Context, *openReq) (*openResp, error)
	read(context.Context, *fileReq) (*dataResp, error)
	write(context.Context, *fileReq) (*dataResp, error)
	ioctl(context.Context, *fileReq) (*dataResp, error)
	poll(context.Context, *fileReq) (*pollResp, error)
	close(context.Context, *fileReq) (*empty, error)
	watch(grpc.ServerStream) error
}

// unary builds a MethodDesc for a unary method of hostServer.
func unary[Req, Resp any](name string, fn func(hostServer, context.Context, *Req) (*Resp, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			req := new(Req)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := srv.(hostServer)
			if icpt == nil {
				return fn(h, ctx, req)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + serviceName + "/" + name}
			return icpt(ctx, req, info, func(ctx context.Context, r any) (any, error) { return fn(h, ctx, r.(*Req)) })
		},
	}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*hostServer)(nil),
	Methods: []grpc.MethodDesc{
		unary("Hello", hostServer.hello),
		unary("Ping", hostServer.ping),
		unary("ReadAttr", hostServer.readAttr),
		unary("WriteAttr", hostServer.writeAttr),
		unary("Call", hostServer.call),
		unary("Open", hostServer.open),
		unary("Read", hostServer.read),
		unary("Write", hostServer.write),
		unary("Ioctl", hostServer.ioctl),
		unary("Poll", hostServer.poll),
		unary("Close", hostServer.close),
	},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Watch",
		ServerStreams: true,
		Handler:       func(srv any, s grpc.ServerStream) error { return srv.(hostServer).watch(s) },
	}},
}

// method is the full gRPC name of one of the host's methods.
func method(name string) string { return fmt.Sprintf("/%s/%s", serviceName, name) }
