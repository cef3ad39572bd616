package drvhost

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/kernfs"
)

// HostsDir is the sysfs directory the supervisors' controls are under.
const HostsDir = "/hosts"

// addNodes makes /hosts/<name>/ with the host's controls. The nodes are
// built-in code (no owner): they outlive every generation.
func (s *Supervisor) addNodes() error {
	t := s.core.Sysfs()
	hosts, err := t.Lookup(HostsDir)
	if err != nil {
		if hosts, err = t.AddDir(t.Root(), kernfs.Dir{Name: HostsDir[1:]}); errors.Is(err, sever.ErrExist) {
			hosts, err = t.Lookup(HostsDir)
		}
		if err != nil {
			return err
		}
	}
	dir, err := t.AddDir(hosts, kernfs.Dir{Name: s.cfg.Name, Hidden: true})
	if err != nil {
		return err
	}
	show := func(f func(Status) string) kernfs.ShowFunc {
		return func(_ *kernfs.Call, buf []byte) ([]byte, error) {
			return append(append(buf, f(s.Status())...), '\n'), nil
		}
	}
	attrs := []kernfs.Attr{
		{Name: "pid", Show: show(func(st Status) string { return fmt.Sprint(st.Pid) })},
		{Name: "state", Show: show(func(st Status) string { return st.State.String() })},
		{Name: "restarts", Show: show(func(st Status) string { return fmt.Sprint(st.Restarts) })},
		{Name: "generation", Show: show(func(st Status) string { return fmt.Sprint(st.Generation) })},
		{Name: "restart", Parse: kernfs.Int(1, 1), Store: func(c *kernfs.Call, _ any) error {
			// Not the writer's context, which a signal cancels: a restart
			// given up half-way would leave the host stopped.
			ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
			defer cancel()
			return s.Restart(ctx)
		}},
	}
	for _, a := range attrs {
		if _, err := t.AddAttr(dir, a); err != nil {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return errors.Join(err, t.Remove(rctx, dir))
		}
	}
	s.node = dir
	return t.Activate(dir)
}
