package drvhost

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/kernfs"
)

// CallFunc is one named call a hosted device offers its consumers (see
// Service). It runs in the host process, on a gRPC goroutine of the call,
// any number of times and concurrently; ctx ends when the consumer gives up
// or the machine's side of the host goes away. It may block, honoring ctx.
type CallFunc func(ctx context.Context, arg []byte) ([]byte, error)

// Export is one device a host provides to the machine: the attribute tree
// under Dir in the host's own sysfs, mirrored into the machine's device
// directory (directories and text attributes; binary attributes and
// symlinks stay in the host); the char devices named Cdevs in the host's
// dev/, registered on the machine under the same names; and Calls, reached
// by consumers through the device's Service provider.
type Export struct {
	Name  string
	Dir   *kernfs.Node
	Cdevs []string
	Calls map[string]CallFunc
}

// Host is the host process's side: what it serves and where from. Its
// devices are ordinary sever devices of a machine living in the host
// process; the machine that supervises the host sees them through the
// protocol.
type Host struct {
	Sysfs   *kernfs.Tree      // the host machine's tree Exports' Dirs are in
	Dev     *chardev.Registry // the host machine's dev/, for Cdevs
	Exports []Export
	// TLS, if not nil, is the server's side of mutual TLS, for a host
	// another machine dials over TCP (Config.Dial). It should require and
	// verify client certificates (tls.RequireAndVerifyClientCert): a
	// client without a valid one is refused before any call.
	TLS *tls.Config
	// Health, if not nil, is the host's own answer to the supervisor's
	// ping: an error, or not returning within the supervisor's
	// HealthTimeout, makes the supervisor treat the host as hung. Without
	// it a ping proves only that the process serves gRPC — a driver
	// deadlocked in the host is not seen. It runs on a gRPC goroutine, once
	// per ping; ctx ends at the ping's deadline.
	Health func(ctx context.Context) error
	// Persist keeps Serve serving after its supervisor's connection goes,
	// for the supervisor's next connection: a host on another machine
	// outlives the links to it. Without it, Serve ends with the first
	// supervisor's connection, as a child process should.
	Persist bool
}

// ListenerFromParent returns the listener a supervisor handed to the host
// process it started (file descriptor 3).
func ListenerFromParent() (net.Listener, error) {
	f := os.NewFile(3, "drvhost-listener")
	if f == nil {
		return nil, fmt.Errorf("drvhost: no listener on fd 3: %w", sever.ErrInvalid)
	}
	lis, err := net.FileListener(f) // a copy of the descriptor: ours is closed either way
	if cerr := f.Close(); cerr != nil && err == nil {
		_ = lis.Close() // the close error of fd 3 is the one to report
		return nil, fmt.Errorf("drvhost: listener on fd 3: %w", cerr)
	}
	return lis, err
}

// Serve serves h on lis until ctx ends or — unless h.Persist — the
// supervisor's connection goes, then stops serving and closes every file
// it opened for the machine. It returns nil when ctx ended, io.EOF when
// the supervisor went away, and the listener's error if it failed.
func (h *Host) Serve(ctx context.Context, lis net.Listener) error {
	s := &server{h: h, files: map[uint64]*hostFile{}, events: make(chan event, 256), gone: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(ctx)
	defer s.cancel()
	opts := []grpc.ServerOption{grpc.ForceServerCodec(jsonCodec{}),
		// The supervisor's keepalive pings are how it finds a partition.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 50 * time.Millisecond, PermitWithoutStream: true})}
	if h.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(h.TLS)))
	}
	if h.Persist {
		// A supervisor cut off by a partition must not hold the host's one
		// Watch stream until TCP gives up: the host's own keepalive drops
		// a silent connection within a few seconds.
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Second, Timeout: 2 * time.Second}))
	}
	gs := grpc.NewServer(opts...)
	gs.RegisterService(&serviceDesc, s)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	var err error
	select {
	case <-s.ctx.Done():
	case <-s.gone:
		err = io.EOF
	case err = <-errc:
	}
	s.cancel()
	gs.Stop()
	if e := <-errc; err == nil && !errors.Is(e, grpc.ErrServerStopped) {
		err = e
	}
	s.closeAll()
	return err
}

// server is one Serve's state.
type server struct {
	h      *Host
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	next    uint64
	files   map[uint64]*hostFile
	events  chan event
	gone    chan struct{} // closed when the watcher's stream ends
	watched bool
	wg      sync.WaitGroup
}

// hostFile is a char device file the host opened for the machine, and the
// goroutine that reports its readiness: it waits for the file to become
// readable, reports it once on the Watch stream, and waits again only
// after the machine's next read or poll (rearm), so a readable file that
// nobody reads costs one event, not a stream of them.
type hostFile struct {
	f     *chardev.File
	rearm chan struct{}
}

