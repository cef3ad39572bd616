package drvhost

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// Policy is when a supervisor starts a host again after it ended.
type Policy int

const (
	// RestartNever leaves a host that ended stopped.
	RestartNever Policy = iota
	// RestartOnFailure restarts a host that died — killed, crashed, exited
	// with a non-zero status, hung past its health deadline, lost its
	// connection — after a backoff that doubles with each failure in a row.
	// A host that exited with status 0 stays stopped.
	RestartOnFailure
	// RestartAlways restarts a host however it ended, with the same backoff.
	RestartAlways
)

// String returns the policy's name: never, on-failure or always.
func (p Policy) String() string {
	switch p {
	case RestartNever:
		return "never"
	case RestartOnFailure:
		return "on-failure"
	case RestartAlways:
		return "always"
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

// State is a supervised host's state, as sys/hosts/<name>/state shows it:
//
//	running ──death──▶ restarting ──started──▶ running
//	   │                   │  (policy says no, or Stop)
//	   └──Stop, or death───┴──────────▶ stopped ──Restart──▶ running
type State int

const (
	StateStopped    State = iota // no process; no devices
	StateRunning                 // the process runs; its devices are registered
	StateRestarting              // the last process ended; a new one is on its way
)

// String returns the state's name in sys/hosts/<name>/state.
func (s State) String() string {
	switch s {
	case StateStopped:
		return "stopped"
	case StateRunning:
		return "running"
	case StateRestarting:
		return "restarting"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Config describes a supervised driver host.
type Config struct {
	// Name names the host: sys/hosts/<Name>/, /devices/host-<Name>. It
	// must be a valid file name.
	Name string
	// Command is the host process's argv; Command[0] is the executable.
	// The process serves the host protocol on the listener it finds on
	// file descriptor 3 (ListenerFromParent, Host.Serve).
	Command []string
	// Env is added to the process's environment (the supervisor's own).
	Env []string
	// Policy is the restart policy; Backoff (default 50ms) is the delay
	// before the first restart after a failure, doubled per failure in a
	// row up to MaxBackoff (default 5s).
	Policy              Policy
	Backoff, MaxBackoff time.Duration
	// HealthInterval (default 1s) is how often the host is pinged;
	// a ping not answered within HealthTimeout (default 2s) is a hung
	// host: it is killed and handled as dead. A crashed host is detected
	// by its connection breaking, at once, not by the ping.
	HealthInterval, HealthTimeout time.Duration
	// StartTimeout (default 10s) bounds a start: the process must answer
	// its first call within it.
	StartTimeout time.Duration
	// CdevPrefix is put before the names of the host's char devices on
	// the machine ("cp2112-" makes the host's gpiochip0 dev/cp2112-gpiochip0),
	// so they cannot take a name the machine's own devices will want.
	CdevPrefix string
	// Dial, instead of Command, names a host on another machine
	// ("10.0.0.2:7000") that serves the protocol itself (Host.Serve on a
	// TCP listener); TLS, if not nil, is the client's side of mutual TLS.
	// Such a host is not a process of ours: a "restart" reconnects, Kill
	// is refused, and its death is its connection's — the host closing it,
	// or the link going. A link that goes silently is found by the health
	// ping (HealthInterval + HealthTimeout) and by gRPC's keepalive, every
	// Keepalive (default and minimum: gRPC's 10s) with as long to answer.
	Dial      string
	TLS       *tls.Config
	Keepalive time.Duration
	// Output receives the process's stdout and stderr; nil discards them.
	Output io.Writer
}

// Supervisor runs one driver host: it spawns the process, registers what
// the process provides on the machine, watches the process, and when the
// process dies — kill -9, a panic, an exit, a missed health deadline —
// removes everything it provided through the one removal path
// (device.Unregister of /devices/host-<name>), as a surprise unplug: calls
// in flight into the host return ErrNoDevice at once, pollers of its char
// devices wake with EventErr|EventHup, open files stay shells, and the
// generation's owner is unloaded. Then it restarts the host per Config.Policy;
// the new process's devices are a new generation, reached only through new
// handles and new opens.
//
// A device the host removes while it lives on (see Export) is removed from
// the machine alone, through the same path: its calls in flight return
// ErrNoDevice, its files are severed, its provider revoked; Provider and
// Device no longer find it, and the host's other devices are untouched.
//
// Its controls are in the machine's sysfs under /hosts/<name>/: pid, state,
// restarts and generation (read), and restart (write 1).
//
// All its methods are safe for concurrent use. One goroutine, the loop,
// makes every state change; the methods ask it.
type Supervisor struct {
	core *device.Core
	cfg  Config
	dir  string // the sockets' directory

	ctl  chan ctlReq
	done chan struct{}

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced at every change
	state    State
	gen      *generation // the live generation, or nil
	gens     uint64
	restarts int
	lastErr  error

	node    *kernfs.Node
	started bool
}

type ctlReq struct {
	op    string // "restart", "stop"
	reply chan error
}

// New returns a supervisor for the host cfg describes on the machine core.
// Nothing runs until Start. It fails with an error wrapping sever.ErrInvalid
// for an empty Name or Command.
func New(core *device.Core, cfg Config) (*Supervisor, error) {
	if cfg.Name == "" || (len(cfg.Command) == 0) == (cfg.Dial == "") || filepath.Base(cfg.Name) != cfg.Name {
		return nil, &sever.ObjectError{Object: "drvhost " + cfg.Name, Err: fmt.Errorf("need a file name and either a command or an address: %w", sever.ErrInvalid)}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Backoff, 50*time.Millisecond)
	def(&cfg.MaxBackoff, 5*time.Second)
	def(&cfg.HealthInterval, time.Second)
	def(&cfg.HealthTimeout, 2*time.Second)
	def(&cfg.StartTimeout, 10*time.Second)
	def(&cfg.Keepalive, 10*time.Second)
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	return &Supervisor{core: core, cfg: cfg, ctl: make(chan ctlReq), done: make(chan struct{}), changed: make(chan struct{})}, nil
}

// Name returns the host's name.
func (s *Supervisor) Name() string { return s.cfg.Name }

// Start makes the host's sysfs directory and starts its first process,
// returning when the process's devices are registered, or the start's
// error (the host is then stopped; Restart tries again). Start must be
// called once; its supervisor's life ends with Stop.
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		panic("drvhost: Start called twice on host " + s.cfg.Name)
	}
	s.started = true
	s.mu.Unlock()
	dir, err := os.MkdirTemp("", "sever-host-"+s.cfg.Name+"-")
	if err != nil {
		return err
	}
	s.dir = dir
	if err := s.addNodes(); err != nil {
		close(s.done)
		return errors.Join(err, os.RemoveAll(dir))
	}
	err = s.spawn(ctx)
	go s.loop()
	return err
}

// Stop removes the host's devices (an orderly removal: calls in flight
// drain, up to ctx's end), ends its process and its sysfs directory, and
// stops supervising. A second Stop returns nil.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	var err error
	s.mu.Lock()
	node := s.node
	s.node = nil
	s.mu.Unlock()
	if node != nil {
		err = s.core.Sysfs().Remove(ctx, node)
	}
	reply := make(chan error, 1)
	select {
	case s.ctl <- ctlReq{op: "stop", reply: reply}:
		err = errors.Join(err, <-reply)
		<-s.done
	case <-s.done:
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

// Restart ends the running process, if any, with an orderly removal of its
// devices, and starts a new generation whatever the policy; it returns
// when the new one is running or failed to start. It is what writing 1 to
// sys/hosts/<name>/restart does.
func (s *Supervisor) Restart(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case s.ctl <- ctlReq{op: "restart", reply: reply}:
	case <-s.done:
		return &sever.ObjectError{Object: "host " + s.cfg.Name, Err: sever.ErrNoDevice}
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill sends SIGKILL to the host's process, as `kill -9` does, and returns
// its pid; the supervisor then sees the death as any other. It fails with
// an error wrapping sever.ErrNoDevice if no process runs.
func (s *Supervisor) Kill() (int, error) {
	return s.signal(syscall.SIGKILL)
}

func (s *Supervisor) signal(sig syscall.Signal) (int, error) {
	s.mu.Lock()
	g := s.gen
	s.mu.Unlock()
	if g == nil || g.proc == nil {
		return 0, &sever.ObjectError{Object: "host " + s.cfg.Name, Err: sever.ErrNoDevice}
	}
	if err := g.proc.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) { // it died, and was reaped, since
			return 0, &sever.ObjectError{Object: "host " + s.cfg.Name, Err: sever.ErrNoDevice}
		}
		return 0, &sever.ObjectError{Object: "host " + s.cfg.Name, Err: err}
	}
	return g.pid, nil
}

// Status is a snapshot of a supervised host.
type Status struct {
	State      State
	Pid        int    // 0 unless running
	Generation uint64 // of the running process, else of the last one
	Restarts   int    // processes started after the first
}

// Status returns the host's state now.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{State: s.state, Generation: s.gens, Restarts: s.restarts}
	if s.gen != nil && s.state == StateRunning {
		st.Pid = s.gen.pid
	}
	return st
}

// WaitRunning waits until the host runs a generation newer than after
// and returns it, or returns ctx's error. A host that is stopped is
// waited for too (a Restart may start it).
func (s *Supervisor) WaitRunning(ctx context.Context, after uint64) (uint64, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		if s.state == StateRunning && s.gens > after {
			g := s.gens
			s.mu.Unlock()
			return g, nil
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Provider returns the Service provider of the running generation's
// device name, or an error wrapping sever.ErrNoDevice if the host does not
// run or has no such device. Handles opened on it belong to that
// generation: after its death they are shells, and they never reach a
// later one.
func (s *Supervisor) Provider(name string) (*device.Provider[Service], error) {
	s.mu.Lock()
	g := s.gen
	s.mu.Unlock()
	if g != nil {
		g.mu.Lock()
		rd := g.devs[name]
		g.mu.Unlock()
		if rd != nil && rd.prov != nil {
			return rd.prov, nil
		}
	}
	return nil, &sever.ObjectError{Object: "host " + s.cfg.Name + " device " + name, Err: sever.ErrNoDevice}
}

// Owner returns the owner of the running generation's code — the module
// its devices, attributes and char devices belong to, unloaded when the
// generation ends — or nil if no generation runs.
func (s *Supervisor) Owner() *sever.Owner {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen == nil {
		return nil
	}
	return s.gen.owner
}

// Device returns the running generation's machine-side device name, or
// nil.
func (s *Supervisor) Device(name string) *device.Device {
	s.mu.Lock()
	g := s.gen
	s.mu.Unlock()
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if rd := g.devs[name]; rd != nil {
		return rd.dev
	}
	return nil
}

func (s *Supervisor) setState(st State) {
	s.mu.Lock()
	s.state = st
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// loop is the supervisor's one goroutine of state changes.
func (s *Supervisor) loop() {
	defer close(s.done)
	failures := 0
	for {
		s.mu.Lock()
		g := s.gen
		s.mu.Unlock()
		var dead chan struct{}
		if g != nil {
			dead = g.dead
		}
		select {
		case <-dead:
			lived := time.Since(g.started())
			// The state says at once that the host is gone; an on-failure
			// host that turns out to have exited cleanly is stopped below.
			if s.cfg.Policy == RestartNever {
				s.setState(StateStopped)
			} else {
				s.setState(StateRestarting)
			}
			s.teardown(g, false)
			if lived > s.cfg.MaxBackoff {
				failures = 0
			}
			if s.cfg.Policy == RestartNever || (s.cfg.Policy == RestartOnFailure && !g.failed()) {
				s.setState(StateStopped)
				continue
			}
			s.setState(StateRestarting)
			for {
				failures++
				if req, ok := s.backoff(failures); ok {
					if s.handle(req) {
						return
					}
					break
				}
				if s.spawn(context.Background()) == nil {
					break
				}
			}
		case req := <-s.ctl:
			if s.handle(req) {
				return
			}
		}
	}
}

// backoff waits before the failures-th restart in a row; a control
// request interrupts it and is returned.
func (s *Supervisor) backoff(failures int) (ctlReq, bool) {
	d := s.cfg.Backoff
	for i := 1; i < failures && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return ctlReq{}, false
	case req := <-s.ctl:
		return req, true
	}
}

// handle carries out a control request; it reports whether the loop ends.
func (s *Supervisor) handle(req ctlReq) bool {
	s.mu.Lock()
	g := s.gen
	s.mu.Unlock()
	if g != nil {
		s.teardown(g, true)
	}
	switch req.op {
	case "stop":
		s.setState(StateStopped)
		req.reply <- nil
		return true
	default: // restart
		err := s.spawn(context.Background())
		if err != nil {
			s.setState(StateStopped)
		}
		req.reply <- err
		return false
	}
}

// removeTimeout bounds a removal the loop runs; calls into a dead host
// end at once, so reaching it means a removal is stuck, which the
// machine's log records (check.SeverTimeout).
const removeTimeout = time.Minute

// teardown ends generation g through the one removal path. For a death
// (planned false) the generation's context is cancelled first, so calls in
// flight into the host return ErrNoDevice at once and the drain cannot wait
// for a process that will not answer. For a planned stop the calls in flight
// drain first (bounded by the health timeout), then the process is killed.
func (s *Supervisor) teardown(g *generation, planned bool) {
	if !planned {
		g.stop()
	} else {
		t := time.AfterFunc(s.cfg.HealthTimeout, g.stop)
		defer t.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
	defer cancel()
	// Neither error has anyone to go to, and neither is lost: a removal
	// or an unload that misses removeTimeout goes on in the background,
	// and the machine's checker reports what it was waiting for (a
	// SeverTimeout, a GoroutineLeft at quiesce).
	if g.root != nil {
		_ = g.root.Unregister(ctx)
	}
	g.stop()
	_ = g.owner.Unload(ctx, sever.UnloadForce)
	if !planned && !g.hung && g.proc != nil {
		// The connection may break a moment before the process is reaped:
		// give an exiting process the time to say how it ended.
		select {
		case <-g.exited:
		case <-time.After(s.cfg.HealthTimeout):
		}
	}
	g.end()
	s.mu.Lock()
	if s.gen == g {
		s.gen = nil
	}
	s.mu.Unlock()
}

// end kills and reaps g's process and closes its connection.
func (g *generation) end() {
	g.stop()
	if g.proc != nil {
		_ = g.proc.Kill() // fails only for a process that is gone already; reaped below either way
		<-g.exited
	}
	if g.conn != nil {
		_ = g.conn.Close() // fails only if closed already
	}
	g.wg.Wait()
	// The socket's file may be gone (a start that failed early); what is
	// left goes with the directory at Stop.
	_ = os.Remove(g.sock)
}

func (g *generation) started() time.Time { return g.t0 }

// spawn starts a new generation: the process, its connection, its
// devices. On failure everything it made is undone and the host is left
// stopped.
func (s *Supervisor) spawn(ctx context.Context) error {
	s.mu.Lock()
	s.gens++
	n := s.gens
	if n > 1 {
		s.restarts++
	}
	s.mu.Unlock()
	g := &generation{sup: s, n: n, exited: make(chan struct{}), dead: make(chan struct{}),
		devs: map[string]*remoteDevice{}, files: map[uint64]remoteFile{}, gone: map[string]bool{}, t0: time.Now()}
	g.ctx, g.stop = context.WithCancel(context.Background())
	g.owner = sever.NewOwner(fmt.Sprintf("host:%s#%d", s.cfg.Name, n), nil, s.core.Options()...)
	if err := g.start(ctx); err != nil {
		g.die("failed to start", false)
		s.teardown(g, false)
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		return &sever.ObjectError{Object: "host " + s.cfg.Name, Err: err}
	}
	s.mu.Lock()
	s.gen = g
	s.mu.Unlock()
	s.setState(StateRunning)
	return nil
}

// start runs the process (or, for a remote host, nothing) and registers
// what it provides.
func (g *generation) start(ctx context.Context) error {
	s := g.sup
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	target, creds := "", insecure.NewCredentials()
	if s.cfg.Dial != "" {
		close(g.exited) // no process of ours
		target = "passthrough:///" + s.cfg.Dial
		if s.cfg.TLS != nil {
			creds = credentials.NewTLS(s.cfg.TLS)
		}
	} else {
		if err := g.startProcess(); err != nil {
			return err
		}
		target = "unix://" + g.sock
	}
	return g.connect(ctx, target, creds)
}

// startProcess runs the host process with its listener as fd 3.
func (g *generation) startProcess() error {
	s := g.sup
	g.sock = filepath.Join(s.dir, fmt.Sprintf("gen%d.sock", g.n))
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: g.sock, Net: "unix"})
	if err != nil {
		return err
	}
	lis.SetUnlinkOnClose(false)
	lf, err := lis.File()
	if cerr := lis.Close(); err == nil && cerr != nil { // lf is a copy; the child gets it
		_ = lf.Close() // the listener's close error is the one to report
		err = cerr
	}
	if err != nil {
		return err
	}
	cmd := exec.Command(s.cfg.Command[0], s.cfg.Command[1:]...)
	cmd.Env = append(append(os.Environ(), s.cfg.Env...),
		"SEVER_HOST_NAME="+s.cfg.Name, "SEVER_HOST_GENERATION="+strconv.FormatUint(g.n, 10))
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Stdout, cmd.Stderr = s.cfg.Output, s.cfg.Output
	// The host dies with the machine's process even if nobody kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	_ = lf.Close() // the child has its copy (or none, on failure); ours is done either way
	if err != nil {
		close(g.exited)
		return err
	}
	g.proc, g.pid = cmd.Process, cmd.Process.Pid
	go func() {
		g.exitErr = cmd.Wait()
		close(g.exited)
		g.die(fmt.Sprintf("process %d ended: %v", g.pid, cmd.ProcessState), false)
	}()
	return nil
}

// connect dials the host, waits for its first answer, opens the Watch
// stream and registers what the host provides.
func (g *generation) connect(ctx context.Context, target string, creds credentials.TransportCredentials) error {
	s := g.sup
	var err error
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(jsonCodec{}))}
	if s.cfg.Dial != "" {
		// Across machines the link can go without the peer's kernel
		// closing anything: gRPC's keepalive pings find a partition.
		opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: s.cfg.Keepalive, Timeout: s.cfg.Keepalive, PermitWithoutStream: true}))
	}
	g.conn, err = grpc.NewClient(target, opts...)
	if err != nil {
		return err
	}
	// The first call waits for the process to serve.
	var hello helloResp
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	stopOnDeath := context.AfterFunc(g.ctx, hcancel)
	defer stopOnDeath()
	go func() {
		select {
		case <-g.dead:
			hcancel()
		case <-hctx.Done():
		}
	}()
	if err := g.conn.Invoke(hctx, method("Hello"), &helloReq{}, &hello, grpc.WaitForReady(true)); err != nil {
		return fmt.Errorf("host %s did not answer: %w (%w)", target, sever.ErrNoDevice, err)
	}
	if s.cfg.Dial != "" {
		g.pid = hello.Pid
	}
	st, err := g.conn.NewStream(g.ctx, &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true}, method("Watch"))
	if err != nil {
		return fmt.Errorf("host process %d: watch: %w", g.pid, sever.ErrNoDevice)
	}
	if err := st.SendMsg(&empty{}); err != nil {
		return fmt.Errorf("host process %d: watch: %w", g.pid, sever.ErrNoDevice)
	}
	// The stream's end, or its failure, is seen by watch's RecvMsg.
	_ = st.CloseSend()
	g.wg.Add(2)
	go g.watch(st)
	go g.ping()
	return g.register(ctx, hello.Devices)
}

// ping is the health check: only a host that is alive but does not
// answer — hung, stopped, deadlocked — is detected by it; a dead one is
// detected sooner by its connection breaking.
func (g *generation) ping() {
	defer g.wg.Done()
	s := g.sup
	t := time.NewTicker(s.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-g.dead:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(g.ctx, s.cfg.HealthTimeout)
		var r empty
		err := g.conn.Invoke(ctx, method("Ping"), &empty{}, &r)
		timedOut := ctx.Err() != nil
		cancel()
		if err != nil && g.ctx.Err() == nil {
			// A host that exited fails its ping too (its connection
			// breaks), often before cmd.Wait has returned: let the exit,
			// not the health check, say how it ended (an exit with status
			// 0 is no failure). A ping that timed out is a hang.
			if g.proc != nil && !timedOut {
				select {
				case <-g.exited:
					return
				case <-time.After(s.cfg.HealthTimeout):
				}
			}
			g.die(fmt.Sprintf("missed its health deadline (%v): %v", s.cfg.HealthTimeout, err), true)
			return
		}
	}
}
