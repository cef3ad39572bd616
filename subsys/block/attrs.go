package block

import (
	"fmt"
	"strconv"

	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// groups returns the disk directory's attributes, as /sys/block/<disk>:
//
//	size                    capacity in 512-byte sectors (read-only; notified on SetCapacity)
//	ro                      1 if read-only, else 0 (read-only; write queue/read_only)
//	stat                    the seventeen I/O counters of Documentation/block/stat.rst
//	inflight                requests in flight: reads, writes
//	queue/logical_block_size
//	queue/physical_block_size
//	queue/hw_sector_size    the logical block size in bytes (read-only)
//	queue/nr_requests       the queue depth (read-only: a blockq depth is fixed)
//	queue/read_only         0 or 1, writable (kernfs.Bool: 0/1, y/n, on/off...)
//
// and the driver's attrs. Every callback only reads or writes the disk's
// atomics: none touches the driver, and none blocks.
func (d *Disk) groups(extra []Attr) []device.AttrGroup {
	num := func(name string, v func() int64) device.Attr {
		return device.Attr{Name: name, Show: func(c *kernfs.Call, dev *device.Device, buf []byte) ([]byte, error) {
			d.bind(dev)
			return append(strconv.AppendInt(buf, v(), 10), '\n'), nil
		}}
	}
	ro := func() int64 {
		if d.ro.Load() {
			return 1
		}
		return 0
	}
	lbs := func() int64 { return d.lbs }
	top := []device.Attr{
		num("size", d.capacity.Load),
		num("ro", ro),
		{Name: "stat", Show: func(c *kernfs.Call, dev *device.Device, buf []byte) ([]byte, error) {
			d.bind(dev)
			return appendStat(buf, d.Stat()), nil
		}},
		{Name: "inflight", Show: func(c *kernfs.Call, dev *device.Device, buf []byte) ([]byte, error) {
			d.bind(dev)
			st := d.Stat()
			return fmt.Appendf(buf, "%8d %8d\n", st.InFlightReads, st.InFlightWrites), nil
		}},
	}
	for _, a := range extra {
		da := device.Attr{Name: a.Name, Mode: a.Mode, Parse: a.Parse}
		if show := a.Show; show != nil {
			da.Show = func(c *kernfs.Call, dev *device.Device, buf []byte) ([]byte, error) {
				d.bind(dev)
				return show(c, d, buf)
			}
		}
		if store := a.Store; store != nil {
			da.Store = func(c *kernfs.Call, dev *device.Device, v any) error {
				d.bind(dev)
				return store(c, d, v)
			}
		}
		top = append(top, da)
	}
	readOnly := num("read_only", ro)
	readOnly.Parse = kernfs.Bool()
	readOnly.Store = func(c *kernfs.Call, dev *device.Device, v any) error {
		d.ro.Store(v.(bool))
		return nil
	}
	queue := []device.Attr{
		num("logical_block_size", lbs),
		num("physical_block_size", lbs),
		num("hw_sector_size", lbs),
		num("nr_requests", func() int64 { return int64(d.depth) }),
		readOnly,
	}
	return []device.AttrGroup{{Attrs: top}, {Name: "queue", Attrs: queue}}
}

// bind records the disk's device for callbacks that run before Register
// has returned it to AddDisk.
func (d *Disk) bind(dev *device.Device) {
	if d.dev.Load() == nil {
		d.dev.CompareAndSwap(nil, dev)
	}
}
