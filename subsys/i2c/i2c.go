// Package i2c is the I2C subsystem: an adapter carries transfers to the
// client devices on its bus; consumers hold a reference to an adapter and
// transfer through it.
//
// Seed 000's complaint (DESIGN.md, "Seed 000") was that removing an I2C adapter blocks in
// wait_for_completion until every user puts its reference, while the users
// are never told. Here the adapter's removal waits only for transfers in
// flight: a consumer's AdapterRef becomes a shell whose Transfer returns
// an error wrapping sever.ErrNoDevice, and its Put, whenever it comes,
// frees it.
package i2c

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
)

// Msg is one message of a transfer.
type Msg struct {
	Addr uint16
	Read bool
	Data []byte // written, or filled by a read
}

// Algorithm is the adapter driver's side (i2c_algorithm). Xfer is provider
// code: called on the consumer's goroutine, concurrently, only while the
// adapter is live; the adapter's removal waits for calls in flight and
// makes none after. It may block on the hardware, honoring ctx; on a
// surprise removal the hardware fails fast and Xfer must return its error.
type Algorithm interface {
	Xfer(ctx context.Context, msgs []Msg) (int, error)
}

type key struct{}

type registry struct {
	mu    sync.Mutex
	next  int
	byNr  map[int]*Adapter
	bus   *device.Bus
	class *device.Class
}

func reg(c *device.Core) *registry {
	return device.Local(c, key{}, func() *registry {
		bus, err := c.NewBus(device.BusConfig{Name: "i2c"})
		if err != nil {
			bus = c.Bus("i2c")
		}
		cl, err := c.NewClass("i2c-adapter", nil)
		if err != nil {
			cl = c.Class("i2c-adapter")
		}
		return &registry{byNr: make(map[int]*Adapter), bus: bus, class: cl}
	})
}

// Bus returns the machine's I2C bus, on which client drivers register.
func Bus(c *device.Core) *device.Bus { return reg(c).bus }

// Adapter is a registered I2C adapter: a child device ("i2c-N") of the
// device providing it.
type Adapter struct {
	dev  *device.Device
	nr   int
	prov *device.Provider[Algorithm]
}

// AddAdapter registers an adapter under parent (i2c_add_adapter). Called
// from parent's Probe, it belongs to that binding: it is removed —
// clients first — before the parent driver's Remove.
func AddAdapter(ctx context.Context, parent *device.Device, algo Algorithm) (*Adapter, error) {
	r := reg(parent.Core())
	r.mu.Lock()
	nr := r.next
	r.next++
	r.mu.Unlock()
	dev, err := parent.Core().Register(ctx, device.Config{Name: fmt.Sprintf("i2c-%d", nr), Parent: parent, Class: r.class})
	if err != nil {
		return nil, err
	}
	a := &Adapter{dev: dev, nr: nr}
	if a.prov, err = device.NewProvider(dev, "i2c", algo); err != nil {
		_ = dev.Unregister(ctx) // the error that matters is err
		return nil, err
	}
	r.mu.Lock()
	r.byNr[nr] = a
	r.mu.Unlock()
	forget := func() {
		r.mu.Lock()
		delete(r.byNr, nr)
		r.mu.Unlock()
	}
	if _, err := dev.AddResource("adapter number", forget); err != nil {
		// The adapter is being removed already: the removal path will not
		// free the number; free it here.
		forget()
		return nil, err
	}
	return a, nil
}

// Nr returns the adapter's number.
func (a *Adapter) Nr() int { return a.nr }

// Device returns the adapter's device.
func (a *Adapter) Device() *device.Device { return a.dev }

// Remove removes the adapter (i2c_del_adapter): its clients first, then
// it waits for transfers in flight — never for references to be put.
func (a *Adapter) Remove(ctx context.Context) error { return a.dev.Unregister(ctx) }

// Get returns a reference to the adapter for consumer (i2c_get_adapter).
// Once the adapter is being removed it returns an error wrapping
// sever.ErrNoDevice.
func (a *Adapter) Get(consumer string) (*AdapterRef, error) {
	h, err := a.prov.Open(consumer)
	if err != nil {
		return nil, err
	}
	return &AdapterRef{a: a, h: h}, nil
}

