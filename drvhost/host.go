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
	"github.com/sever-dev/sever/device"
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
//
// The export lives as long as its device in the host. When the host
// removes it — its own code unregisters it, its parent goes, the driver
// that made it unbinds — the host tells the machine on the Watch stream,
// and the machine removes its side of the device through its one removal
// path (see Supervisor); the host answers the export's calls with
// ErrNoDevice from then on. The host sees the removal:
//
//   - with Device set (the device Dir belongs to), as the device's removal
//     path begins: a severable of Device, run before the files registered
//     before Serve are severed (the removal path undoes a stage newest
//     first; a file or char device added after Serve — by a driver bound
//     later — is severed before it), reports it. So the machine hears of
//     the removal before any of those char device files hangs up in the host, and a
//     machine-side poller wakes only at the machine's sever, with
//     EventErr|EventHup and ErrNoDevice. If Device is bound to a driver
//     when Serve starts, the export lives as long as that binding: an
//     unbind (the mirrored unbind file, for one) removes it from the
//     machine too — the mirror does not model binding.
//   - without Device, when Dir leaves the host's tree, the last step of
//     the removal: until then the machine's side stays, and its char
//     device files, hung up in the host, poll EventErr.
//
// An export with neither lives as long as the host.
type Export struct {
	Name   string
	Dir    *kernfs.Node
	Device *device.Device
	Cdevs  []string
	Calls  map[string]CallFunc
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
	s := &server{h: h, files: map[uint64]*hostFile{}, events: make(chan event, 256), gone: make(chan struct{}),
		removed: map[string]bool{}, goneSig: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(ctx)
	defer s.cancel()
	// Watch the exports' directories before anyone can ask for them: a
	// device the host removes from now on is reported, and one removed
	// already is not offered.
	dirs := map[*kernfs.Node]string{}
	for _, e := range h.Exports {
		if e.Dir != nil {
			dirs[e.Dir] = e.Name
		}
	}
	if len(dirs) > 0 && h.Sysfs != nil {
		defer h.Sysfs.OnRemove(func(n *kernfs.Node) {
			s.nodeGone(n)
			if name, ok := dirs[n]; ok {
				s.exportGone(name)
			}
		})()
		for n, name := range dirs {
			if n.Removed() {
				s.exportGone(name)
			}
		}
	}
	for _, e := range h.Exports {
		if e.Device == nil {
			continue
		}
		name := e.Name
		remove, err := e.Device.AddSeverable("drvhost export "+name, device.StageFiles, func(context.Context) error {
			s.exportGone(name)
			return nil
		})
		if err != nil { // being removed already
			s.exportGone(name)
			continue
		}
		defer remove()
	}
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

	// removed are the exports whose device the host removed (see Export);
	// goneq those of them not yet sent on the Watch stream, and goneSig
	// says there are.
	removed map[string]bool
	goneq   []string
	goneSig chan struct{}
	// inAttr are the cancels of the attribute calls in flight, by node:
	// a node leaving the tree ends its calls (see attrCall).
	inAttr map[*kernfs.Node]map[*context.CancelFunc]struct{}
}

// nodeGone ends the attribute calls in flight in n, which is leaving the
// host's tree. The host's removal of a device waits for its attributes'
// calls, and a call the machine made may wait in its Show for the machine
// to give up, which, for an export without Device (or an attribute its
// driver's unbind takes), is told of the removal only when the directory
// goes — after that wait: without this, a blocking Show would hold both.
func (s *server) nodeGone(n *kernfs.Node) {
	s.mu.Lock()
	calls := s.inAttr[n]
	delete(s.inAttr, n)
	s.mu.Unlock()
	for c := range calls {
		(*c)()
	}
}

// attrCall opens the attribute at path p for one call from the machine
// and returns it with the call's context, which ends with ctx or when the
// node leaves the tree; done must be called when the call is over. An
// attribute that is gone, or going, is ErrNoDevice: the machine mirrored
// it, so its device is being removed.
func (s *server) attrCall(ctx context.Context, p string, flag int) (*kernfs.File, context.Context, func(), error) {
	gone := func(err error) error {
		if errors.Is(err, sever.ErrNotExist) {
			return &sever.ObjectError{Object: "host attribute " + p, Err: sever.ErrNoDevice}
		}
		return err
	}
	n, err := s.h.Sysfs.Lookup(p)
	if err != nil {
		return nil, nil, nil, gone(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	if s.inAttr == nil {
		s.inAttr = map[*kernfs.Node]map[*context.CancelFunc]struct{}{}
	}
	if s.inAttr[n] == nil {
		s.inAttr[n] = map[*context.CancelFunc]struct{}{}
	}
	s.inAttr[n][&cancel] = struct{}{}
	s.mu.Unlock()
	done := func() {
		s.mu.Lock()
		delete(s.inAttr[n], &cancel)
		if len(s.inAttr[n]) == 0 {
			delete(s.inAttr, n)
		}
		s.mu.Unlock()
		cancel()
	}
	// Registered before this check: a removal that claims n from now on
	// cancels cctx; one that claimed it before is seen here.
	if n.Removed() {
		done()
		return nil, nil, nil, gone(sever.ErrNotExist)
	}
	f, err := s.h.Sysfs.OpenNode(n, flag)
	if err != nil {
		done()
		return nil, nil, nil, gone(err)
	}
	return f, cctx, done, nil
}

// exportGone records that the export name's device left the host and
// wakes the watcher to tell the machine. It runs on the removing
// goroutine, in the host tree's OnRemove hook or a severable of the
// export's Device: it does not block.
func (s *server) exportGone(name string) {
	s.mu.Lock()
	if s.removed[name] {
		s.mu.Unlock()
		return
	}
	s.removed[name] = true
	s.goneq = append(s.goneq, name)
	s.mu.Unlock()
	select {
	case s.goneSig <- struct{}{}:
	default:
	}
}

// takeGone returns the removals not yet sent and forgets them.
func (s *server) takeGone() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.goneq
	s.goneq = nil
	return q
}

func (s *server) isRemoved(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removed[name]
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
	if s.isRemoved(name) {
		return nil, &sever.ObjectError{Object: "host device " + name, Err: sever.ErrNoDevice}
	}
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
		if s.isRemoved(e.Name) {
			continue // gone before the machine asked
		}
		d := deviceDesc{Name: e.Name, Cdevs: e.Cdevs}
		for m := range e.Calls {
			d.Calls = append(d.Calls, m)
		}
		if e.Dir != nil {
			var err error
			if d.Nodes, err = s.walk(e.Dir, ""); err != nil {
				if e.Dir.Removed() {
					continue // removed while listed: not offered
				}
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
	f, cctx, done, err := s.attrCall(ctx, p, os.O_RDONLY)
	if err != nil {
		return &dataResp{Err: toWire(err)}, nil
	}
	defer done()
	buf := make([]byte, kernfs.PageSize)
	n, err := f.ReadAtContext(cctx, buf, 0)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err != nil && cctx.Err() != nil && ctx.Err() == nil {
		err = &sever.ObjectError{Object: "host attribute " + p, Err: sever.ErrNoDevice}
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
	f, cctx, done, err := s.attrCall(ctx, p, os.O_WRONLY)
	if err != nil {
		return &empty{Err: toWire(err)}, nil
	}
	defer done()
	_, err = f.WriteAtContext(cctx, r.Data, 0)
	if err != nil && cctx.Err() != nil && ctx.Err() == nil {
		err = &sever.ObjectError{Object: "host attribute " + p, Err: sever.ErrNoDevice}
	}
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
	if s.isRemoved(e.Name) {
		return &openResp{Err: toWire(&sever.ObjectError{Object: "/dev/" + r.Cdev, Err: sever.ErrNoDevice})}, nil
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
// carries readiness events and the removals of exported devices, and its
// end — the supervisor's connection gone — ends Serve. Only one watcher is
// served.
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
	// Removals made before this watcher came are sent first (the machine
	// ignores a device it never registered).
	select {
	case s.goneSig <- struct{}{}:
	default:
	}
	for {
		select {
		case ev := <-s.events:
			// A removal reported before this event happened comes first:
			// the machine then takes the hang-up of the removed device's
			// files for the removal it is (see Export).
			for _, name := range s.takeGone() {
				if err := st.SendMsg(&event{Gone: name}); err != nil {
					return err
				}
			}
			if err := st.SendMsg(&ev); err != nil {
				return err
			}
		case <-s.goneSig:
			for _, name := range s.takeGone() {
				if err := st.SendMsg(&event{Gone: name}); err != nil {
					return err
				}
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