func (s *server) export(name string) (*Export, error) {
	for i := range s.h.Exports {
		if s.h.Exports[i].Name == name {
			return &s.h.Exports[i], nil
		}
	}
	return nil, &sever.ObjectError{Object: "host device " + name, Err: sever.ErrNotExist}
}

func (s *server) hello(ctx context.Context, _ *helloReq) (*helloResp, error) {
	r := &helloResp{Pid: os.Getpid()}
	for _, e := range s.h.Exports {
		d := deviceDesc{Name: e.Name, Cdevs: e.Cdevs}
		for m := range e.Calls {
			d.Calls = append(d.Calls, m)
		}
		if e.Dir != nil {
			var err error
			if d.Nodes, err = s.walk(e.Dir, ""); err != nil {
				return nil, err
			}
		}
		r.Devices = append(r.Devices, d)
	}
	return r, nil
}

// walk lists the directories and text attributes under dir.
func (s *server) walk(dir *kernfs.Node, rel string) ([]nodeDesc, error) {
	ents, err := s.h.Sysfs.Readdir(dir)
	if err != nil {
		return nil, err
	}
	var out []nodeDesc
	for _, e := range ents {
		p := path.Join(rel, e.Name)
		switch e.Kind {
		case kernfs.KindDir:
			out = append(out, nodeDesc{Path: p, Dir: true, Mode: uint32(e.Mode.Perm())})
			sub, err := s.walk(e.Node, p)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		case kernfs.KindAttr:
			out = append(out, nodeDesc{Path: p, Mode: uint32(e.Mode.Perm())})
		}
	}
	return out, nil
}

func (s *server) ping(ctx context.Context, _ *empty) (*empty, error) {
	if s.h.Health != nil {
		if err := s.h.Health(ctx); err != nil {
			return nil, err
		}
	}
	return &empty{}, nil
}

func (s *server) attrPath(dev, rel string) (string, error) {
	e, err := s.export(dev)
	if err != nil {
		return "", err
	}
	if e.Dir == nil || rel == "" || path.Clean(rel) != rel || path.IsAbs(rel) || rel == ".." || len(rel) > 2 && rel[:3] == "../" {
		return "", &sever.ObjectError{Object: "host device " + dev + " attribute " + rel, Err: sever.ErrInvalid}
	}
	return e.Dir.Path() + "/" + rel, nil
}

func (s *server) readAttr(ctx context.Context, r *attrReq) (*dataResp, error) {
	p, err := s.attrPath(r.Device, r.Path)
	if err != nil {
		return &dataResp{Err: toWire(err)}, nil
	}
	f, err := s.h.Sysfs.Open(p, os.O_RDONLY)
	if err != nil {
		return &dataResp{Err: toWire(err)}, nil
	}
	buf := make([]byte, kernfs.PageSize)
	n, err := f.ReadAtContext(ctx, buf, 0)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return &dataResp{Err: toWire(err)}, nil
	}
	return &dataResp{Data: buf[:n], N: n}, nil
}

func (s *server) writeAttr(ctx context.Context, r *attrReq) (*empty, error) {
	p, err := s.attrPath(r.Device, r.Path)
	if err != nil {
		return &empty{Err: toWire(err)}, nil
	}
	f, err := s.h.Sysfs.Open(p, os.O_WRONLY)
	if err != nil {
		return &empty{Err: toWire(err)}, nil
	}
	_, err = f.WriteAtContext(ctx, r.Data, 0)
	return &empty{Err: toWire(errors.Join(err, f.Close()))}, nil
}

func (s *server) call(ctx context.Context, r *callReq) (*dataResp, error) {
	e, err := s.export(r.Device)
	if err != nil {
		return &dataResp{Err: toWire(err)}, nil
	}
	fn := e.Calls[r.Method]
	if fn == nil {
		return &dataResp{Err: toWire(&sever.ObjectError{Object: r.Device + " call " + r.Method, Err: sever.ErrNotSupported})}, nil
	}
	out, err := fn(ctx, r.Arg)
	return &dataResp{Data: out, N: len(out), Err: toWire(err)}, nil
}

func (s *server) open(ctx context.Context, r *openReq) (*openResp, error) {
	e := s.exportOfCdev(r.Cdev)
	if e == nil {
		return &openResp{Err: toWire(&sever.ObjectError{Object: "/dev/" + r.Cdev, Err: sever.ErrNotExist})}, nil
	}
	f, err := s.h.Dev.Open(r.Cdev, r.Flag|syscall.O_NONBLOCK)
	if err != nil {
		return &openResp{Err: toWire(err)}, nil
	}
	hf := &hostFile{f: f, rearm: make(chan struct{}, 1)}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		// Never handed out: the open is refused with ENODEV, and the
		// file's Close can fail only if it was closed already.
		_ = f.Close()
		return &openResp{Err: toWire(sever.ErrNoDevice)}, nil
	}
	s.next++
	id := s.next
	s.files[id] = hf
	s.wg.Add(1)
	s.mu.Unlock()
	go s.report(id, hf)
	return &openResp{File: id}, nil
}