// GetAdapter finds adapter nr and returns a reference to it.
func GetAdapter(c *device.Core, nr int, consumer string) (*AdapterRef, error) {
	r := reg(c)
	r.mu.Lock()
	a := r.byNr[nr]
	r.mu.Unlock()
	if a == nil {
		return nil, &sever.ObjectError{Object: fmt.Sprintf("i2c: adapter %d", nr), Err: sever.ErrNoDevice}
	}
	return a.Get(consumer)
}

// Users returns the references not yet put, shells included.
func (a *Adapter) Users() int { return a.prov.Handles() }

// AdapterRef is a consumer's reference to an adapter: a shell once the
// adapter is gone.
type AdapterRef struct {
	a *Adapter
	h *device.Handle[Algorithm]
}

// Transfer runs msgs on the adapter (i2c_transfer) and returns how many
// completed. Once the adapter is gone it returns an error wrapping
// sever.ErrNoDevice without touching the adapter; after Put, one wrapping
// sever.ErrClosed.
func (r *AdapterRef) Transfer(ctx context.Context, msgs []Msg) (n int, err error) {
	err = r.h.Do(func(algo Algorithm) (err error) {
		n, err = algo.Xfer(ctx, msgs)
		return err
	})
	return n, err
}

// Adapter returns the adapter referenced.
func (r *AdapterRef) Adapter() *Adapter { return r.a }

// Put drops the reference (i2c_put_adapter). It never calls into the
// adapter and works the same after it is gone; a second Put returns an
// error wrapping sever.ErrClosed.
func (r *AdapterRef) Put() error { return r.h.Close() }

// Client is a device at one address on an adapter's bus.
type Client struct {
	// dev is set when Register returns, after the client driver's Probe
	// (which runs inside Register) may already have handed the client to
	// other goroutines: atomic, so they read nil or the device, never a race.
	dev  atomic.Pointer[device.Device]
	addr uint16
	ref  *AdapterRef
}

// NewClient registers a client device named name at addr on the adapter
// (i2c_new_client_device); client drivers on Bus bind to it by
// compatible. The client holds an adapter reference for its lifetime.
func (a *Adapter) NewClient(ctx context.Context, name, compatible string, addr uint16) (*Client, error) {
	ref, err := a.Get(name)
	if err != nil {
		return nil, err
	}
	cl := &Client{addr: addr, ref: ref}
	r := reg(a.dev.Core())
	dev, err := a.dev.Core().Register(ctx, device.Config{Name: name, Parent: a.dev, Bus: r.bus, Compatible: compatible, Data: cl,
		Release: func() { _ = ref.Put() }}) // the first Put of ref: it cannot fail
	if err != nil {
		_ = ref.Put() // the first Put of ref: it cannot fail
		return nil, err
	}
	cl.dev.Store(dev)
	return cl, nil
}

// ClientOf returns the client a device on the I2C bus represents, or nil.
func ClientOf(d *device.Device) *Client {
	cl, _ := d.Data().(*Client)
	return cl
}

// Device returns the client's device.
// It is nil until NewClient has returned: a client driver's Probe uses the
// device it was given (ClientOf maps it back to the client).
func (c *Client) Device() *device.Device { return c.dev.Load() }

// Addr returns the client's address.
func (c *Client) Addr() uint16 { return c.addr }

// Transfer runs msgs on the client's adapter; Addr of each message is set
// to the client's. Once the client or its adapter is removed it returns an
// error wrapping sever.ErrNoDevice.
func (c *Client) Transfer(ctx context.Context, msgs []Msg) (int, error) {
	for i := range msgs {
		msgs[i].Addr = c.addr
	}
	n, err := c.ref.Transfer(ctx, msgs)
	if errors.Is(err, sever.ErrClosed) { // the client's reference went with it
		err = &sever.ObjectError{Object: c.path(), Err: sever.ErrNoDevice}
	}
	return n, err
}

func (c *Client) path() string {
	if d := c.dev.Load(); d != nil {
		return d.Path()
	}
	return fmt.Sprintf("i2c client 0x%02x", c.addr)
}