func (s *server) exportOfCdev(name string) *Export {
	for i := range s.h.Exports {
		for _, c := range s.h.Exports[i].Cdevs {
			if c == name {
				return &s.h.Exports[i]
			}
		}
	}
	return nil
}

// report is hostFile's readiness goroutine; it ends when the file is
// closed (Wait returns ErrClosed) or the server stops.
func (s *server) report(id uint64, hf *hostFile) {
	defer s.wg.Done()
	for {
		ev, err := hf.f.Wait(s.ctx, sever.EventIn|sever.EventPri)
		if err != nil && ev == 0 {
			return
		}
		select {
		case s.events <- event{File: id, Events: uint32(ev)}:
		case <-s.ctx.Done():
			return
		}
		if ev&(sever.EventErr|sever.EventHup) != 0 {
			return
		}
		select {
		case <-hf.rearm:
		case <-s.ctx.Done():
			return
		}
	}
}

func (s *server) file(id uint64) (*hostFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hf := s.files[id]
	if hf == nil {
		return nil, &sever.ObjectError{Object: fmt.Sprintf("host file %d", id), Err: sever.ErrClosed}
	}
	return hf, nil
}

func (hf *hostFile) rearmed() {
	select {
	case hf.rearm <- struct{}{}:
	default:
	}
}

func (s *server) read(ctx context.Context, r *fileReq) (*dataResp, error) {
	hf, err := s.file(r.File)
	if err != nil {
		return &dataResp{Err: toWire(err)}, nil
	}
	defer hf.rearmed()
	if r.N < 0 || r.N > 1<<20 {
		return &dataResp{Err: toWire(sever.ErrInvalid)}, nil
	}
	buf := make([]byte, r.N)
	n, err := hf.f.Read(buf)
	return &dataResp{Data: buf[:n], N: n, Err: toWire(err)}, nil
}

func (s *server) write(ctx context.Context, r *fileReq) (*dataResp, error) {
	hf, err := s.file(r.File)
	if err != nil {
		return &dataResp{Err: toWire(err)}, nil
	}
	defer hf.rearmed()
	n, err := hf.f.Write(r.Data)
	return &dataResp{N: n, Err: toWire(err)}, nil
}

func (s *server) ioctl(ctx context.Context, r *fileReq) (*dataResp, error) {
	hf, err := s.file(r.File)
	if err != nil {
		return &dataResp{Err: toWire(err)}, nil
	}
	defer hf.rearmed()
	arg := append([]byte(nil), r.Data...)
	n, err := hf.f.Ioctl(chardev.Cmd(r.Cmd), arg)
	return &dataResp{Data: arg, N: n, Err: toWire(err)}, nil
}

func (s *server) poll(ctx context.Context, r *fileReq) (*pollResp, error) {
	hf, err := s.file(r.File)
	if err != nil {
		return &pollResp{Events: uint32(sever.EventErr | sever.EventHup)}, nil
	}
	defer hf.rearmed()
	ev, _ := hf.f.Poll()
	return &pollResp{Events: uint32(ev)}, nil
}

func (s *server) close(ctx context.Context, r *fileReq) (*empty, error) {
	s.mu.Lock()
	hf := s.files[r.File]
	delete(s.files, r.File)
	s.mu.Unlock()
	if hf == nil {
		return &empty{Err: toWire(sever.ErrClosed)}, nil
	}
	return &empty{Err: toWire(hf.f.Close())}, nil
}

func (s *server) closeAll() {
	s.mu.Lock()
	files := s.files
	s.files = map[uint64]*hostFile{}
	s.mu.Unlock()
	for _, hf := range files {
		// The machine that opened it is gone or going: nobody is left to
		// be told, and a Close fails only on a file closed already.
		_ = hf.f.Close()
	}
	s.wg.Wait()
}

// watch is the stream the supervisor holds open for the host's life: it
// carries readiness events, and its end — the supervisor's connection
// gone — ends Serve. Only one watcher is served.
func (s *server) watch(st grpc.ServerStream) error {
	s.mu.Lock()
	if s.watched {
		s.mu.Unlock()
		return toStatus(sever.ErrBusy)
	}
	s.watched = true
	s.mu.Unlock()
	defer func() {
		if !s.h.Persist {
			close(s.gone)
			return
		}
		s.mu.Lock()
		s.watched = false
		s.mu.Unlock()
	}()
	for {
		select {
		case ev := <-s.events:
			if err := st.SendMsg(&ev); err != nil {
				return err
			}
		case <-st.Context().Done():
			return nil
		case <-s.ctx.Done():
			return nil
		}
	}
}

// toStatus turns a refusal of a stream into an error gRPC carries.
func toStatus(err error) error { return fmt.Errorf("drvhost: %w", err) }
